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
from adaptive_sarathi.server.fields import (RequestLimits, boolean_field, chat_messages, check_known, is_token_id,
                                            json_object, model_field, text_field)

_TOKENIZE_FIELDS = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt"}
_DETOKENIZE_FIELDS = {"model", "tokens"}


@dataclass(frozen=True)
class TokenizeRequest:
    model: str | None
    text: str  # the prompt, or the messages rendered through the chat template
    add_special_tokens: bool


def parse_tokenize(body: Any, tokenizer: Tokenizer, limits: RequestLimits) -> TokenizeRequest:
    body = json_object(body)
    check_known(body, _TOKENIZE_FIELDS)
    if ("prompt" in body) == ("messages" in body):
        raise bad_request("prompt", "send exactly one of 'prompt' (a string) and 'messages'")
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            raise bad_request("prompt", "'prompt' must be a string (token ids need no tokenizing)")
        if "add_generation_prompt" in body:
            raise bad_request("add_generation_prompt", "'add_generation_prompt' applies to 'messages' only")
        text = text_field(body["prompt"], "prompt", limits)
    else:
        try:
            generation_prompt = boolean_field(body, "add_generation_prompt", True)
            text = tokenizer.apply_chat_template(chat_messages(body, limits), add_generation_prompt=generation_prompt)
        except ValueError as err:
            raise bad_request("messages", str(err)) from None
    return TokenizeRequest(model_field(body), text, boolean_field(body, "add_special_tokens", True))


def parse_detokenize(body: Any, vocab_size: int) -> tuple[str | None, list[int]]:
    """(model, token ids) of a /detokenize body; ids outside the vocabulary are a 400."""
    body = json_object(body)
    check_known(body, _DETOKENIZE_FIELDS)
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(is_token_id(t) and t < vocab_size for t in tokens):
        raise bad_request("tokens", f"'tokens' must be a list of token ids in [0, {vocab_size})")
    return model_field(body), tokens

