"""Frozen per-component configs. Facts found at run time (KV block count, EOS id) live elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULER_NAMES = ("sarathi", "vllm", "orca", "request_level")


@dataclass(frozen=True)
class SchedulerConfig:
    """How the scheduler admits and batches requests. The token budget is NOT here: it is an
    argument of every step (see StepBudget)."""

    name: str = "sarathi"
    max_num_seqs: int = 256
    max_model_len: int = 8192
    block_size: int = 16
    watermark: float = 0.01  # fraction of KV blocks new admissions must leave free
    enable_prefix_caching: bool = True  # reuse the KV of full blocks whose tokens another request computed

    def __post_init__(self) -> None:
        if self.name not in SCHEDULER_NAMES:
            raise ValueError(f"scheduler={self.name!r} is unknown: use one of {', '.join(SCHEDULER_NAMES)}")
        for field_name in ("max_num_seqs", "max_model_len", "block_size"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field_name}={value!r} is invalid: use an integer >= 1")
        if not isinstance(self.enable_prefix_caching, bool):
            raise ValueError(f"enable_prefix_caching={self.enable_prefix_caching!r} is invalid: use true or false")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark={self.watermark!r} is invalid: use a fraction in [0, 1)")

