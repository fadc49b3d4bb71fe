"""One streamed /v1/completions or /v1/chat/completions request, timed at every server-sent event."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp

from adaptive_sarathi.bench.workload import BenchRequest


@dataclass
class RequestResult:
    """Client-side timings of one request, in seconds from sending it.

    arrival_s: when the workload said to send it and start_s when it was sent, both on the
    workload clock (seconds after the benchmark's time 0). success: HTTP 200 and the stream ended
    with finish reason stop or length. itl_s: the gaps between consecutive chunks after the
    first (for chat, an opening chunk without content, vLLM's role-only one, is no token).
    output_tokens: the server's usage count (the number of chunks when the server sends
    no usage). slo_class: the SLO class the request named (None: none).
    """

    prompt_len: int
    output_len: int
    arrival_s: float = 0.0
    start_s: float = 0.0
    success: bool = False
    error: str = ""
    finish_reason: str | None = None
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    slo_class: str | None = None

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 for one-token outputs)."""
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


def request_url(base_url: str, endpoint: str) -> str:
    """The route of `endpoint` ("completions" or "chat") under `base_url` (without /v1)."""
    return f"{base_url.rstrip('/')}/v1/{'chat/completions' if endpoint == 'chat' else 'completions'}"


async def send_completion(session: aiohttp.ClientSession, url: str, model: str, request: BenchRequest,
                          headers: dict[str, str], start_s: float, slo_class: str | None = None,
                          chat: bool = False) -> RequestResult:
    """Stream one completion (`chat`: one chat completion whose user message is the prompt) of
    exactly request.output_len tokens (ignore_eos), naming `slo_class`
    (else the workload's class of the request) in the x-slo-class header when there is one (a header, so servers without classes ignore it rather
    than refuse an unknown body field); never raises for HTTP or connection errors, which land
    in RequestResult.error."""
    slo_class = slo_class if slo_class is not None else request.slo_class  # the flag, else the workload's
    result = RequestResult(request.prompt_len, request.output_len, arrival_s=request.arrival_s,
                           start_s=start_s, slo_class=slo_class)
    if slo_class is not None:
        headers = {**headers, "x-slo-class": slo_class}
    payload = {"model": model, "max_tokens": request.output_len, "temperature": 0.0, "ignore_eos": True,
               "stream": True, "stream_options": {"include_usage": True}}
    if chat:
        payload["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        payload["prompt"] = request.prompt
    sent = time.perf_counter()
    last = sent
    chunks = 0
    usage_tokens = None
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:300]}"
                return result
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"].get("message"))
                    return result
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                if chat and not choices[0].get("delta", {}).get("content") and chunks == 0:
                    result.finish_reason = choices[0].get("finish_reason") or result.finish_reason
                    continue  # a role-only opening chunk (vLLM sends one) is no token
                if chunks == 0:
                    result.ttft_s = now - sent
                else:
                    result.itl_s.append(now - last)
                last = now
                chunks += 1
                result.finish_reason = choices[0].get("finish_reason") or result.finish_reason
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as err:
        result.error = f"{type(err).__name__}: {err}"
        return result
    result.e2e_s = last - sent
    result.output_tokens = usage_tokens if usage_tokens is not None else chunks
    result.success = chunks > 0 and result.finish_reason in ("stop", "length")
    if not result.success:
        result.error = f"stream ended with finish reason {result.finish_reason}"
    return result
