"""Every shell command in README.md's ```bash blocks runs as written, so that the examples cannot rot.

The commands run in a scratch directory that links the repository's `.venv` and `examples/`, in
README order, after the README's `serve` command has been started on a free port (which replaces
port 8000 in the other commands). Skipped: `make run` / `make test` (the set-up commands, which
would run a server and this suite) and GPU-only commands (`profile`) without a GPU.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND_TIMEOUT_S = 120
SERVER_START_TIMEOUT_S = 90

def readme_commands(text: str) -> list[list[str]]:
    """The argument lists of the commands in the ```bash blocks of `text`: continuation lines
    joined, comments dropped, blank lines skipped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args:
                commands.append(args)
    return commands


def _skipped(args: list[str]) -> bool:
    if args[0] == "make":
        return True
    return "profile" in args[1:2] and not _has_gpu()


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_port(args: list[str], port: int) -> list[str]:
    return [re.sub(r"(localhost|127\.0\.0\.1):8000\b", rf"\g<1>:{port}", a) for a in args]


def _wait_healthy(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"serve exited with {server.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"serve was not healthy within {SERVER_START_TIMEOUT_S} s")


def _outputs(args: list[str]) -> list[str]:
    """The files a command says it writes (--json, --out)."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--json", "--out")]


def test_readme_commands_extracted():
    commands = readme_commands((REPO / "README.md").read_text())
    assert [c[:2] for c in commands if c[0] == "make"] == [["make", "run"], ["make", "test"]]
    subcommands = {c[1] for c in commands if c[0].endswith("adaptive-sarathi")}
    assert {"generate", "chat", "serve", "bench", "simulate", "capacity", "tune"} <= subcommands
    assert any(c[0] == "curl" for c in commands)


@pytest.mark.slow
def test_readme_commands_run(tmp_path):
    venv = REPO / ".venv" if (REPO / ".venv").is_dir() else Path(sys.prefix)
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    commands = [c for c in readme_commands((REPO / "README.md").read_text()) if not _skipped(c)]
    serves = [c for c in commands if c[1:2] == ["serve"]]
    assert len(serves) == 1, "the test starts exactly one README serve command"
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The log goes to a file: an unread pipe fills at 64 KiB and then blocks the server's event loop.
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([*serves[0], "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        _wait_healthy(port, server)
        for args in commands:
            if args is serves[0]:
                continue
            args = _with_port(args, port)
            done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
            assert done.returncode == 0, f"{shlex.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
            assert done.stdout.strip(), f"{shlex.join(args)} printed nothing"
            for path in _outputs(args):
                assert (tmp_path / path).is_file(), f"{shlex.join(args)} did not write {path}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    log.seek(0)
    assert server.returncode == 0, log.read()[-3000:]
