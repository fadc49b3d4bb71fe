"""OpenAI response objects: the stream of chunks, and the full response as that stream collected.

There is one code path: `stream_chunks` turns engine outputs into chunk objects
(`text_completion` or `chat.completion.chunk`); a non-streamed reply is `collect` over them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from adaptive_sarathi.engine.batch import TokenLogprobs
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.server.async_engine import RequestStream


TokenText = Callable[[int], str]


class ResponseHeader:
    """What every chunk of one response shares: its id, creation time and model name, the samples
    per prompt (`n`: choice index // n is the prompt's index), and, when the request asked for
    logprobs, how a token id is shown (`token_text`; None: no logprobs)."""

    def __init__(self, chat: bool, model: str, n: int = 1, token_text: TokenText | None = None):
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.n = n
        self.token_text = token_text

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}


async def stream_chunks(header: ResponseHeader, stream: RequestStream, include_usage: bool,
                        continuous_usage: bool = False) -> AsyncIterator[dict[str, Any]]:
    """One chunk per engine output (a token, or the end of an aborted request); with
    `include_usage`, every chunk carries "usage": null and a last chunk with no choices carries
    the token counts (each prompt's tokens counted once, however many samples it has; those served
    from the prefix cache in prompt_tokens_details.cached_tokens, the fewest any sample found).
    With `continuous_usage` as well, each chunk's "usage" is its choice's counts so far instead of
    null (its prompt's tokens, the choice's output tokens up to and including this chunk's), as
    vLLM's stream_options.continuous_usage_stats has it."""
    prompt_tokens: dict[int, int] = {}
    completion_tokens: dict[int, int] = {}
    cached_tokens: dict[int, int] = {}
    text_offsets: dict[int, int] = {}
    async for index, out in stream:
        first = index not in completion_tokens
        prompt_tokens[index // header.n] = len(out.prompt_token_ids)
        completion_tokens[index] = len(out.token_ids)
        prompt = index // header.n
        cached_tokens[prompt] = min(cached_tokens.get(prompt, out.num_cached_tokens), out.num_cached_tokens)
        choice = _choice(header.chat, index, out, first)
        if header.token_text is not None:
            choice["logprobs"] = _logprobs(header, out.new_logprobs or [], text_offsets, index)
        chunk = header.chunk([choice])
        if include_usage:
            chunk["usage"] = (_usage(len(out.prompt_token_ids), len(out.token_ids), None) if continuous_usage
                              else None)
        yield chunk
    if include_usage:
        chunk = header.chunk([])
        chunk["usage"] = _usage(sum(prompt_tokens.values()), sum(completion_tokens.values()),
                                sum(cached_tokens.values()))
        yield chunk


def _choice(chat: bool, index: int, out: RequestOutput, first: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index}
    if chat:
        choice["delta"] = {"role": "assistant", "content": out.delta_text} if first else {"content": out.delta_text}
    else:
        choice["text"] = out.delta_text
    choice["logprobs"] = None
    choice["finish_reason"] = out.finish_reason_str
    return choice


def _logprobs(header: ResponseHeader, entries: list[TokenLogprobs], text_offsets: dict[int, int],
              index: int) -> dict[str, Any]:
    """One chunk's logprobs in OpenAI's shape: chat {"content": [{token, logprob, bytes,
    top_logprobs}]}; completions {tokens, token_logprobs, top_logprobs (token -> logprob, the
    chosen token included), text_offset (characters into the choice's text)}."""
    text = header.token_text
    if header.chat:
        return {"content": [{**_token_entry(text(e.token_id), e.logprob),
                             "top_logprobs": [_token_entry(text(t), lp) for t, lp in e.top]} for e in entries]}
    tokens = [text(e.token_id) for e in entries]
    offsets = []
    for token in tokens:
        offsets.append(text_offsets.get(index, 0))
        text_offsets[index] = offsets[-1] + len(token)
    return {"tokens": tokens, "token_logprobs": [_finite(e.logprob) for e in entries],
            "top_logprobs": [{**{text(t): _finite(lp) for t, lp in e.top}, token: _finite(e.logprob)}
                             for e, token in zip(entries, tokens)],
            "text_offset": offsets}


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": _finite(logprob), "bytes": list(token.encode("utf-8"))}


_LOWEST_LOGPROB = -9999.0  # what vLLM answers for a token of probability 0 (JSON has no -inf)


def _finite(logprob: float) -> float:
    return logprob if logprob > _LOWEST_LOGPROB else _LOWEST_LOGPROB


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> dict[str, Any]:
    """OpenAI's usage object; prompt_tokens_details only when `cached_tokens` is known (the last
    chunk's totals; a running count per chunk leaves it out, as vLLM's does)."""
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return usage


async def collect(header: ResponseHeader, chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The full `text_completion` / `chat.completion` object of a chunk stream made with
    include_usage: each choice's text and logprobs are its chunks' joined."""
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, dict[str, list]] = {}
    finish_reasons: dict[int, str | None] = {}
    usage = None
    async for chunk in chunks:
        if not chunk["choices"]:  # the totals; a chunk of choices may carry a running count
            usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            index = choice["index"]
            piece = choice["delta"].get("content", "") if header.chat else choice["text"]
            texts.setdefault(index, []).append(piece)
            finish_reasons[index] = choice["finish_reason"]
            if choice["logprobs"] is not None:
                joined = logprobs.setdefault(index, {key: [] for key in choice["logprobs"]})
                for key, values in choice["logprobs"].items():
                    joined[key].extend(values)
    choices = []
    for index in sorted(texts):
        text = "".join(texts[index])
        body = {"message": {"role": "assistant", "content": text}} if header.chat else {"text": text}
        choices.append({"index": index, **body, "logprobs": logprobs.get(index), "finish_reason": finish_reasons[index]})
    response = header.chunk(choices)
    response["object"] = "chat.completion" if header.chat else "text_completion"
    response["usage"] = usage
    return response
