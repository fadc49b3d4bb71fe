"""vLLM's /tokenize and /detokenize bodies: the served model's tokenizer over HTTP, so clients
(load generators, gateways) count and render tokens exactly as the server does.

POST /tokenize {"prompt": str} or {"messages": [...], "add_generation_prompt": bool (default
true)}, with "add_special_tokens" (default true) -> {"count", "max_model_len", "tokens"}: with the
defaults, the very tokens a completions or chat request of that prompt or those messages runs on.
POST /detokenize {"tokens": [int, ...]} -> {"prompt"}.
Both accept "model" (checked like a generation request's); any other field is a 400 naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adaptive_sarathi.engine.tokenizer import Tokenizer
from adaptive_sarathi.server.errors import bad_request
from adaptive_sarathi.server.protocol import (RequestLimits, _boolean, _is_token_id, _known, _messages, _object,
                                               _text)

_TOKENIZE_FIELDS = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt"}
_DETOKENIZE_FIELDS = {"model", "tokens"}


@dataclass(frozen=True)
class TokenizeRequest:
    model: str | None
    text: str  # the prompt, or the messages rendered through the chat template
    add_special_tokens: bool


def parse_tokenize(body: Any, tokenizer: Tokenizer, limits: RequestLimits) -> TokenizeRequest:
    body = _object(body)
    _known(body, _TOKENIZE_FIELDS)
    if ("prompt" in body) == ("messages" in body):
        raise bad_request("prompt", "send exactly one of 'prompt' (a string) and 'messages'")
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            raise bad_request("prompt", "'prompt' must be a string (token ids need no tokenizing)")
        if "add_generation_prompt" in body:
            raise bad_request("add_generation_prompt", "'add_generation_prompt' applies to 'messages' only")
        text = _text(body["prompt"], "prompt", limits)
    else:
        try:
            text = tokenizer.apply_chat_template(_messages(body, limits),
                                                 add_generation_prompt=_boolean(body, "add_generation_prompt", True))
        except ValueError as err:
            raise bad_request("messages", str(err)) from None
    return TokenizeRequest(_model(body), text, _boolean(body, "add_special_tokens", True))


def parse_detokenize(body: Any, vocab_size: int) -> tuple[str | None, list[int]]:
    """(model, token ids) of a /detokenize body; ids outside the vocabulary are a 400."""
    body = _object(body)
    _known(body, _DETOKENIZE_FIELDS)
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(_is_token_id(t) and t < vocab_size for t in tokens):
        raise bad_request("tokens", f"'tokens' must be a list of token ids in [0, {vocab_size})")
    return _model(body), tokens


def _model(body: dict) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model", "'model' must be a string naming a model from GET /v1/models")
    return model
