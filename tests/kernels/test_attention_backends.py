"""select_attention: names, device rules, clear errors, and no triton/flash-attn import until asked."""

import importlib.util
import subprocess
import sys

import pytest
import torch

from adaptive_sarathi.kernels.attention import paged_attention_reference
from adaptive_sarathi.kernels.attention.backends import ATTENTION_BACKENDS, select_attention


def test_names():
    assert ATTENTION_BACKENDS == ("auto", "torch", "triton", "flash_attn")
    with pytest.raises(ValueError, match="auto, torch, triton, flash_attn"):
        select_attention(torch.device("cpu"), "xformers")


def test_cpu_gets_the_reference():
    assert select_attention(torch.device("cpu")) is paged_attention_reference
    assert select_attention(torch.device("cpu"), "torch") is paged_attention_reference


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs a CUDA device.*TRITON_INTERPRET=1"):
        select_attention(torch.device("cpu"), "triton")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_on_cpu_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select_attention(torch.device("cpu"), "triton").__name__ == "triton_paged_attention"


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attn_missing_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        select_attention(torch.device("cpu"), "flash_attn")
    with pytest.raises(ValueError, match="pip install flash-attn"):
        select_attention(torch.device("cuda"), "flash_attn")


def test_importing_kernels_imports_neither_triton_nor_flash_attn():
    code = ("import sys, torch; from adaptive_sarathi.kernels.attention.backends import select_attention; "
            "import adaptive_sarathi.kernels; select_attention(torch.device('cpu')); "
            "print(sorted(m for m in ('triton', 'flash_attn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.gpu
def test_auto_on_gpu_is_triton():
    assert select_attention(torch.device("cuda")).__name__ == "triton_paged_attention"
