"""The budget controller: SLO policies, the online latency model and the budget policies that
implement the engine's budget contract (adaptive_sarathi.engine.budget: StepBudget, BudgetPolicy,
FixedBudget). The controller imports the engine's contracts and never the service layer
(adaptive_sarathi.*): tests/test_import_floors.py checks it.

Public names are imported lazily, so that importing one policy does not load river and the others.
"""

from typing import Any

_EXPORTS = {
    "AdaptiveBudget": "adaptive_sarathi.controller.adaptive",
    "TwoLevelBudget": "adaptive_sarathi.controller.two_level",
    "SlackBudget": "adaptive_sarathi.controller.slack",
    "make_policy": "adaptive_sarathi.controller.registry",
    "POLICY_SPECS": "adaptive_sarathi.controller.registry",
    "PolicySpecError": "adaptive_sarathi.controller.registry",
    "OnlineLatencyModel": "adaptive_sarathi.controller.latency_model",
    "SLOPolicy": "adaptive_sarathi.controller.slo",
    "SLOPolicyError": "adaptive_sarathi.controller.slo",
    "load_slo_policy": "adaptive_sarathi.controller.slo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adaptive_sarathi.controller' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
