"""Model loaders: GGUF conversion checked against transformers' own GGUF loading, HF dirs, dummies, errors."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from adaptive_sarathi.engine.loaders import (
    DUMMY_PRESETS, ModelLoadError, iter_safetensors, resolve_model)
from adaptive_sarathi.engine.loaders import gguf_convert
from adaptive_sarathi.engine.loaders.default_model import default_gguf_path
from adaptive_sarathi.engine.loaders.gguf_config import config_from_gguf
from adaptive_sarathi.engine.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint  # noqa: E402


def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One path per test session, so the tokenizer tests reuse this conversion instead of redoing it.
    return tmp_path_factory.getbasetemp() / "adaptive_sarathi_cache"


@pytest.fixture(scope="session")
def default_source(tmp_path_factory):
    return resolve_model(None, shared_cache_dir(tmp_path_factory))


def transformers_gguf_model(path: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The model and state dict transformers builds from a GGUF file.

    from_pretrained(gguf_file=...) refuses to run without the accelerate package, so this takes the
    same two steps it takes: the config from the GGUF metadata, then load_gguf_checkpoint's tensors.
    """
    config = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(tensors, strict=False)
    return model.eval(), tensors


# Module scope: the transformers model (about 0.5 GB of float32 weights) is released after this file.
@pytest.fixture(scope="module")
def smollm2_from_transformers():
    return transformers_gguf_model(default_gguf_path())


@pytest.mark.embedded_model
@pytest.mark.slow
def test_default_weights_equal_transformers_gguf_loading(default_source, smollm2_from_transformers):
    _, reference = smollm2_from_transformers
    ours = dict(iter_safetensors(default_source.weights_path))
    assert sorted(ours) == sorted(reference)
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, reference[name]), name


@pytest.mark.embedded_model
def test_default_config_matches_smollm2_preset(default_source):
    config = default_source.config
    preset = DUMMY_PRESETS["smollm2-135m"]
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                  "head_dim", "max_position_embeddings", "rope_theta", "tie_word_embeddings",
                  "bos_token_id", "eos_token_ids", "architecture"):
        assert getattr(config, field) == getattr(preset, field), field
    assert config.rms_norm_eps == pytest.approx(1e-5)
    assert default_source.name == "SmolLM2-135M-Instruct"
    assert default_source.tokenizer_path == default_source.weights_path
    assert default_source.dummy_seed is None
    generation = json.loads((default_source.weights_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2]


@pytest.mark.embedded_model
@pytest.mark.slow
def test_converted_dir_gives_transformers_identical_logits(default_source, smollm2_from_transformers):
    reference, _ = smollm2_from_transformers
    ours = transformers.AutoModelForCausalLM.from_pretrained(str(default_source.weights_path), dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 28, 905, 314, 253, 1345, 30, 2]])
    with torch.no_grad():
        assert torch.equal(ours.eval()(ids).logits, reference(ids).logits)


@pytest.mark.embedded_model
def test_second_resolve_reuses_the_cache(default_source, tmp_path_factory):
    weights = default_source.weights_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = resolve_model("default", shared_cache_dir(tmp_path_factory))
    assert again == default_source
    assert weights.stat().st_mtime_ns == before
    assert [p.name for p in again.weights_path.parent.iterdir()] == [again.weights_path.name]


# A tiny Llama GGUF written here, with a SentencePiece vocabulary (as Llama 2 and Mistral files have).
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS = 32, 4, 2, 8, 48, 2
SPM_PIECES = ["\u2581the", "\u2581hello", "\u2581world", "\u2581and", "\u2581t", "he", "in", "\u2581in",
              "er", "ll", "lo", "llo", "\u2581he", "\u2581hel", "\u2581w", "or", "\u2581wor", "ld", "an",
              "\u2581an", "\u2581a"]
SPM_CHARS = list("\u2581abcdefghijklmnopqrstuvwxyzH,.!")


