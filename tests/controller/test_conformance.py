"""One conformance test over every budget policy spec: river's estimator habits (convention 8)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from adaptive_sarathi.controller.synthetic import SyntheticStream
from adaptive_sarathi.engine.budget import StepBudget

from policy_fixtures import POLICY_CASES, SLO, TRUTH, build, extreme_states


def within_bounds(budget: StepBudget) -> bool:
    b = SLO.bounds
    chunk_ok = budget.max_chunk is None or b.min_chunk <= budget.max_chunk <= b.max_chunk
    return b.min_token_budget <= budget.token_budget <= b.max_token_budget and chunk_ok


def drive(policy, stream: SyntheticStream, steps: int) -> list[StepBudget]:
    return [r.budget for r in stream.run(policy, steps)]


@pytest.mark.parametrize("spec,with_prior", [(s, p) for _, s, p in POLICY_CASES], ids=[i for i, _, _ in POLICY_CASES])
def test_policy_conformance(spec: str, with_prior: bool):
    fresh = build(spec, with_prior, seed=7)

    # A safe answer before any observation, for ordinary and extreme states alike.
    for s in extreme_states():
        assert within_bounds(build(spec, with_prior).decide(s)), s

    # Seeded determinism: same seed, same stream -> the same decisions, step for step.
    a, b = build(spec, with_prior, seed=7), build(spec, with_prior, seed=7)
    budgets_a = drive(a, SyntheticStream(TRUTH, seed=3), 400)
    assert budgets_a == drive(b, SyntheticStream(TRUTH, seed=3), 400)

    # Budgets within the SLO bounds on a long stream and on extreme states after learning.
    assert all(within_bounds(x) for x in budgets_a)
    assert all(within_bounds(a.decide(s)) for s in extreme_states())

    # Pickle round trip, fresh and after observations: the copy decides exactly like the original.
    for policy in (build(spec, with_prior), a):
        stream = SyntheticStream(TRUTH, seed=5)
        drive(policy, stream, 50)
        twin, twin_stream = pickle.loads(pickle.dumps((policy, stream)))
        assert drive(policy, stream, 200) == drive(twin, twin_stream, 200)

    # clone(): equal parameters, unfitted (it decides like a fresh policy, not like the trained one).
    clone = a.clone()
    assert repr(clone) == repr(fresh) and type(clone) is type(a)
    assert drive(clone, SyntheticStream(TRUTH, seed=11), 300) == drive(fresh, SyntheticStream(TRUTH, seed=11), 300)

    # No mutation of inputs: states and stats are frozen, and equal to deep copies taken before.
    recorder = _Recorder(build(spec, with_prior))
    SyntheticStream(TRUTH, seed=9).run(recorder, 200)
    for given, before in recorder.inputs:
        assert dataclasses.is_dataclass(given) and given.__dataclass_params__.frozen
        assert given == before


class _Recorder:
    """Passes calls on to a policy, keeping every input with a deep copy taken before the call."""

    def __init__(self, policy):
        self.policy = policy
        self.inputs = []

    def decide(self, state):
        self.inputs.append((state, copy.deepcopy(state)))
        return self.policy.decide(state)

    def observe(self, stats):
        self.inputs.append((stats, copy.deepcopy(stats)))
        self.policy.observe(stats)

    def slo_targets(self):
        return self.policy.slo_targets()
