"""Text <-> token ids for a model directory: tokenizer.json, its chat template and streaming decode."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import tokenizers

from adaptive_sarathi.engine.loaders.source import ModelLoadError

# Prompt tokens decoded ahead of the output, so the first output token gets the spacing it has in
# context (SentencePiece drops a word's leading space when it starts the decoded text).
_PROMPT_CONTEXT_TOKENS = 5


class Tokenizer:
    """A Hugging Face `tokenizers` tokenizer plus the settings of its tokenizer_config.json."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, tokenizer_config: dict[str, Any],
                 chat_template: str | None = None):
        self._tokenizer = tokenizer
        self.bos_token = _token_text(tokenizer_config.get("bos_token"))
        self.eos_token = _token_text(tokenizer_config.get("eos_token"))
        self.add_bos_token = bool(tokenizer_config.get("add_bos_token", False))
        self.chat_template = chat_template if chat_template is not None else _config_template(tokenizer_config)
        self._compiled_template: jinja2.Template | None = None

    @classmethod
    def from_dir(cls, path: Path | str, chat_template: str | None = None) -> "Tokenizer":
        """Load tokenizer.json, tokenizer_config.json and (if present) chat_template.jinja from `path`;
        `chat_template`, when given, replaces the directory's template.

        Raises ModelLoadError naming the file when tokenizer.json is missing or unreadable.
        """
        path = Path(path)
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as err:  # tokenizers raises a bare Exception for missing or malformed files
            raise ModelLoadError(f"cannot load '{path / 'tokenizer.json'}': {err}") from err
        config_file = path / "tokenizer_config.json"
        try:
            config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"cannot read '{config_file}': {err}") from err
        template_file = path / "chat_template.jinja"
        if chat_template is None and template_file.is_file():
            chat_template = template_file.read_text()
        return cls(tokenizer, config, chat_template)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer knows, added tokens included (may be below the model's)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self._tokenizer.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self._tokenizer.token_to_id(self.eos_token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with add_special_tokens, BOS first when the config asks for it.

        Special tokens written in the text (e.g. "<|im_start|>") map to their ids, and a text that
        starts with BOS gets no second one. Raises ValueError when text is not a string.
        """
        if not isinstance(text, str):
            raise ValueError(f"text to encode must be a string, got {type(text).__name__}")
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        bos = self.bos_token_id
        # A rendered chat template often starts with BOS already; a second one would be a token
        # sequence the model never saw in training, so neither the tokenizer.json post-processor
        # nor add_bos_token adds another.
        if not add_special_tokens or (bos is not None and ids[:1] == [bos]):
            return ids
        if self._tokenizer.post_processor is not None:
            ids = self._tokenizer.encode(text, add_special_tokens=True).ids
        if self.add_bos_token and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; incomplete UTF-8 sequences at either end come out as U+FFFD."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self) -> list[bytes | None]:
        """The bytes each token id stands for in decoded text, by id (None for special and added
        tokens, which the output text leaves out). Only byte-level BPE tokenizers (GPT-2's byte
        alphabet: Llama 3, Qwen2, SmolLM2, ...) say this exactly; raises ValueError for others."""
        decoder = json.loads(self._tokenizer.to_str()).get("decoder") or {}
        if decoder.get("type") != "ByteLevel":
            raise ValueError("this model's tokenizer is not a byte-level BPE one, whose token bytes are exact")
        to_byte = {char: byte for byte, char in _byte_alphabet().items()}
        special = set(self._tokenizer.get_added_tokens_decoder())
        table: list[bytes | None] = []
        for token_id in range(self.vocab_size):
            token = self._tokenizer.id_to_token(token_id)
            if token is None or token_id in special or any(c not in to_byte for c in token):
                table.append(None)
            else:
                table.append(bytes(to_byte[c] for c in token))
        return table

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            **extra: Any) -> str:
        """Render `messages` with the model's chat template (a sandboxed Jinja environment).

        Does not mutate `messages`. Raises ValueError naming the field when messages are not a list
        of {"role": str, "content": str} dicts, when the template rejects the conversation or fails
        (sandbox violations included), or when the tokenizer has no chat template.
        """
        _check_messages(messages)
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template: send a plain prompt instead of messages")
        try:
            if self._compiled_template is None:
                self._compiled_template = _chat_environment().from_string(self.chat_template)
            return self._compiled_template.render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra)
        except jinja2.TemplateError as err:
            raise ValueError(f"chat template failed on these messages: {err}") from err

    def incremental_detokenizer(self, prompt_token_ids: Sequence[int] = (),
                                skip_special_tokens: bool = True) -> "IncrementalDetokenizer":
        """A fresh streaming decoder for one request's output tokens."""
        return IncrementalDetokenizer(self, prompt_token_ids, skip_special_tokens)


class IncrementalDetokenizer:
    """Turns a request's output tokens, pushed as they come, into text deltas.

    The concatenated deltas plus flush() equal decode(all output ids). Text ending in an incomplete
    UTF-8 character (U+FFFD) is held back until a later token completes it.

    Not `tokenizers.decoders.DecodeStream` (0.23), which gives the same text on well-formed
    streams but (a) emits the prompt context along with the first output token when the prompt
    ends inside a character (a token-id prompt can), and (b) raises "Invalid prefix encountered"
    on byte-fallback tokenizers (Llama 2 style) when a window's decoded text does not start with
    the previous one's (byte tokens followed by <unk>); this decoder slices by length instead.
    Both cases are pinned in tests/engine/test_tokenizer.py.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int] = (),
                 skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # Decoding re-reads a window: ids[:read] were already emitted and serve as context, so
        # that decoding ids[read:] alone cannot lose spaces or split characters.
        self._ids = list(prompt_token_ids)[-_PROMPT_CONTEXT_TOKENS:] if prompt_token_ids else []
        self._read = len(self._ids)

    def push(self, new_ids: Iterable[int]) -> str:
        """Append `new_ids`; return the text they complete ("" while a character is incomplete)."""
        self._ids.extend(new_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character decodes as U+FFFD); call once at the end."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        context = self._decode(self._ids[:self._read])
        text = self._decode(self._ids)
        if len(text) <= len(context) or (text.endswith("\ufffd") and not final):
            return ""
        self._ids = self._ids[self._read:]
        self._read = len(self._ids)
        return text[len(context):]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens) if ids else ""


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: byte -> the printable character standing for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    alphabet = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in alphabet:
            alphabet[b] = chr(256 + shifted)
            shifted += 1
    return alphabet


def _token_text(token: Any) -> str | None:
    # tokenizer_config.json writes special tokens either as strings or as AddedToken dicts.
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


def _config_template(config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: the conversation one is "default"
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        return named.get("default")
    return template if isinstance(template, str) else None


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {\"role\": ..., \"content\": ...} objects")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{index}] must be an object with 'role' and 'content'")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = "missing" if key not in message else f"a {type(message[key]).__name__}"
                raise ValueError(f"messages[{index}].{key} must be a string, got {got}")


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template rejected the messages: {message}")


def _tojson(value: Any, indent: int | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt text.
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)


def _chat_environment() -> jinja2.Environment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def resolve_chat_template(value: str) -> str:
    """The chat template a `--chat-template` value names, as vLLM reads it: the text of the file
    at that path, else the value itself when it is Jinja (holds "{{" or "{%"). Raises ValueError
    naming the flag when it is neither, or when the file cannot be read or the template does not
    compile."""
    path = Path(value).expanduser()
    if path.is_file():
        try:
            template = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--chat-template {value}: cannot read the file ({err})") from None
    elif "{{" in value or "{%" in value:
        template = value
    else:
        raise ValueError(f"--chat-template {value!r}: no such file, and not a Jinja template: pass the path of a "
                         "template file (or the template text itself)")
    try:
        _chat_environment().from_string(template)
    except jinja2.TemplateError as err:
        raise ValueError(f"--chat-template {value}: the template does not compile: {err}") from None
    return template
