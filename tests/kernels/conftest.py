"""Kernel tests: without a CUDA device the Triton kernels run in Triton's interpreter on CPU
tensors. The switch is read when a kernel is defined, so it is set here, before any test module
of this directory imports the kernels."""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
