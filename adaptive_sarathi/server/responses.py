"""OpenAI response objects: the stream of chunks, and the full response as that stream collected.

There is one code path: `stream_chunks` turns engine outputs into chunk objects
(`text_completion` or `chat.completion.chunk`); a non-streamed reply is `collect` over them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.server.async_engine import RequestStream


class ResponseHeader:
    """The id, creation time and model name shared by every chunk of one response."""

    def __init__(self, chat: bool, model: str):
        self.chat = chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}


async def stream_chunks(header: ResponseHeader, stream: RequestStream,
                        include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """One chunk per engine output (a token, or the end of an aborted request); with
    `include_usage`, every chunk carries "usage": null and a last chunk with no choices carries
    the token counts (prompt tokens served from the prefix cache in
    prompt_tokens_details.cached_tokens)."""
    prompt_tokens: dict[int, int] = {}
    completion_tokens: dict[int, int] = {}
    cached_tokens: dict[int, int] = {}
    async for index, out in stream:
        first = index not in prompt_tokens
        prompt_tokens[index] = len(out.prompt_token_ids)
        completion_tokens[index] = len(out.token_ids)
        cached_tokens[index] = out.num_cached_tokens
        chunk = header.chunk([_choice(header.chat, index, out, first)])
        if include_usage:
            chunk["usage"] = None
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


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


async def collect(header: ResponseHeader, chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The full `text_completion` / `chat.completion` object of a chunk stream made with
    include_usage."""
    texts: dict[int, list[str]] = {}
    finish_reasons: dict[int, str | None] = {}
    usage = None
    async for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            piece = choice["delta"].get("content", "") if header.chat else choice["text"]
            texts.setdefault(choice["index"], []).append(piece)
            finish_reasons[choice["index"]] = choice["finish_reason"]
    choices = []
    for index in sorted(texts):
        text = "".join(texts[index])
        body = {"message": {"role": "assistant", "content": text}} if header.chat else {"text": text}
        choices.append({"index": index, **body, "logprobs": None, "finish_reason": finish_reasons[index]})
    response = header.chunk(choices)
    response["object"] = "chat.completion" if header.chat else "text_completion"
    response["usage"] = usage
    return response
