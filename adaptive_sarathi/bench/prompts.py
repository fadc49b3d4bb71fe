"""Text prompts of exact token lengths, built from the served model's tokenizer.

A prompt is a run of whole-word vocabulary entries (" the", " river", ...: a space and letters,
each one token that the tokenizer reads back as itself), drawn with a seed. Words split on
whitespace, so the run tokenizes to exactly those tokens: the prompt is real text a server must
tokenize, of the length the workload drew. For chat, the message content is shortened by what the
chat template adds, so the rendered prompt has the drawn length too (at least one word of content).
"""

from __future__ import annotations

import random
from pathlib import Path

from adaptive_sarathi.engine.tokenizer import Tokenizer

ENDPOINTS = ("completions", "chat")


def load_bench_tokenizer(path: str | None) -> Tokenizer:
    """The tokenizer at `path` (a Hugging Face tokenizer directory: tokenizer.json, and
    tokenizer_config.json for the chat template), or the embedded model's when None. Raises
    ModelLoadError (a ValueError) naming the path when it cannot be read."""
    if path is not None:
        return Tokenizer.from_dir(Path(path).expanduser())
    from adaptive_sarathi.engine.loaders.default_model import default_gguf_path
    from adaptive_sarathi.engine.loaders.gguf_convert import convert_gguf

    return Tokenizer.from_dir(convert_gguf(default_gguf_path()))


class PromptBuilder:
    """Seeded text prompts of a requested token length for one endpoint (see the module)."""

    def __init__(self, tokenizer: Tokenizer, endpoint: str, seed: int):
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint={endpoint!r} is invalid: use one of {', '.join(ENDPOINTS)}")
        self.tokenizer = tokenizer
        self.endpoint = endpoint
        self.rng = random.Random(seed)
        self.words = _word_tokens(tokenizer)
        if len(self.words) < 100:
            raise ValueError(f"the tokenizer has only {len(self.words)} whole-word tokens: pass --prompts token-ids")
        # Tokens the prompt carries beyond its words: BOS, or the chat template around the content.
        self.overhead = len(self.encode(""))

    def encode(self, content: str) -> list[int]:
        """The tokens a server runs for `content` sent to this endpoint."""
        if self.endpoint == "chat":
            content = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                         add_generation_prompt=True)
        return self.tokenizer.encode(content)

    def build(self, length: int) -> tuple[str, int]:
        """(text, its token count on this endpoint): `length` tokens, or the fewest the endpoint
        allows (one word of content) when `length` is shorter."""
        words = [self.tokenizer.decode([self.rng.choice(self.words)], False)
                 for _ in range(max(1, length - self.overhead))]
        for _ in range(4):
            # A chat message does not start with a space: its first word may then take another
            # token or two, which trimming words at the end (one token each) makes up for.
            text = "".join(words).lstrip() if self.endpoint == "chat" else "".join(words)
            count = len(self.encode(text))
            if count == length or (count > length and len(words) == 1):
                break
            if count > length:
                del words[max(1, len(words) - (count - length)):]
            else:
                words += [self.tokenizer.decode([self.rng.choice(self.words)], False) for _ in range(length - count)]
        return text, count


def _word_tokens(tokenizer: Tokenizer) -> list[int]:
    """Ids whose text is a space and 2 to 12 ASCII letters and that encode back to themselves."""
    words = []
    for token_id in range(tokenizer.vocab_size):
        text = tokenizer.decode([token_id], False)
        if (3 <= len(text) <= 13 and text[0] == " " and text[1:].isascii() and text[1:].isalpha()
                and tokenizer.encode(text, add_special_tokens=False) == [token_id]):
            words.append(token_id)
    return words
