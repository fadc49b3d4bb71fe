"""experiments/real_gpu_slo_run.TimedPolicy: the timing wrapper hands the engine the wrapped
policy's answers for every BudgetPolicy method (deadlines and admission included)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import load_slo_policy
from adaptive_sarathi.engine.budget import BudgetPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from real_gpu_slo_run import TimedPolicy  # noqa: E402

TIERED = load_slo_policy("llama-3-8b-h100-tiered")


def test_every_budget_policy_method_is_passed_through():
    interface = {name for name, value in vars(BudgetPolicy).items()
                 if not name.startswith("_") and (inspect.isfunction(value) or not callable(value))}
    overridden = {name for name in interface if getattr(TimedPolicy, name) is not getattr(BudgetPolicy, name)}
    assert overridden == interface


def test_deadlines_come_from_the_wrapped_policy():
    policy = make_policy("fixed:1024:edf", TIERED)
    timed = TimedPolicy(policy)
    assert timed.slo_targets() == policy.slo_targets() is not None
    assert timed.slo_targets().targets_for("interactive").ttft_s == 1.0
