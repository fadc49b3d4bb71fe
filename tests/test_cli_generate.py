"""`adaptive-sarathi generate` and `chat` on the embedded default model, as a user runs them."""

import subprocess
import sys

import pytest

# Each test starts the CLI in a fresh interpreter (torch import, model load): seconds apiece.
pytestmark = pytest.mark.slow


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "adaptive_sarathi.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.embedded_model
def test_generate_prints_prompt_and_continuation():
    r = run_cli("generate", "The capital of France is", "--max-tokens", "6")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is")
    assert "Paris" in r.stdout
    assert "6 tokens, finish=length" in r.stderr


@pytest.mark.embedded_model
def test_chat_answers_through_the_template():
    r = run_cli("chat", "What is the capital of France? Answer in one word.", "--max-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_bad_flag_value_is_a_clear_error():
    r = run_cli("generate", "hi", "--max-tokens", "0")
    assert r.returncode == 2
    assert "max_tokens=0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("generate", "hi", "--model", "/no/such/model")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
