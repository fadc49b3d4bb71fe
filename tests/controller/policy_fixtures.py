"""Shared builders for the controller tests: engine states, step stats and every policy spec."""

from __future__ import annotations

from adaptive_sarathi.engine.budget import BudgetPolicy
from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import SLOPolicy, load_slo_policy
from adaptive_sarathi.controller.synthetic import ToyLatency
from adaptive_sarathi.engine.latency.shape import StepShape
from adaptive_sarathi.engine.stats import EngineState, StepStats

SLO: SLOPolicy = load_slo_policy("llama-3-8b-h100-strict")
TRUTH = ToyLatency()

# (id, spec, whether the policy gets the true latency model as its prior)
POLICY_CASES = [
    ("fixed", "fixed:512", False),
    ("fixed-chunk", "fixed:1024:256", False),
    ("two_level", "two_level", False),
    ("two_level-args", "two_level:256:2048", False),
    ("slack", "slack", False),
    ("slack-prior", "slack", True),
    ("adaptive", "adaptive", False),
    ("adaptive-prior", "adaptive", True),
]


def build(spec: str, with_prior: bool, seed: int = 0, slo: SLOPolicy = SLO) -> BudgetPolicy:
    return make_policy(spec, slo, prior=TRUTH if with_prior else None, seed=seed)


WATERMARK = 0.01  # SchedulerConfig.watermark's default


def state(block_size: int = 16, **fields) -> EngineState:
    """An EngineState with plausible defaults (16 decodes of 1k context, a short queue); the
    admissible KV tokens follow from the block counts by the scheduler's watermark rule
    (floor(WATERMARK x blocks) reserved) unless given."""
    values = dict(now_s=10.0, num_waiting=4, num_running=17, num_decodes=16, num_free_blocks=5000,
                  num_total_blocks=10000, decode_context_tokens=16 * 1024, running_prefill_tokens=800,
                  waiting_prefill_tokens=4000, oldest_waiting_age_s=0.1, max_decode_gap_s=0.0)
    values.update(fields)
    reserved = int(WATERMARK * values["num_total_blocks"])
    values.setdefault("admissible_free_tokens", max(0, values["num_free_blocks"] - reserved) * block_size)
    values.setdefault("admissible_kv_tokens", (values["num_total_blocks"] - reserved) * block_size)
    return EngineState(block_size=block_size, **values)


def stats(**fields) -> StepStats:
    """A StepStats of a mixed step (16 decodes + 512 prefill tokens) with its ToyLatency duration."""
    shape = dict(num_prefill_tokens=512, num_decode_tokens=16, num_prefill_seqs=1, sum_context_tokens=16 * 1024 + 512)
    shape.update({k: fields.pop(k) for k in list(fields) if k in shape})
    values = dict(step_index=0, start_time_s=10.0, duration_s=0.0, shape=StepShape(**shape), num_seqs=17,
                  num_waiting=4, num_running=17, num_free_blocks=5000, num_total_blocks=10000, num_preempted=0,
                  token_budget=528, max_chunk=512, first_token_latencies_s=(), max_token_gap_s=0.03)
    values.update(fields)
    if not values["duration_s"]:
        values["duration_s"] = TRUTH.step_time(values["shape"])
    return StepStats(**values)


def extreme_states() -> list[EngineState]:
    """States at the edges: empty, no decodes, more decodes than any budget, late decodes."""
    return [
        state(num_waiting=0, num_running=0, num_decodes=0, decode_context_tokens=0, running_prefill_tokens=0,
              waiting_prefill_tokens=0, oldest_waiting_age_s=0.0),
        state(num_decodes=0, num_running=2, decode_context_tokens=0, waiting_prefill_tokens=100_000,
              oldest_waiting_age_s=30.0),
        state(num_decodes=20_000, num_running=20_000, decode_context_tokens=20_000 * 4096),
        state(max_decode_gap_s=5.0),
        state(num_decodes=1, num_running=1, decode_context_tokens=10, running_prefill_tokens=0,
              waiting_prefill_tokens=0, num_waiting=0, oldest_waiting_age_s=0.0),
        state(oldest_waiting_age_s=1e6, waiting_prefill_tokens=10**9, num_waiting=10**5),
    ]
