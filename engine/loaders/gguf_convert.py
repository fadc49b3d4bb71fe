"""Convert a GGUF file once into a cached Hugging Face directory (float32 safetensors + tokenizer)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path

import gguf
import torch
from safetensors.torch import save_file

from adaptive_sarathi.engine.loaders.gguf_config import (
    SUPPORTED_ARCHITECTURES, config_from_gguf, gguf_architecture)
from adaptive_sarathi.engine.loaders.gguf_tokenizer import tokenizer_from_gguf
from adaptive_sarathi.engine.loaders.gguf_weights import iter_hf_tensors
from adaptive_sarathi.engine.loaders.source import ModelLoadError

logger = logging.getLogger(__name__)

CACHE_ENV = "ADAPTIVE_SARATHI_CACHE"
# Bump when the converted layout changes, so stale cache entries are not reused.
CONVERTER_VERSION = 1
_SHARD_BYTES = 2 << 30


def default_cache_dir() -> Path:
    """$ADAPTIVE_SARATHI_CACHE, else ~/.cache/adaptive_sarathi."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "adaptive_sarathi")


def converted_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the conversion of `gguf_path` lives: keyed by absolute path, size and mtime.

    The key needs only a stat, so a cache hit never opens the (large) file.
    """
    resolved = gguf_path.resolve()
    stat = resolved.stat()
    key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERTER_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / "gguf" / f"{resolved.stem}-{digest}"


def convert_gguf(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """The HF directory converted from `gguf_path`, converting it on the first call only.

    Writes config.json, generation_config.json, model*.safetensors (float32), tokenizer.json and
    tokenizer_config.json into a temporary directory next to the target and renames it into place,
    so an interrupted conversion never leaves a partial cache entry. Raises ModelLoadError naming
    the file when it is not a readable GGUF of a supported architecture.
    """
    target = converted_dir(gguf_path, cache_dir or default_cache_dir())
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    logger.info("converting %s once into %s", gguf_path, target)
    try:
        _write_converted(gguf_path, tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished the same conversion first; its result is equivalent.
            if not target.is_dir():
                raise
    except ModelLoadError as err:
        raise ModelLoadError(f"cannot load GGUF file '{gguf_path}': {err}") from err
    except (ValueError, KeyError, IndexError, struct.error, NotImplementedError) as err:
        raise ModelLoadError(
            f"'{gguf_path}' is not a readable GGUF model file ({type(err).__name__}: {err}); "
            "check that the download is complete") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_converted(gguf_path: Path, out: Path) -> None:
    reader = gguf.GGUFReader(gguf_path)
    arch = gguf_architecture(reader)
    config = config_from_gguf(reader, gguf_path.stem)
    tokenizer, tokenizer_config = tokenizer_from_gguf(reader)

    _write_json(out / "config.json", config.to_hf_dict())
    generation: dict[str, object] = {}
    if config.bos_token_id is not None:
        generation["bos_token_id"] = config.bos_token_id
    if config.eos_token_ids:
        generation["eos_token_id"] = list(config.eos_token_ids)
    _write_json(out / "generation_config.json", generation)
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config)

    _, permuted_qk = SUPPORTED_ARCHITECTURES[arch]
    shards: list[list[str]] = [[]]
    shard: dict[str, torch.Tensor] = {}
    shard_bytes = 0
    for tensor_name, values in iter_hf_tensors(reader, config, permuted_qk):
        if shard and shard_bytes + values.nbytes > _SHARD_BYTES:
            save_file(shard, str(out / f"shard-{len(shards)}.safetensors"))
            shards.append([])
            shard, shard_bytes = {}, 0
        shard[tensor_name] = torch.from_numpy(values)
        shards[-1].append(tensor_name)
        shard_bytes += values.nbytes
    save_file(shard, str(out / f"shard-{len(shards)}.safetensors"))
    _name_shards(out, shards)


def _name_shards(out: Path, shards: list[list[str]]) -> None:
    """Give the shards Hugging Face's file names (and an index when there are several)."""
    if len(shards) == 1:
        (out / "shard-1.safetensors").rename(out / "model.safetensors")
        return
    weight_map = {}
    for number, names in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        (out / f"shard-{number}.safetensors").rename(out / file)
        weight_map.update(dict.fromkeys(names, file))
    _write_json(out / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
