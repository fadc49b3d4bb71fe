"""The server's budget-policy flags build real policies that drive the real engine."""

import argparse
from dataclasses import replace

import pytest

from adaptive_sarathi.controller.adaptive import _KV_HORIZON_STEPS

from adaptive_sarathi import SamplingParams
from adaptive_sarathi.cli import _serve_engine_args, _serve_policy, build_parser
from adaptive_sarathi.engine.budget import FixedBudget
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


def test_serve_block_size_32_with_the_adaptive_policy_plans_kv_room_in_blocks_of_32():
    args = serve_args("--model", "dummy:tiny", "--num-kv-blocks", "200", "--block-size", "32",
                      "--policy", "adaptive", "--slo-policy", "smollm2-cpu-strict")
    engine = create_engine(_serve_engine_args(args), _serve_policy(args))
    for i in range(3):
        engine.add_request(list(range(1, 50 + 20 * i)), SamplingParams(max_tokens=8, ignore_eos=True))
    for _ in range(3):
        engine.step()
    state = engine.state()
    blocks = engine.scheduler.block_manager
    assert state.block_size == 32 and blocks.block_size == 32
    # Blocks above the scheduler's admission watermark (floor(1%) of 200 = 2), 32 tokens each.
    assert state.admissible_free_tokens == (blocks.num_free_blocks - 2) * 32
    assert state.admissible_kv_tokens == 198 * 32
    assert state.num_decodes > 0
    # The policy's KV-room arithmetic plans with those 32-token blocks.
    # The policy sizes prompt tokens by the state's KV room: with 30 blocks of 32 free above the
    # watermark, the largest budget keeps room for the decodes to grow and takes the rest.
    tight = replace(state, admissible_free_tokens=30 * 32)
    budget, chunk = engine.policy._fit_kv(tight, engine.policy.slo.bounds.max_token_budget)
    kv_room = 30 * 32 - state.num_decodes * _KV_HORIZON_STEPS
    assert budget == state.num_decodes + kv_room and chunk == kv_room


def test_serve_hands_the_slo_policy_it_read_to_the_server_and_the_budget_policy(monkeypatch):
    import adaptive_sarathi.server as server
    from adaptive_sarathi.cli import main

    calls = []
    monkeypatch.setattr(server, "run_server", lambda engine_args, args, policy: calls.append((args, policy)) or 0)
    assert main(["serve", "--model", "dummy:tiny", "--policy", "adaptive", "--slo-policy",
                 "llama-3-8b-h100-tiered"]) == 0
    (args, policy), = calls
    assert args.slo.name == "llama-3-8b-h100-tiered" and args.slo.class_names == ("interactive", "batch")
    assert policy.slo is args.slo  # one policy: the classes requests name are the targets served
    assert main(["serve", "--model", "dummy:tiny"]) == 0
    assert calls[1][0].slo is None
