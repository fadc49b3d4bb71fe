"""A plain Hugging Face tokenizer directory for a model, written once: what clients and load
generators (transformers' AutoTokenizer, guidellm, aiperf, vLLM's bench) read as `--tokenizer DIR`.

The engine itself reads its tokenizer from wherever the model keeps it (for a GGUF file, the
conversion cache, next to the weights). Clients need a directory of tokenizer files only, whose
tokenizer_config.json names a tokenizer class and carries the chat template inline (older
transformers releases do not read chat_template.jinja).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from adaptive_sarathi.engine.loaders.gguf_convert import default_cache_dir
from adaptive_sarathi.engine.loaders.source import ModelLoadError, ModelSource

# Special-token keys transformers reads from tokenizer_config.json and special_tokens_map.json.
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
# Bump when the written layout changes, so an older export is not reused.
_EXPORT_VERSION = 1


def export_tokenizer(source: ModelSource, chat_template: str | None = None,
                     cache_dir: Path | None = None) -> Path:
    """The tokenizer directory of `source` (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json), written under `cache_dir`/tokenizers on the first call and reused
    after (keyed by the tokenizer files' content and `chat_template`, which replaces the model's
    own template when given). The directory is renamed into place whole, so a reader never sees
    a partial one. Raises ModelLoadError when the model has no tokenizer (dummy weights)."""
    if source.tokenizer_path is None:
        raise ModelLoadError(f"model '{source.name}' has no tokenizer (random weights carry none): pass a model "
                             "with tokenizer.json, or pass --tokenizer DIR")
    return export_tokenizer_dir(source.tokenizer_path, source.name, chat_template, cache_dir)


def export_tokenizer_dir(tokenizer_path: Path, name: str, chat_template: str | None = None,
                         cache_dir: Path | None = None) -> Path:
    """export_tokenizer for a directory holding tokenizer.json (and optionally
    tokenizer_config.json, chat_template.jinja); `name` labels the written directory."""
    tokenizer_file = tokenizer_path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelLoadError(f"'{tokenizer_path}' has no tokenizer.json: pass a Hugging Face tokenizer directory")
    config = _read_config(tokenizer_path)
    template_file = tokenizer_path / "chat_template.jinja"
    if chat_template is not None:
        config["chat_template"] = chat_template
    elif "chat_template" not in config and template_file.is_file():
        config["chat_template"] = template_file.read_text()
    # A fast tokenizer is what tokenizer.json is; without a class AutoTokenizer would look for
    # the model's config.json to guess one.
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    config_text = json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    digest = hashlib.sha256()
    digest.update(f"{_EXPORT_VERSION}\0".encode())
    digest.update(tokenizer_file.read_bytes())
    digest.update(config_text.encode())
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "tokenizer"
    target = (cache_dir or default_cache_dir()) / "tokenizers" / f"{safe_name}-{digest.hexdigest()[:16]}"
    if (target / "tokenizer_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from clients run as other users
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(config_text)
        special = {key: config[key] for key in _SPECIAL_KEYS if config.get(key) is not None}
        (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n")
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # else another process wrote the same export first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_config(tokenizer_path: Path) -> dict:
    config_file = tokenizer_path / "tokenizer_config.json"
    if not config_file.is_file():
        return {}
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read '{config_file}': {err}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"'{config_file}' does not hold a JSON object")
    return config
