"""The server's budget-policy flags build real policies that drive the real engine."""

import argparse

import pytest

from adaptive_sarathi import SamplingParams
from adaptive_sarathi.cli import _serve_policy, build_parser
from adaptive_sarathi.controller.policy import FixedBudget
from adaptive_sarathi.engine.factory import EngineArgs, create_engine


def serve_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *flags])


@pytest.mark.parametrize("flags", [
    ["--policy", "adaptive", "--slo-policy", "smollm2-cpu-strict"],
    ["--policy", "slack", "--slo", "ttft:2000,tbt:200"],
    ["--policy", "two_level", "--slo", "ttft:2000,tbt:200"],
    ["--policy", "fixed:64:32"],
])
def test_policy_flags_drive_the_engine(flags):
    policy = _serve_policy(serve_args(*flags))
    engine = create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=64), policy)
    assert engine.policy is policy
    ids = [engine.add_request(list(range(1, 40 + 7 * i)), SamplingParams(max_tokens=6, ignore_eos=True))
           for i in range(4)]
    done = {}
    while engine.has_unfinished_requests():
        done.update({o.request_id: o for o in engine.step() if o.finished})
    assert all(len(done[i].token_ids) == 6 for i in ids)


def test_default_is_the_fixed_token_budget():
    assert _serve_policy(serve_args()) is None
    engine = create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=16, token_budget=96))
    assert isinstance(engine.policy, FixedBudget) and engine.policy.budget.token_budget == 96


@pytest.mark.parametrize("flags,fragment", [
    (["--slo", "ttft:1000,tbt:100"], "need --policy"),
    (["--policy", "adaptive"], "adaptive"),
    (["--policy", "magic", "--slo", "ttft:1000,tbt:100"], "magic"),
    (["--policy", "adaptive", "--slo", "ttft:1000", "--slo-policy", "x"], "not both"),
])
def test_bad_policy_flags_name_the_problem(flags, fragment):
    with pytest.raises(ValueError, match=fragment):
        _serve_policy(serve_args(*flags))