def llama_cpp_permute(weight: np.ndarray, groups: int) -> np.ndarray:
    # What llama.cpp's converter does to q_proj/k_proj rows: per head, the half-split rotary
    # layout [x..., y...] becomes interleaved pairs [x0, y0, x1, y1, ...].
    return weight.reshape(groups, 2, weight.shape[0] // groups // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_tiny_llama_gguf(path: Path) -> dict[str, np.ndarray]:
    """Write a 2-layer Llama GGUF; returns its weights under HF names, in HF layout."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES + SPM_CHARS
    types = [2, 3, 3] + [6] * 256 + [1] * (len(SPM_PIECES) + len(SPM_CHARS))
    scores = [0.0] * 259 + [-float(i) for i in range(len(SPM_PIECES))] + [-1000.0 - i for i in range(len(SPM_CHARS))]
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    hf = {"model.embed_tokens.weight": rand(len(tokens), HIDDEN), "model.norm.weight": rand(HIDDEN),
          "lm_head.weight": rand(len(tokens), HIDDEN)}
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_tensor("token_embd.weight", hf["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", hf["model.norm.weight"])
    writer.add_tensor("output.weight", hf["lm_head.weight"])
    parts = {"attn_q": ("self_attn.q_proj", (HEADS * HEAD_DIM, HIDDEN)),
             "attn_k": ("self_attn.k_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
             "attn_v": ("self_attn.v_proj", (KV_HEADS * HEAD_DIM, HIDDEN)),
             "attn_output": ("self_attn.o_proj", (HIDDEN, HEADS * HEAD_DIM)),
             "ffn_gate": ("mlp.gate_proj", (FFN, HIDDEN)), "ffn_up": ("mlp.up_proj", (FFN, HIDDEN)),
             "ffn_down": ("mlp.down_proj", (HIDDEN, FFN)),
             "attn_norm": ("input_layernorm", (HIDDEN,)), "ffn_norm": ("post_attention_layernorm", (HIDDEN,))}
    for layer in range(LAYERS):
        for part, (hf_part, shape) in parts.items():
            weight = rand(*shape)
            hf[f"model.layers.{layer}.{hf_part}.weight"] = weight
            stored = weight
            if part == "attn_q":
                stored = llama_cpp_permute(weight, HEADS)
            elif part == "attn_k":
                stored = llama_cpp_permute(weight, KV_HEADS)
            writer.add_tensor(f"blk.{layer}.{part}.weight", stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return path, write_tiny_llama_gguf(path)


def test_tiny_gguf_unpermutes_qk_to_hf_layout(tiny_gguf, tmp_path):
    path, hf = tiny_gguf
    source = resolve_model(str(path), tmp_path)
    ours = {name: tensor.numpy() for name, tensor in iter_safetensors(source.weights_path)}
    assert sorted(ours) == sorted(hf)
    for name, weight in hf.items():
        np.testing.assert_array_equal(ours[name], weight, err_msg=name)
    _, reference = transformers_gguf_model(path)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
    config = source.config
    assert (config.num_heads, config.num_kv_heads, config.head_dim, config.tie_word_embeddings) == (4, 2, 8, False)
    assert (config.rms_norm_eps, config.max_position_embeddings, source.name) == (1e-6, 256, "tiny-llama")


SPM_TEXTS = ["hello world", "Hello world and the other", "the thing, in the inner", "hello!  two  spaces",
             " leading space", "ÿ and 日本 fall back to bytes", "hello</s> <s> world", "line\nbreak", ""]


def test_tiny_gguf_sentencepiece_tokenizer_matches_transformers(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    ours = Tokenizer.from_dir(resolve_model(str(path), tmp_path).tokenizer_path)
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in SPM_TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids), text
    assert ours.encode("hello world")[0] == ours.bos_token_id == 1
    assert ours.eos_token_id == 2
    # transformers (like llama.cpp) prepends BOS even when the text, e.g. a rendered chat template,
    # already starts with one; a doubled BOS is outside what the model was trained on, so ours doesn't.
    assert reference.encode("<s>hello</s> world")[:2] == [1, 1]
    assert ours.encode("<s>hello</s> world") == reference.encode("<s>hello</s> world")[1:]


def test_interrupted_conversion_leaves_no_cache_entry(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf

    def crash(gguf_path: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_convert, "_write_converted", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(path), tmp_path)
    assert list((tmp_path / "gguf").iterdir()) == []
    monkeypatch.undo()
    assert (resolve_model(str(path), tmp_path).weights_path / "model.safetensors").is_file()


def test_large_models_are_written_in_indexed_shards(tiny_gguf, tmp_path, monkeypatch):
    path, hf = tiny_gguf
    monkeypatch.setattr(gguf_convert, "_SHARD_BYTES", 40_000)
    converted = resolve_model(str(path), tmp_path).weights_path
    shards = sorted(p.name for p in converted.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((converted / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(index) == sorted(hf) and set(index.values()) == set(shards)
    for name, tensor in iter_safetensors(converted):
        np.testing.assert_array_equal(tensor.numpy(), hf[name], err_msg=name)


def test_cache_dir_comes_from_the_environment(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    monkeypatch.setenv("ADAPTIVE_SARATHI_CACHE", str(tmp_path / "env-cache"))
    assert resolve_model(str(path)).weights_path.parent == tmp_path / "env-cache" / "gguf"


def test_llama3_rope_scaling_is_recovered_from_rope_freqs(tmp_path):
    head_dim, theta, factor = 64, 500000.0, 8.0
    inv_freq = theta ** (-np.arange(0, head_dim, 2) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    smooth = np.clip((8192 / wavelen - 1.0) / 3.0, 0.0, 1.0)
    rope_freqs = (1.0 / ((1.0 - smooth) / factor + smooth)).astype(np.float32)
    path = tmp_path / "rope.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    for add, value in ((writer.add_block_count, 1), (writer.add_context_length, 131072),
                       (writer.add_embedding_length, 128), (writer.add_feed_forward_length, 256),
                       (writer.add_head_count, 2), (writer.add_rope_freq_base, theta)):
        add(value)
    writer.add_tensor("token_embd.weight", np.zeros((16, 128), dtype=np.float32))
    writer.add_tensor("rope_freqs.weight", rope_freqs)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config = config_from_gguf(gguf.GGUFReader(path), "rope")
    assert config.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


@pytest.mark.embedded_model
def test_hf_directory_is_used_in_place(default_source):
    source = resolve_model(str(default_source.weights_path))
    assert source.weights_path == source.tokenizer_path == default_source.weights_path
    assert source.config.num_layers == 30 and source.dummy_seed is None


def test_dummy_presets_have_real_shapes():
    llama3 = resolve_model("dummy:llama-3-8b")
    assert llama3.weights_path is None and llama3.tokenizer_path is None and llama3.dummy_seed == 0
    assert llama3.name == llama3.config.name == "dummy:llama-3-8b"
    assert llama3.config.num_params == pytest.approx(8.03e9, rel=1e-3)
    assert llama3.config.rope_scaling["rope_type"] == "llama3"
    assert resolve_model("dummy:llama-2-7b").config.num_params == pytest.approx(6.74e9, rel=1e-3)
    assert resolve_model("dummy:mistral-7b").config.num_params == pytest.approx(7.24e9, rel=1e-3)
    qwen = resolve_model("dummy:qwen2-7b").config
    assert qwen.attention_bias and qwen.architecture == "Qwen2ForCausalLM"
    assert qwen.num_params == pytest.approx(7.62e9, rel=1e-3)
    assert resolve_model("dummy:smollm2-135m").config.num_params == pytest.approx(134.5e6, rel=1e-3)
    tiny = resolve_model("dummy:tiny").config
    assert (tiny.num_layers, tiny.hidden_size, tiny.num_heads, tiny.num_kv_heads, tiny.vocab_size) == (2, 64, 4, 2, 512)


@pytest.mark.parametrize("preset", sorted(DUMMY_PRESETS))
def test_dummy_presets_load_in_transformers_config(preset):
    ours = DUMMY_PRESETS[preset]
    config = transformers.AutoConfig.for_model(**ours.to_hf_dict())
    assert (config.num_hidden_layers, config.num_key_value_heads) == (ours.num_layers, ours.num_kv_heads)
    assert config.rope_parameters["rope_theta"] == ours.rope_theta
    assert config.rope_parameters["rope_type"] == (ours.rope_scaling or {}).get("rope_type", "default")


def test_missing_path_names_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match="not found") as err:
        resolve_model(str(missing))
    assert str(missing) in str(err.value) and "dummy:<arch>" in str(err.value) and "llama-3-8b" in str(err.value)


def test_directory_without_config_json(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_model(str(tmp_path))


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(DUMMY_PRESETS["tiny"].to_hf_dict()))
    with pytest.raises(ModelLoadError, match="safetensors"):
        resolve_model(str(tmp_path))


def test_unknown_dummy_arch_lists_known_ones():
    with pytest.raises(ModelLoadError, match="llama-3-8b.*tiny"):
        resolve_model("dummy:gpt-5")


def test_corrupt_gguf_names_the_file(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(ModelLoadError, match="broken.gguf"):
        resolve_model(str(path), tmp_path / "cache")
    assert not any((tmp_path / "cache" / "gguf").iterdir())


def test_unsupported_gguf_architecture(tmp_path):
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(path, "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="unsupported architecture 'mamba'"):
        resolve_model(str(path), tmp_path / "cache")
