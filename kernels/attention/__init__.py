"""Attention over a paged KV cache for mixed prefill+decode steps, and its backends."""

from adaptive_sarathi.kernels.attention.metadata import AttentionMetadata, PrefillSpan
from adaptive_sarathi.kernels.attention.reference import (
    gather_context,
    paged_attention_reference,
    write_kv_cache,
)

__all__ = ["AttentionMetadata", "PrefillSpan", "gather_context", "paged_attention_reference", "write_kv_cache"]
