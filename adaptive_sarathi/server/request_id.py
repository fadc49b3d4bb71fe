"""The X-Request-Id header: a client's own id for a request, used as the engine's request id.

The engine then logs the request under the client's id, and the response echoes the header (app.py).
The response body's `id` stays OpenAI-shaped ("cmpl-..." / "chatcmpl-...").
"""

from __future__ import annotations

from adaptive_sarathi.server.errors import bad_request

HEADER = "X-Request-Id"
MAX_LENGTH = 256  # characters; ids travel in logs and headers, and longer ones are no one's trace ids


def valid_request_id(value: str) -> bool:
    """Whether `value` may be a request id: 1 to MAX_LENGTH printable ASCII characters (space to ~)."""
    return 0 < len(value) <= MAX_LENGTH and all(" " <= c <= "~" for c in value)


def engine_request_ids(header: str | None, count: int) -> list[str] | None:
    """The engine request ids of a request's `count` sequences (prompts x n samples): the header
    itself for one, "<header>-<k>" for sequence k of several; None without a header (the engine
    numbers them). Raises a 400 naming the header for a value valid_request_id refuses."""
    if header is None:
        return None
    if not valid_request_id(header):
        raise bad_request(HEADER, f"header {HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters "
                                  f"(space to '~'), got {len(header)} characters: send a shorter, plain id")
    return [header] if count == 1 else [f"{header}-{k}" for k in range(count)]
