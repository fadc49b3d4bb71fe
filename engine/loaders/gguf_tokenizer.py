"""A Hugging Face tokenizer.json and tokenizer_config.json from a GGUF file's tokenizer.ggml.* metadata."""

from __future__ import annotations

from typing import Any

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from adaptive_sarathi.engine.loaders.gguf_config import gguf_field
from adaptive_sarathi.engine.loaders.source import ModelLoadError

# llama.cpp token types (tokenizer.ggml.token_type).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> how byte-level BPE splits text into words before merging.
_GPT2_PRE = ("default", "gpt2", "gpt-2")
_DIGITS_THEN_GPT2_PRE = ("smollm", "starcoder", "refact")
_SPLIT_PRE = {
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT, "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Llama 3's vocabulary looks whole words up before merging, as its tokenizer.json does.
_IGNORE_MERGES_PRE = ("llama-bpe", "llama3", "llama-v3")


def tokenizer_from_gguf(reader: gguf.GGUFReader) -> tuple[Tokenizer, dict[str, Any]]:
    """The tokenizer the file describes and its tokenizer_config.json dict.

    Byte-level BPE (tokenizer.ggml.model "gpt2") and SentencePiece BPE ("llama") are supported.
    Raises ModelLoadError for other tokenizer models or unknown pre-tokenizers.
    """
    arch = gguf_field(reader, "general.architecture")
    kind = gguf_field(reader, "tokenizer.ggml.model")
    tokens: list[str] = gguf_field(reader, "tokenizer.ggml.tokens")
    token_types: list[int] = gguf_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(reader, tokens)
        add_bos_default = False
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(reader, tokens, token_types)
        # llama.cpp adds BOS for SentencePiece vocabularies unless the file says otherwise.
        add_bos_default = True
    else:
        raise ModelLoadError(f"unsupported tokenizer model '{kind}': byte-level BPE (gpt2) and "
                             "SentencePiece BPE (llama) are supported")
    tokenizer.add_special_tokens([
        AddedToken(token, special=True, normalized=False)
        for token, token_type in zip(tokens, token_types) if token_type in (_UNKNOWN, _CONTROL)])
    tokenizer.add_tokens([
        AddedToken(token, special=False, normalized=False)
        for token, token_type in zip(tokens, token_types) if token_type == _USER_DEFINED])

    def token_of(key: str) -> str | None:
        token_id = gguf_field(reader, f"tokenizer.ggml.{key}", None)
        return None if token_id is None or int(token_id) >= len(tokens) else tokens[int(token_id)]

    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_of("bos_token_id"),
        "eos_token": token_of("eos_token_id"),
        "unk_token": token_of("unknown_token_id"),
        "pad_token": token_of("padding_token_id"),
        "add_bos_token": bool(gguf_field(reader, "tokenizer.ggml.add_bos_token", add_bos_default)),
        "add_eos_token": bool(gguf_field(reader, "tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(gguf_field(reader, f"{arch}.context_length", 4096)),
    }
    template = gguf_field(reader, "tokenizer.chat_template", None)
    if template is not None:
        tokenizer_config["chat_template"] = template
    return tokenizer, tokenizer_config


def _byte_level_bpe(reader: gguf.GGUFReader, tokens: list[str]) -> Tokenizer:
    pre = gguf_field(reader, "tokenizer.ggml.pre", "default")
    merges = [tuple(merge.split(" ")) for merge in gguf_field(reader, "tokenizer.ggml.merges")]
    if any(len(merge) != 2 for merge in merges):
        raise ModelLoadError("tokenizer.ggml.merges holds an entry that is not two space-separated tokens")
    # llama.cpp stores byte-level tokens in GPT-2's printable byte alphabet, as tokenizer.json does.
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _IGNORE_MERGES_PRE))
    if pre in _GPT2_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre in _DIGITS_THEN_GPT2_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif pre in _SPLIT_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLIT_PRE[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        known = sorted((*_GPT2_PRE, *_DIGITS_THEN_GPT2_PRE, *_SPLIT_PRE))
        raise ModelLoadError(f"unsupported tokenizer pre-type '{pre}' (tokenizer.ggml.pre): known are "
                             f"{', '.join(known)}; use a Hugging Face directory with tokenizer.json instead")
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(reader: gguf.GGUFReader, tokens: list[str], token_types: list[int]) -> Tokenizer:
    scores: list[float] = gguf_field(reader, "tokenizer.ggml.scores")
    add_space_prefix = bool(gguf_field(reader, "tokenizer.ggml.add_space_prefix", True))
    unk_id = gguf_field(reader, "tokenizer.ggml.unknown_token_id", None)
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(
        vocab=vocab, merges=_merges_from_scores(tokens, token_types, scores, vocab),
        unk_token=None if unk_id is None else tokens[int(unk_id)], fuse_unk=True, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if add_space_prefix else "never", split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def _merges_from_scores(tokens: list[str], token_types: list[int], scores: list[float],
                        vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-ordered merging.

    SentencePiece BPE merges the adjacent pair whose result scores highest, so every split of a
    normal token into two vocabulary pieces becomes a merge ranked by that token's score.
    """
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, token_type, score in zip(tokens, token_types, scores):
        if token_type != 1:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]
