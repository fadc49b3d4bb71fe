"""Parse and validate OpenAI request bodies into prompts and SamplingParams.

Every refusal is an APIError 400 whose `param` names the offending field. Beyond the OpenAI
fields, `ignore_eos` (bool) is accepted as an extension: generation then runs to max_tokens
whatever the model samples, so benchmarks get exact output lengths.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.tokenizer import Tokenizer
from adaptive_sarathi.server.errors import bad_request

Prompt = str | list[int]

# Fields this server does not implement, and the values that ask for nothing (so clients that
# always send defaults still work).
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "echo": (None, False), "logprobs": (None, False), "top_logprobs": (None, 0), "best_of": (None, 1),
    "suffix": (None, ""), "logit_bias": (None, {}), "tools": (None, []), "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0), "response_format": (None, {"type": "text"}),
}
_COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True)
class GenerateRequest:
    """A validated completions or chat body: one engine request per prompt."""

    chat: bool
    model: str | None
    prompts: list[Prompt]
    params: SamplingParams
    stream: bool
    include_usage: bool


def parse_completion_request(body: Any, max_model_len: int) -> GenerateRequest:
    """A /v1/completions body. `prompt` is a string, a list of strings, a list of token ids or a
    list of token-id lists; each prompt becomes one choice."""
    body = _object(body)
    return _parse(body, _prompts(body), chat=False, max_model_len=max_model_len)


def parse_chat_request(body: Any, tokenizer: Tokenizer | None, max_model_len: int) -> GenerateRequest:
    """A /v1/chat/completions body; `messages` are rendered through the model's chat template."""
    body = _object(body)
    messages = _messages(body)
    request = _parse(body, [], chat=True, max_model_len=max_model_len)
    if tokenizer is None:
        raise bad_request("messages", "'messages' need a chat template and this model has no tokenizer: "
                                      "send token ids to /v1/completions")
    try:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except ValueError as err:
        raise bad_request("messages", str(err)) from None
    return dataclasses.replace(request, prompts=[prompt])


def _parse(body: dict, prompts: list[Prompt], chat: bool, max_model_len: int) -> GenerateRequest:
    for name, harmless in _UNSUPPORTED.items():
        if body.get(name) not in harmless:
            raise bad_request(name, f"'{name}' is not supported by this server: leave it out")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model", "'model' must be a string naming a model from GET /v1/models")
    n = body.get("n")
    if n is not None and (n != 1 or not _is_int(n)):
        raise bad_request("n", f"n={_show(n)} is not supported: this server returns one choice per prompt (n=1)")
    stream = _boolean(body, "stream", False)
    include_usage = _stream_options(body, stream)
    max_tokens = _integer(body, "max_completion_tokens", low=1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", low=1)
    if max_tokens is None:
        # Chat runs to the end of the context window by default, as OpenAI's does.
        max_tokens = max_model_len if chat else _COMPLETION_DEFAULT_MAX_TOKENS
    temperature = _number(body, "temperature", 0.0, 2.0, default=1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, default=1.0, low_open=True)
    params = SamplingParams(
        max_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
        seed=_integer(body, "seed"), stop=_stop(body),
        ignore_eos=_boolean(body, "ignore_eos", False))
    return GenerateRequest(chat=chat, model=model, prompts=prompts, params=params, stream=stream,
                           include_usage=include_usage)


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request(None, "the request body must be a JSON object")
    return body


def _prompts(body: dict) -> list[Prompt]:
    if "prompt" not in body:
        raise bad_request("prompt", "'prompt' is required: a string, a list of strings or token ids")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(_is_int(t) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return list(prompt)
    raise bad_request("prompt", "'prompt' must be a string, a non-empty list of strings, a non-empty "
                                "list of token ids or a list of such lists")


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages", "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    flat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request("messages", f"messages[{i}] must be an object with a string 'role'")
        flat.append({**message, "content": _content(message.get("content"), i)})
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


def _stream_options(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad_request("stream_options", "'stream_options' must be an object such as {\"include_usage\": true}")
    if not stream:
        raise bad_request("stream_options", "'stream_options' is only allowed when 'stream' is true")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise bad_request("stream_options", "'stream_options.include_usage' must be true or false")
    return include


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop", "'stop' must be a non-empty string or a list of them")
    return tuple(stops)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(body: dict, name: str, low: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise bad_request(name, f"'{name}' must be an integer, got {_show(value)}")
    if low is not None and value < low:
        raise bad_request(name, f"'{name}'={value} is out of range: use an integer >= {low}")
    return value


def _number(body: dict, name: str, low: float, high: float, *, default: float,
            low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
        raise bad_request(name, f"'{name}' must be a finite number, got {_show(value)}")
    if not (low < value if low_open else low <= value) or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise bad_request(name, f"'{name}'={value} is out of range: use a number in {interval}")
    return value


def _boolean(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(name, f"'{name}' must be true or false")
    return value
