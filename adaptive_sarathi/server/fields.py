"""Validation of the fields request bodies share (completions, chat, /tokenize, /detokenize): the
one owner of how a field is checked and of the 400 that names it.

Every check raises an APIError 400 (errors.bad_request) whose `param` names the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adaptive_sarathi.server.errors import bad_request

INT64 = 1 << 63  # seeds and token ids: what OpenAI's and vLLM's schemas accept


@dataclass(frozen=True)
class RequestLimits:
    """Work one request may ask for: prompts per request (a list prompt makes one engine request
    each) and characters per text prompt (or per chat message content)."""

    max_prompts: int = 64
    max_prompt_chars: int = 200_000

    def __post_init__(self) -> None:
        if self.max_prompts < 1:
            raise ValueError(f"max_prompts={self.max_prompts} is invalid: use an integer >= 1")
        if self.max_prompt_chars < 1:
            raise ValueError(f"max_prompt_chars={self.max_prompt_chars} is invalid: use an integer >= 1")


def check_known(body: dict, fields: set[str], tolerated: Iterable[str] = ()) -> None:
    """A 400 naming the first key of `body` that is neither in `fields` nor `tolerated` (names a
    caller checks itself, such as fields it refuses with a reason of their own)."""
    tolerated = set(tolerated)
    for name in body:
        if name not in fields and name not in tolerated:
            raise bad_request(str(name), f"'{show_text(name)}' is not a field this server knows: leave it out "
                                         f"(fields: {', '.join(sorted(fields))})")


def model_field(body: dict) -> str | None:
    """The body's `model` (None when absent); a 400 when it is not a string. Whether the server
    serves that name is the routes' check (app.py)."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model", "'model' must be a string naming a model from GET /v1/models")
    return model


def json_object(body: Any) -> dict:
    """`body` when it is a JSON object, else a 400."""
    if not isinstance(body, dict):
        raise bad_request(None, "the request body must be a JSON object")
    return body


def text_field(value: str, field: str, limits: RequestLimits | None = None) -> str:
    """`value` when it has a UTF-8 form (and fits the character limit), else a 400 naming `field`."""
    if limits is not None and len(value) > limits.max_prompt_chars:
        raise bad_request(field, f"{field} has {len(value)} characters, more than the limit of "
                                 f"{limits.max_prompt_chars} (--max-prompt-chars): shorten it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise bad_request(field, f"{field} holds a lone UTF-16 surrogate {value[err.start]!r} at character "
                                 f"{err.start}: send valid Unicode (surrogates only in pairs)") from None
    return value


def show_text(value: str) -> str:
    return value.encode("utf-8", "backslashreplace").decode()[:60]


def chat_messages(body: dict, limits: RequestLimits) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages", "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    if len(messages) > limits.max_prompts:
        raise bad_request("messages", f"'messages' holds {len(messages)} messages, more than the limit of "
                                      f"{limits.max_prompts} (--max-prompts-per-request)")
    flat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request("messages", f"messages[{i}] must be an object with a string 'role'")
        # Only role and content reach the template: other keys (name, tool_calls, ...) are not
        # implemented, and a template would render them unchecked.
        for key in message:
            if key not in ("role", "content", "name"):
                raise bad_request("messages", f"messages[{i}].{show_text(str(key))} is not supported: "
                                              "send only 'role' and 'content'")
        role = text_field(message["role"], f"messages[{i}].role", limits)
        content = text_field(_content(message.get("content"), i), f"messages[{i}].content", limits)
        flat.append({"role": role, "content": content})
    return flat


def _content(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    # A list of content parts: only text parts mean anything to a text-only model.
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    raise bad_request("messages", f"messages[{i}].content must be a string or a list of "
                                  "{\"type\": \"text\", \"text\": ...} parts")


def show(value: Any) -> str:
    if is_int(value) and value.bit_length() > 64:  # repr() of a huge one is slow or refused
        return f"an integer of {value.bit_length()} bits"
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_token_id(value: Any) -> bool:
    # Bounded so that no later step (a tensor of ids, a vocabulary check) meets a number it cannot hold.
    return is_int(value) and 0 <= value < INT64


def integer_field(body: dict, name: str, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_int(value):
        raise bad_request(name, f"'{name}' must be an integer, got {show(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise bad_request(name, f"'{name}'={show(value)} is out of range: use an integer {bounds}")
    return value


def number_field(body: dict, name: str, low: float, high: float, *, default: float,
            low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    # An integer is compared as it is: float() of a 400-digit one raises OverflowError.
    if not (is_int(value) or (isinstance(value, float) and math.isfinite(value))):
        raise bad_request(name, f"'{name}' must be a finite number, got {show(value)}")
    if not (low < value if low_open else low <= value) or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise bad_request(name, f"'{name}'={show(value)} is out of range: use a number in {interval}")
    return value


def boolean_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(name, f"'{name}' must be true or false")
    return value
