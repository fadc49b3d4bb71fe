"""Fuzz the HTTP server: nothing a client sends may produce a 5xx or stop the engine.

Starts `adaptive-sarathi serve` on the embedded default model (SmolLM2-135M-Instruct) on
127.0.0.1 in a subprocess, then sends a seeded mix of hostile requests interleaved with valid
ones: lone UTF-16 surrogates (prompt, prompt list, stop, chat role and content), extreme numbers
(huge integers, 1e308, -1e400, negatives) in every numeric field, wrong types in every field,
unknown and unsupported fields, huge prompt lists, long prompts, and raw-socket garbage (random
bytes, broken request lines and headers, truncated bodies, lying Content-Length). Checks:
0 responses with a 5xx status, 0 engine deaths (the process alive and /health 200 throughout),
every valid request answered 200 with output. Then measures the TTFT of a 1-token streamed
request sent while a 2,000-prompt request (refused: over --max-prompts-per-request) and while a
64-prompt request (the most accepted) are in flight.

Bounded: at most --requests requests and --time-limit seconds; the server is stopped (SIGTERM)
at the end and must exit 0. Full mode writes experiments/results/fuzz_server.md (or --out);
--smoke sends 300 requests and prints the table only (for CI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_server.md"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
NUMERIC = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "n")
FIELDS = NUMERIC + ("stream", "stop", "stop_token_ids", "ignore_eos", "model", "stream_options", "prompt",
                    "messages", "user", "logprobs", "tools", "functions", "tool_choice", "parallel_tool_calls")
SURROGATES = ("\\ud800", "\\udfff", "\\udbff", "\\udc00x", "a\\ud83d")  # as JSON escapes: lone halves
EXTREME_NUMBERS = ("1" + "0" * 400, "-1" + "0" * 400, "1e308", "-1e308", "1e400", "-1e400", "5e-324", "-0.0",
                   "9223372036854775808", "-9223372036854775809", "18446744073709551616", "0", "-1",
                   "2147483648", "1e-38", "3.5", "1.0000000000000002", "123456789012345678901234567890")
WRONG_VALUES = ('"banana"', "true", "false", "null", "[]", "{}", '[1, "a"]', '{"a": 1}', '""', "[[[]]]",
                '"\\u0000"', "[null]", '["x"]', "0.5")


def valid_case(rng: random.Random) -> tuple[str, bytes, bool]:
    """A request that must succeed: (path, body, streamed)."""
    stream = rng.random() < 0.3
    if rng.random() < 0.5:
        body = {"prompt": rng.choice(["Hello", "The sky is", "1, 2, 3,", "Paris is"]), "max_tokens": rng.randint(1, 3),
                "temperature": rng.choice([0, 0.7, 1e-30]), "stream": stream}
        if rng.random() < 0.3:
            body.update(top_k=rng.randint(1, 50), seed=rng.randint(0, 2 ** 31), stop_token_ids=[2])
        return COMPLETIONS, json.dumps(body).encode(), stream
    body = {"messages": [{"role": "user", "content": rng.choice(["hi", "What is 2+2?", "Name a colour."])}],
            "max_tokens": rng.randint(1, 3), "temperature": 0, "stream": stream}
    return CHAT, json.dumps(body).encode(), stream


def hostile_case(rng: random.Random) -> tuple[str, str, bytes]:
    """A request built to break something: (kind, path, raw body)."""
    # Long prompts are the costly kind to refuse (they are read and tokenized): fewer of them.
    kind = rng.choices(["surrogate", "extreme number", "wrong type", "unknown field", "huge prompt list",
                        "long prompt", "bad structure"], weights=[4, 4, 4, 4, 2, 1, 4])[0]
    path = rng.choice([COMPLETIONS, CHAT])
    base = ('{"prompt": "hi", "max_tokens": 1' if path == COMPLETIONS else
            '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1')
    if kind == "surrogate":
        s = rng.choice(SURROGATES)
        if path == COMPLETIONS:
            body = rng.choice([f'{{"prompt": "{s}", "max_tokens": 1}}', f'{{"prompt": ["ok", "{s}"], "max_tokens": 1}}',
                               f'{{"prompt": "ok", "stop": ["{s}"], "max_tokens": 1}}',
                               f'{{"prompt": "ok", "model": "{s}", "max_tokens": 1}}',
                               f'{{"prompt": "ok", "{s}": 1, "max_tokens": 1}}'])
        else:
            body = rng.choice([f'{{"messages": [{{"role": "{s}", "content": "hi"}}], "max_tokens": 1}}',
                               f'{{"messages": [{{"role": "user", "content": "{s}"}}], "max_tokens": 1}}',
                               f'{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": "{s}"}}]}}]}}',
                               f'{{"messages": [{{"role": "user", "content": "hi", "{s}": 1}}]}}'])
    elif kind == "extreme number":
        fields = rng.sample(NUMERIC, rng.randint(1, 3))
        body = base + "".join(f', "{f}": {rng.choice(EXTREME_NUMBERS)}' for f in fields) + "}"
    elif kind == "wrong type":
        body = base + f', "{rng.choice(FIELDS)}": {rng.choice(WRONG_VALUES)}' + "}"
    elif kind == "unknown field":
        name = rng.choice(["repetition_penalty", "min_p", "best_of", "echo", "suffix", "logit_bias", "guided_json",
                           "presence_penalty", "__proto__", "", "x" * 300, "response_format", "min_tokens"])
        body = base + f', {json.dumps(name)}: {rng.choice(["1", "2.5", "true", "{}", json.dumps("v")])}' + "}"
    elif kind == "huge prompt list":
        n = rng.choice([65, 500, 2000, 20000])
        item = rng.choice(['"x"', "[1]", "[1, 2, 3]"])
        if path == COMPLETIONS:
            body = '{"prompt": [' + ", ".join([item] * n) + '], "max_tokens": 1}'
        else:
            body = '{"messages": [' + ", ".join(['{"role": "user", "content": "hi"}'] * n) + '], "max_tokens": 1}'
    elif kind == "long prompt":
        text = rng.choice(["a", "the ", "\\u00e9", " ", "<|im_start|>"]) * rng.choice([50_000, 200_001, 300_000])
        body = (f'{{"prompt": "{text}", "max_tokens": 1}}' if path == COMPLETIONS else
                f'{{"messages": [{{"role": "user", "content": "{text}"}}], "max_tokens": 1}}')
    else:
        body = rng.choice(["", "null", "[]", "42", '"prompt"', "{", '{"prompt": }', '{"prompt": [1, 2',
                           "[" * 50_000, '{"prompt": "hi", "max_tokens": 1}' * 2, '{"prompt": NaN}',
                           '{"prompt": "hi", "temperature": Infinity}', '{"prompt": [-1]}', '{"prompt": [[]]}',
                           '{"messages": [{"role": "user"}]}', '{"messages": [null]}', '{"prompt": "\\u0000"}'])
    return kind, path, body.encode()


def garbage_bytes(rng: random.Random, port: int) -> bytes:
    """Bytes for a raw connection: broken HTTP of several kinds."""
    choice = rng.randrange(7)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    if choice == 1:
        return b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": \"hi\""
    if choice == 2:
        return b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}"
    if choice == 3:
        return b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"
    if choice == 4:
        return b"POST /v1/completions HTTP/1.1\r\n" + b"X-H: " + b"v" * 20_000 + b"\r\n\r\n"
    if choice == 5:
        return (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"zz\r\nhello\r\n0\r\n\r\n")
    return b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(rng.randrange(256) for _ in range(64))


class Tally:
    def __init__(self) -> None:
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.failures: list[str] = []
        self.valid_sent = self.valid_ok = 0

    def count(self, kind: str, status: int | str) -> None:
        self.status[kind][status] += 1
        if isinstance(status, int) and status >= 500:
            self.failures.append(f"{kind}: HTTP {status}")

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.status.values())

    @property
    def num_5xx(self) -> int:
        return sum(n for c in self.status.values() for s, n in c.items() if isinstance(s, int) and s >= 500)


async def send_valid(session: aiohttp.ClientSession, url: str, path: str, body: bytes, stream: bool,
                     tally: Tally) -> None:
    tally.valid_sent += 1
    try:
        async with session.post(url + path, data=body, headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=300)) as resp:
            raw = await resp.read()
    except asyncio.TimeoutError:
        tally.count("valid", "no answer in 300 s")
        tally.failures.append(f"valid {path}: no answer in 300 s")
        return
    except aiohttp.ClientError as err:  # refused, reset or not accepted in time: a failure, counted
        tally.count("valid", f"connection failed ({type(err).__name__})")
        tally.failures.append(f"valid {path}: {err!r}")
        return
    tally.count("valid", resp.status)
    ok = resp.status == 200
    if ok and stream:
        ok = raw.rstrip().endswith(b"data: [DONE]") and b'"error"' not in raw
    elif ok:
        choice = json.loads(raw)["choices"][0]
        ok = choice["finish_reason"] in ("stop", "length")
    if ok:
        tally.valid_ok += 1
    else:
        tally.failures.append(f"valid {path} answered {resp.status}: {raw[:200]!r}")


async def send_hostile(session: aiohttp.ClientSession, url: str, kind: str, path: str, body: bytes,
                       tally: Tally) -> None:
    try:
        async with session.post(url + path, data=body, headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
        tally.count(kind, resp.status)
    except aiohttp.ClientError as err:  # the server may close on a body over the limit
        tally.count(kind, f"closed ({type(err).__name__})")
    except asyncio.TimeoutError:  # e.g. a chat whose max_tokens was fuzzed away runs to the window
        tally.count(kind, "client gave up (60 s)")


async def send_garbage(port: int, data: bytes, tally: Tally) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=5)
        writer.close()
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else "no reply"
    except (OSError, asyncio.TimeoutError):
        status = "closed"
    tally.count("raw socket", status)


async def ttft_beside(url: str, session: aiohttp.ClientSession, big: bytes, repeats: int) -> tuple[float, set]:
    """Worst TTFT of a 1-token streamed request sent 50 ms after `big`, over `repeats` tries; and
    the statuses `big` got."""
    small = json.dumps({"prompt": "Hi", "max_tokens": 1, "temperature": 0, "stream": True}).encode()
    worst, statuses = 0.0, set()

    async def big_request():
        async with session.post(url + COMPLETIONS, data=big, headers={"Content-Type": "application/json"}) as r:
            await r.read()
            statuses.add(r.status)

    for _ in range(repeats):
        task = asyncio.ensure_future(big_request())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        async with session.post(url + COMPLETIONS, data=small, headers={"Content-Type": "application/json"}) as r:
            await r.content.readline()
            worst = max(worst, time.monotonic() - start)
            await r.read()
        await task
    return worst, statuses


async def healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url + "/health") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def fuzz(url: str, port: int, args: argparse.Namespace, process: subprocess.Popen) -> dict:
    rng = random.Random(args.seed)
    tally = Tally()
    deaths = 0
    limit = asyncio.Semaphore(args.concurrency)
    deadline = time.monotonic() + args.time_limit
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one(i: int) -> None:
            async with limit:
                if time.monotonic() > deadline:
                    return
                r = rng.random()
                if r < args.valid_fraction:
                    await send_valid(session, url, *valid_case(rng), tally)
                elif r < args.valid_fraction + 0.05:
                    await send_garbage(port, garbage_bytes(rng, port), tally)
                else:
                    await send_hostile(session, url, *hostile_case(rng), tally)

        start = time.monotonic()
        batch = 500
        for first in range(0, args.requests, batch):
            await asyncio.gather(*(one(i) for i in range(first, min(first + batch, args.requests))))
            if process.poll() is not None or not await healthy(session, url):
                deaths += 1
                break
            if time.monotonic() > deadline:
                break
        elapsed = time.monotonic() - start
        ttft_2000, big_status = await ttft_beside(
            url, session, json.dumps({"prompt": ["x"] * 2000, "max_tokens": 1}).encode(), 3 if args.smoke else 10)
        ttft_64, status_64 = await ttft_beside(
            url, session, json.dumps({"prompt": ["x"] * 64, "max_tokens": 1}).encode(), 3 if args.smoke else 10)
        alive = process.poll() is None and await healthy(session, url)
    return {"tally": tally, "deaths": deaths + (0 if alive else 1), "elapsed_s": elapsed, "ttft_2000": ttft_2000,
            "status_2000": big_status, "ttft_64": ttft_64, "status_64": status_64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not answer /health within {timeout_s} s")


def table(result: dict, args: argparse.Namespace, load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    tally: Tally = result["tally"]
    lines = ["| kind | sent | statuses |", "|---|---|---|"]
    for kind in sorted(tally.status):
        counts = tally.status[kind]
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items(), key=lambda kv: str(kv[0])))
        lines.append(f"| {kind} | {sum(counts.values())} | {shown} |")
    checks = [
        ("requests sent", f"{tally.total} in {result['elapsed_s']:.0f} s (seed {args.seed}, concurrency "
                          f"{args.concurrency})"),
        ("5xx responses", f"{tally.num_5xx} (must be 0)"),
        ("engine deaths", f"{result['deaths']} (must be 0)"),
        ("valid requests answered with output", f"{tally.valid_ok} of {tally.valid_sent} (must be all)"),
        ("TTFT of a 1-token request beside a 2,000-prompt request", f"worst {result['ttft_2000']:.3f} s "
         f"(must be < 1 s; the big one got {sorted(result['status_2000'])})"),
        ("TTFT of a 1-token request beside a 64-prompt request (the most accepted)",
         f"worst {result['ttft_64']:.3f} s (the big one got {sorted(result['status_64'])})"),
        ("server exit after SIGTERM", str(result.get("exit_code"))),
        ("machine load (1/5/15 min) at start / end",
         f"{'/'.join(f'{x:.1f}' for x in load[0])} / {'/'.join(f'{x:.1f}' for x in load[1])} on "
         f"{os.cpu_count()} cores (shared)"),
    ]
    lines += ["", "| check | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in checks]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="300 requests, print only (for CI)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds of fuzzing at most")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.time_limit = min(args.requests, 300), min(args.time_limit, 120.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load_start = os.getloadavg()
    command = [sys.executable, "-m", "adaptive_sarathi.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--num-kv-blocks", "256"]
    # The server's log goes to a file: a pipe nobody reads fills up (64 KiB) and then blocks the
    # server's event loop on its next log line, which looks exactly like a hung server.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_ready(url, process, timeout_s=300)
        result = asyncio.run(fuzz(url, port, args, process))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    result["exit_code"] = process.returncode
    log.seek(0)
    stderr = log.read()
    text = table(result, args, (load_start, os.getloadavg()))
    print(text)
    tally: Tally = result["tally"]
    ok = (tally.num_5xx == 0 and result["deaths"] == 0 and tally.valid_ok == tally.valid_sent
          and result["ttft_2000"] < 1.0 and process.returncode == 0)
    if not ok:
        print("\nFAILED:", *tally.failures[:20], stderr[-3000:], sep="\n", file=sys.stderr)
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        args.out.write_text(f"# Server fuzzing ({stamp})\n\n`python experiments/fuzz_server.py "
                            f"--requests {args.requests} --seed {args.seed}` against `adaptive-sarathi serve` "
                            f"on the embedded SmolLM2-135M-Instruct, CPU.\n\n{text}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
