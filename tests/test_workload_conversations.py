"""The multi-turn conversation workload, its shareable-token count, and the simulator's prefix
cache on it (hit rate against the theoretical share; plain workloads share nothing)."""

import pytest

from adaptive_sarathi.engine.budget import FixedBudget
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.latency.roofline import roofline_from_spec
from adaptive_sarathi.engine.simulator import simulate
from adaptive_sarathi.workloads import Fixed, LogNormal, SyntheticLengths, Uniform, WorkloadError, WorkloadRequest
from adaptive_sarathi.workloads import single_phase
from adaptive_sarathi.workloads.conversations import ConversationWorkload, shareable_prompt_tokens


def chat(**kw) -> ConversationWorkload:
    base = dict(num_conversations=40, conversation_qps=1.0, turns=Uniform(2, 6), user_tokens=LogNormal(60, 0.5),
                output_tokens=LogNormal(80, 0.5, max=300), system_prompt_tokens=100, num_system_prompts=3,
                think_time_s=10.0, max_context_tokens=2000, seed=3)
    return ConversationWorkload(**{**base, **kw})


def test_each_turn_resends_the_conversation_so_far():
    requests = chat().generate()
    assert [r.arrival_time_s for r in requests] == sorted(r.arrival_time_s for r in requests)
    by_conversation: dict[tuple, list[WorkloadRequest]] = {}
    for r in requests:
        assert len(r.prompt_token_ids) == r.num_prompt_tokens and len(r.output_token_ids) == r.num_output_tokens
        assert r.num_prompt_tokens + r.num_output_tokens <= 2000
        by_conversation.setdefault(r.prompt_token_ids[:108], []).append(r)  # header + 8 user tokens
    headers = {r.prompt_token_ids[:100] for r in requests}
    assert len(headers) == 3
    assert len(by_conversation) == 40
    for turns in by_conversation.values():
        assert [t.turn for t in turns] == list(range(len(turns)))
        for before, after in zip(turns, turns[1:]):
            assert after.arrival_time_s > before.arrival_time_s
            history = before.prompt_token_ids + before.output_token_ids
            assert after.prompt_token_ids[:len(history)] == history
            assert after.num_prompt_tokens > len(history)


def test_scaling_runs_the_same_conversations_faster():
    w = chat()
    fast = w.scaled(4.0)
    a, b = w.generate(), fast.generate()
    assert [r.prompt_token_ids for r in a] == [r.prompt_token_ids for r in b]
    assert [r.arrival_time_s / 4.0 for r in a] == pytest.approx([r.arrival_time_s for r in b])
    assert fast.mean_qps == pytest.approx(4.0 * w.mean_qps)
    assert w.mean_qps == pytest.approx(len(a) / 40)


@pytest.mark.parametrize("field, value", [("num_conversations", 0), ("conversation_qps", 0.0),
                                          ("think_time_s", -1.0), ("system_prompt_tokens", -1),
                                          ("max_context_tokens", 1), ("slo_class", " x")])
def test_bad_fields_are_named(field, value):
    with pytest.raises(WorkloadError, match=field):
        chat(**{field: value})


def test_shareable_tokens_count_full_blocks_of_earlier_requests():
    a = WorkloadRequest(0.0, 10, 7, None, tuple(range(10)), tuple(range(100, 107)))
    # a computed 10 + 6 tokens: blocks [0..3], [4..7], [8, 9, 100, 101], [102..105] of 4
    b = WorkloadRequest(1.0, 17, 1, None, tuple(range(10)) + tuple(range(100, 107)), (1,))
    c = WorkloadRequest(2.0, 9, 1, None, tuple(range(8)) + (55,), (1,))
    d = WorkloadRequest(3.0, 8, 1, None, tuple(range(8)), (1,))  # its last block is recomputed
    e = WorkloadRequest(4.0, 8, 1)  # no token ids: shares nothing
    assert shareable_prompt_tokens([a], 4) == 0
    assert shareable_prompt_tokens([a, b], 4) == 16
    assert shareable_prompt_tokens([a, c], 4) == 8
    assert shareable_prompt_tokens([a, d], 4) == 4
    assert shareable_prompt_tokens([a, b, c, d, e], 4) == 16 + 8 + 4


