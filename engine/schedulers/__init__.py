"""Schedulers: Sarathi-Serve and the baselines it is compared with, behind one factory."""

from __future__ import annotations

from adaptive_sarathi.engine.block_manager import BlockManager
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.schedulers.base import RequestUpdate, Scheduler
from adaptive_sarathi.engine.schedulers.common import QueueScheduler, StepBuilder
from adaptive_sarathi.engine.schedulers.orca import OrcaScheduler
from adaptive_sarathi.engine.schedulers.request_level import RequestLevelScheduler
from adaptive_sarathi.engine.schedulers.sarathi import SarathiScheduler
from adaptive_sarathi.engine.schedulers.vllm import VllmScheduler

SCHEDULER_CLASSES: dict[str, type[QueueScheduler]] = {
    "sarathi": SarathiScheduler,
    "vllm": VllmScheduler,
    "orca": OrcaScheduler,
    "request_level": RequestLevelScheduler,
}


def make_scheduler(config: SchedulerConfig, num_blocks: int) -> QueueScheduler:
    """Build the scheduler `config.name` with a fresh BlockManager of `num_blocks` KV blocks
    (block_size from the config, watermark = floor(config.watermark * num_blocks) blocks, prefix
    caching as config.enable_prefix_caching says).
    Raises ValueError when num_blocks < 1 or the watermark leaves no usable block."""
    watermark_blocks = int(config.watermark * num_blocks)
    block_manager = BlockManager(num_blocks, config.block_size, watermark_blocks,
                                 enable_caching=config.enable_prefix_caching)
    return SCHEDULER_CLASSES[config.name](config, block_manager)


__all__ = [
    "BlockManager",
    "OrcaScheduler",
    "QueueScheduler",
    "RequestLevelScheduler",
    "RequestUpdate",
    "SCHEDULER_CLASSES",
    "SarathiScheduler",
    "Scheduler",
    "StepBuilder",
    "VllmScheduler",
    "make_scheduler",
]
