"""Tokenizer: encode/decode against transformers' GGUF tokenizer, chat template, streaming decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import tokenizers
import tokenizers.processors

from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.loaders.default_model import default_gguf_path
from adaptive_sarathi.engine.tokenizer import Tokenizer

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # sum\n",
    "12345",
    "In 2024 there were 1,234,567 people; pi = 3.14159.",
    "héllo naïve café — Ünïcödé",
    "I love 🦙 and 🤗 emojis 👩\u200d👩\u200d👧",
    "日本語のテキストと한국어",
    "a   b\t\tc\n\n\nd",
    "   leading and trailing   ",
    "don't won't I'll WE'RE",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    # The same cache path as test_loaders.py uses, so one test session converts the GGUF once.
    return resolve_model(None, tmp_path_factory.getbasetemp() / "adaptive_sarathi_cache").tokenizer_path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_dir(tokenizer_dir)


def backend(tokenizer_dir: Path) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


@pytest.mark.slow
@pytest.mark.embedded_model
def test_encode_matches_transformers_gguf_tokenizer(tokenizer):
    transformers = pytest.importorskip("transformers")
    path = default_gguf_path()
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # transformers splits with GPT-2's regex alone, without SmolLM2's individual-digit split that
    # llama.cpp's "smollm" pre-tokenizer and the original tokenizer.json apply. They agree here only
    # because the vocabulary has no multi-digit or space-digit tokens, so the expected digit
    # tokenization is also asserted directly below.
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text), text
    assert tokenizer.vocab_size == len(reference) == 49152
    digits = tokenizer.encode(" 12345")
    assert [tokenizer.decode([i]) for i in digits] == [" ", "1", "2", "3", "4", "5"]


@pytest.mark.embedded_model
def test_special_tokens_map_to_their_ids(tokenizer):
    assert tokenizer.encode("<|im_start|>assistant<|im_end|>")[0] == 1
    assert tokenizer.encode("<|im_end|>") == [2]
    assert tokenizer.eos_token_id == 2
    assert tokenizer.encode("Hi")[0] != tokenizer.bos_token_id  # SmolLM2 adds no BOS


@pytest.mark.embedded_model
@pytest.mark.parametrize("text", TEXTS)
def test_decode_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=False) == text


@pytest.mark.embedded_model
def test_decode_skips_special_tokens_by_default(tokenizer):
    assert tokenizer.decode(tokenizer.encode("<|im_start|>user\nHi<|im_end|>")) == "user\nHi"


@pytest.mark.embedded_model
def test_chat_template_renders_smollm2_format(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    without_system = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert without_system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert without_system.endswith("<|im_start|>user\nHi<|im_end|>\n")


@pytest.mark.embedded_model
@pytest.mark.parametrize("messages, field", [
    ("hello", "messages"),
    ([], "messages"),
    (["hello"], r"messages\[0\]"),
    ([{"content": "hi"}], r"messages\[0\].role"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": ["b"]}], r"messages\[1\].content"),
])
def test_invalid_messages_name_the_field(tokenizer, messages, field):
    with pytest.raises(ValueError, match=field):
        tokenizer.apply_chat_template(messages)


@pytest.mark.embedded_model
def test_template_raise_exception_and_bos_variables(tokenizer_dir):
    template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
                "{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}{{ eos_token }}")
    custom = Tokenizer(backend(tokenizer_dir), {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, template)
    assert custom.apply_chat_template([{"role": "user", "content": "é<b>"}]) == '<|im_start|>"é<b>"<|im_end|>'
    with pytest.raises(ValueError, match="first must be user"):
        custom.apply_chat_template([{"role": "assistant", "content": "x"}])


@pytest.mark.embedded_model
def test_template_cannot_escape_the_sandbox(tokenizer_dir):
    template = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    custom = Tokenizer(backend(tokenizer_dir), {}, template)
    with pytest.raises(ValueError, match="chat template failed.*unsafe"):
        custom.apply_chat_template([{"role": "user", "content": "x"}])


@pytest.mark.embedded_model
def test_add_bos_token_is_honoured_once(tokenizer, tokenizer_dir):
    with_bos = Tokenizer(backend(tokenizer_dir), {"bos_token": "<|im_start|>", "add_bos_token": True})
    hi = tokenizer.encode("Hi")
    assert with_bos.encode("Hi") == [1, *hi]
    assert with_bos.encode("<|im_start|>Hi") == [1, *hi]
    assert with_bos.encode("Hi", add_special_tokens=False) == hi


@pytest.mark.embedded_model
def test_post_processor_bos_is_not_doubled(tokenizer, tokenizer_dir):
    # Llama 3 style: the tokenizer.json itself prepends BOS.
    prepends_bos = backend(tokenizer_dir)
    prepends_bos.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    llama3_like = Tokenizer(prepends_bos, {"bos_token": "<|im_start|>"})
    hi = tokenizer.encode("Hi")
    assert llama3_like.encode("Hi") == [1, *hi]
    assert llama3_like.encode("<|im_start|>Hi") == [1, *hi]


def stream(tokenizer: Tokenizer, ids: list[int], prompt_ids: list[int] = ()) -> list[str]:
    detok = tokenizer.incremental_detokenizer(prompt_ids)
    deltas = [detok.push([token]) for token in ids]
    return deltas + [detok.flush()]


@pytest.mark.embedded_model
@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenizer_equals_full_decode(tokenizer, text):
    ids = tokenizer.encode(text)
    deltas = stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids)
    assert not any("\ufffd" in delta for delta in deltas)


@pytest.mark.embedded_model
def test_emoji_split_across_tokens_is_held_back(tokenizer):
    ids = tokenizer.encode("🦙")
    assert len(ids) > 1 and tokenizer.decode(ids[:1]).endswith("\ufffd")
    deltas = stream(tokenizer, ids)
    assert deltas[:len(ids) - 1] == [""] * (len(ids) - 1) and deltas[len(ids) - 1] == "🦙"


@pytest.mark.embedded_model
def test_incremental_detokenizer_with_prompt_context(tokenizer):
    prompt = tokenizer.encode("The answer is")
    output = tokenizer.encode(" forty-two 🤗 done")
    full = tokenizer.decode(prompt + output)
    assert "".join(stream(tokenizer, output, prompt)) == full[len(tokenizer.decode(prompt)):]


@pytest.mark.embedded_model
def test_flush_emits_an_incomplete_character(tokenizer):
    first = tokenizer.encode("🦙")[0]
    detok = tokenizer.incremental_detokenizer()
    assert detok.push([first]) == ""
    assert detok.flush() == tokenizer.decode([first])


def test_missing_tokenizer_json_names_the_file(tmp_path: Path):
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


def test_tokenizer_without_chat_template_says_so():
    bare = Tokenizer(tokenizers.Tokenizer(tokenizers.models.BPE()), {})
    with pytest.raises(ValueError, match="no chat template"):
        bare.apply_chat_template([{"role": "user", "content": "x"}])


def test_prompt_ending_inside_a_character_is_not_repeated(tokenizer):
    # A token-id prompt may stop inside a character; its text must not leak into the output.
    prompt = tokenizer.encode("qualifying") + tokenizer.encode("🦙", add_special_tokens=False)[:1]
    output = tokenizer.encode(" done", add_special_tokens=False)
    assert "".join(stream(tokenizer, output, prompt)) == " done"


def byte_fallback_tokenizer() -> Tokenizer:
    """A SentencePiece-style BPE with byte fallback (<0xNN> tokens), as Llama 2 and Mistral."""
    from tokenizers import decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in ["▁", "▁hello", "▁world", "h", "e", "l", "o", "w", "r", "d", "▁the", "é", "日"]:
        vocab[piece] = len(vocab)
    raw = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True,
                                          fuse_unk=True))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    raw.add_special_tokens(["<s>", "</s>"])
    return Tokenizer(raw, {"bos_token": "<s>", "eos_token": "</s>"})


@pytest.mark.parametrize("text", ["hello 🦙 world", "the 日本 é ñ", "ünï 😀😀"])
def test_byte_fallback_tokens_stream_as_full_decode(text):
    tok = byte_fallback_tokenizer()
    ids = tok.encode(text, add_special_tokens=False)
    assert any(3 <= i < 259 for i in ids)  # the text needs byte tokens
    deltas = stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids) == text
    assert not any("\ufffd" in delta for delta in deltas)


def test_byte_tokens_then_unknown_token_do_not_break_the_stream():
    # Stray byte tokens, then <unk>: the decoded window stops starting with the text before it
    # (tokenizers' DecodeStream raises "Invalid prefix" here); the deltas still add up.
    tok = byte_fallback_tokenizer()
    prompt = [86]
    ids = [122, 89, 206, 10, 69, 126, 235, 196, 188, 253, 32, 261, 256, 170, 52, 107, 238, 59, 9, 232, 0]
    joined = "".join(stream(tok, ids, prompt))
    full = tok.decode(prompt + ids)[len(tok.decode(prompt)):]
    # A run of bytes that is not UTF-8 decodes to U+FFFD per byte token in one decode, while the
    # stream emitted its valid leading bytes ("wV") before the run broke: equal only in length.
    assert len(joined) == len(full) and joined.startswith("wV")
    assert joined[joined.index(" world"):] == full[full.index(" world"):] == " world" + "\ufffd" * 8 + "<unk>"


@pytest.mark.embedded_model
@pytest.mark.parametrize("text", ["Hello, world!", "  spaces\tand\nnewlines", "héllo wörld € 😀 日本語", '{"a": [1, 2.5e3]}'])
def test_token_bytes_join_to_the_text(tokenizer, text):
    table = tokenizer.token_bytes()
    assert len(table) == tokenizer.vocab_size
    assert b"".join(table[t] for t in tokenizer.encode(text, add_special_tokens=False)) == text.encode()
    assert table[tokenizer.eos_token_id] is None  # special tokens leave no text


def test_token_bytes_refuses_a_tokenizer_that_is_not_byte_level():
    model = tokenizers.models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]")
    with pytest.raises(ValueError, match="byte-level"):
        Tokenizer(tokenizers.Tokenizer(model), {}).token_bytes()