def test_simulated_hit_rate_matches_the_shareable_tokens():
    requests = chat(num_conversations=60).generate()
    theory = shareable_prompt_tokens(requests, 16) / sum(r.num_prompt_tokens for r in requests)
    model = roofline_from_spec("h100:llama-3-8b")
    on = simulate(requests, SchedulerConfig(name="sarathi"), FixedBudget(512), model, num_kv_blocks=100_000)
    off = simulate(requests, SchedulerConfig(name="sarathi", enable_prefix_caching=False), FixedBudget(512), model,
                   num_kv_blocks=100_000)
    assert theory > 0.5
    assert abs(on.prefix_cache_hit_rate - theory) <= 0.02
    assert off.prefix_cache_hit_rate == 0.0
    assert on.ttft.p50 < off.ttft.p50


def test_prompts_without_token_ids_share_nothing_in_the_simulator():
    workload = single_phase(SyntheticLengths(Fixed(300), Fixed(20)), 50.0, num_requests=50).generate()
    result = simulate(workload, SchedulerConfig(name="sarathi"), FixedBudget(512), roofline_from_spec("h100:llama-3-8b"),
                      num_kv_blocks=10_000)
    assert result.num_cached_prompt_tokens == 0 and result.num_prompt_tokens == 50 * 300


# -- conversations in a workload file -------------------------------------------------------------

CONVERSATIONS_YAML = """
conversations:
  num_conversations: 40
  conversation_qps: 1.0
  turns: {dist: uniform, low: 2, high: 6}
  user_tokens: {dist: lognormal, median: 60, sigma: 0.5}
  output_tokens: {dist: lognormal, median: 80, sigma: 0.5, max: 300}
  system_prompt_tokens: 100
  num_system_prompts: 3
  think_time_s: 10
  max_context_tokens: 2000
"""


def test_a_conversations_file_is_the_python_workload(tmp_path):
    from adaptive_sarathi.workloads import load_workload

    path = tmp_path / "conv.yaml"
    path.write_text(CONVERSATIONS_YAML)
    loaded = load_workload(path, seed=3)
    assert loaded == chat()
    assert loaded.generate() == chat().generate()
    assert load_workload(path, seed=4).generate() != loaded.generate()  # the seed is the caller's
    path.write_text(CONVERSATIONS_YAML + "  slo_class: interactive\n")
    assert load_workload(path).slo_classes == {"interactive"}


def test_the_shipped_conversation_example_is_the_experiments_chat_workload():
    import sys
    from pathlib import Path

    from adaptive_sarathi.workloads import load_workload

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    try:
        import prefix_caching
    finally:
        sys.path.pop(0)
    assert load_workload("chat_conversations") == prefix_caching.chat(400, 0)


@pytest.mark.parametrize("body,message", [
    ("conversations: [1]", "conversations: must be a mapping"),
    ("conversations: {num_conversations: 4}",
     "conversations: conversation_qps, turns, user_tokens, output_tokens: missing"),
    ("conversations: {num_conversations: 4, conversation_qps: 1, turns: 2, user_tokens: 5, output_tokens: 5, "
     "think: 3}", r"conversations: unknown key\(s\) \['think'\]"),
    ("conversations: {num_conversations: 4, conversation_qps: 1, turns: {dist: zipf}, user_tokens: 5, "
     "output_tokens: 5}", "conversations: turns: must be an integer or a mapping with dist"),
    ("conversations: {num_conversations: 4, conversation_qps: 1, turns: 2, user_tokens: 5, output_tokens: 5, "
     "think_time_s: 0}", "conversations: think_time_s=0 is invalid: use a finite number > 0"),
    ("conversations: {num_conversations: 0, conversation_qps: 1, turns: 2, user_tokens: 5, output_tokens: 5}",
     "conversations: num_conversations=0 is invalid"),
    ("conversations: {num_conversations: 4, conversation_qps: 1, turns: 2, user_tokens: 5, output_tokens: 5}\n"
     "phases: []", "either a 'phases' list or a 'conversations' mapping"),
])
def test_bad_conversation_files_name_the_field_and_the_fix(tmp_path, body, message):
    from adaptive_sarathi.workloads import load_workload

    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(WorkloadError, match=message):
        load_workload(path)


def test_a_conversations_file_simulates_with_its_sharing(tmp_path):
    from adaptive_sarathi.workloads import load_workload

    path = tmp_path / "conv.yaml"
    path.write_text(CONVERSATIONS_YAML)
    workload = load_workload(path).scaled(0.25)  # turns far apart: every answer is done before the next turn
    requests = workload.generate()
    theory = shareable_prompt_tokens(requests, 16) / sum(r.num_prompt_tokens for r in requests)
    result = simulate(requests, SchedulerConfig(name="sarathi", block_size=16, max_model_len=4096), FixedBudget(512),
                      roofline_from_spec("h100:llama-3-8b"), num_kv_blocks=20000)
    assert theory > 0.5 and abs(result.prefix_cache_hit_rate - theory) < 0.02
