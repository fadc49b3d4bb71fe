"""Workloads: trace and synthetic lengths, Poisson and gamma arrivals, phased YAML files, errors."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_sarathi.workloads import (ArrivalProcess, Fixed, LogNormal, Mix, MixComponent, Phase, RecordedWorkload,
                                        SyntheticLengths, TraceLengths, Uniform, WorkloadError, WorkloadRequest,
                                        WorkloadSpec, load_trace, load_workload, resolve_trace, single_phase,
                                        workload_from_flags)
from adaptive_sarathi.workloads.conversations import ConversationWorkload
from adaptive_sarathi.workloads.traces import SHARED_TRACES


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "mini.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
                    "100,10,110,10\n2000,50,2050,40\n300,300,600,1\n")
    return path


def gaps(times: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], times]))


def test_poisson_arrivals_have_the_requested_rate_and_unit_cv():
    times = ArrivalProcess(5.0).times(np.random.default_rng(0), 0.0, num_requests=20_000)
    g = gaps(times)
    assert g.mean() == pytest.approx(0.2, rel=0.02)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.03)
    assert np.all(g > 0)


def test_gamma_arrivals_have_the_requested_cv():
    g = gaps(ArrivalProcess(2.0, cv=3.0).times(np.random.default_rng(1), 0.0, num_requests=50_000))
    assert g.mean() == pytest.approx(0.5, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(3.0, rel=0.1)


def test_arrivals_scale_with_the_rate_and_duration_bounds_them():
    a = ArrivalProcess(1.0).times(np.random.default_rng(7), 10.0, num_requests=100)
    b = ArrivalProcess(4.0).times(np.random.default_rng(7), 10.0, num_requests=100)
    assert np.allclose(b - 10.0, (a - 10.0) / 4)  # same draws, a quarter of the gaps
    c = ArrivalProcess(50.0).times(np.random.default_rng(7), 2.0, duration_s=10.0)
    assert c.min() >= 2.0 and c.max() < 12.0 and len(c) == pytest.approx(500, rel=0.15)


def test_length_distributions():
    rng = np.random.default_rng(0)
    assert set(Fixed(7).sample(rng, 5)) == {7}
    u = Uniform(3, 5).sample(rng, 1000)
    assert set(u) == {3, 4, 5}
    ln = LogNormal(median=1000, sigma=1.0, max=4000).sample(rng, 20_000)
    assert np.median(ln) == pytest.approx(1000, rel=0.05) and ln.max() == 4000 and ln.min() >= 1


def test_trace_lengths_sample_rows(trace):
    prompts, outputs = TraceLengths(trace).sample(np.random.default_rng(0), 300)
    assert set(zip(prompts.tolist(), outputs.tolist())) == {(100, 10), (2000, 50), (300, 300)}


def test_trace_rows_over_the_context_window_are_left_out(trace):
    prompts, outputs = TraceLengths(trace, max_total_len=600).sample(np.random.default_rng(0), 300)
    assert set(zip(prompts.tolist(), outputs.tolist())) == {(100, 10), (300, 300)}  # 300 + 300 fits exactly
    with pytest.raises(WorkloadError, match="no row of trace .* fits max_total_len=50"):
        TraceLengths(trace, max_total_len=50)


def test_workload_from_flags_is_single_phase_for_a_trace_and_the_file_for_a_workload(tmp_path, trace):
    spec = workload_from_flags(trace=str(trace), qps=2.0, num_requests=30, cv=2.0, max_total_len=600, seed=5)
    assert spec == single_phase(TraceLengths(trace, 600), 2.0, num_requests=30, cv=2.0, seed=5)
    assert spec.generate() == single_phase(TraceLengths(trace, 600), 2.0, num_requests=30, cv=2.0, seed=5).generate()
    path = tmp_path / "w.yaml"
    path.write_text(f"phases: [{{trace: {trace}, qps: 1, num_requests: 5}}]")
    assert workload_from_flags(workload=path, seed=2) == load_workload(path, seed=2)
    with pytest.raises(WorkloadError, match="--qps, --burstiness: only for --trace"):
        workload_from_flags(workload=path, qps=1.0, cv=2.0, flag_names={"cv": "--burstiness"})
    with pytest.raises(WorkloadError, match="exactly one workload"):
        workload_from_flags(trace=str(trace), workload=path)


def test_a_recorded_workload_scales_like_a_spec():
    recorded = RecordedWorkload((WorkloadRequest(2.0, 5, 1), WorkloadRequest(0.5, 7, 2)))
    assert [r.arrival_time_s for r in recorded.generate()] == [0.5, 2.0]  # sorted by arrival
    assert recorded.mean_qps == 1.0
    assert [r.arrival_time_s for r in recorded.scaled(4.0).generate()] == [0.125, 0.5]
    assert RecordedWorkload((WorkloadRequest(0.0, 1, 1),)).mean_qps == float("inf")
    with pytest.raises(WorkloadError, match="has no requests"):
        RecordedWorkload(())


def test_single_phase_is_seeded_and_capped(trace):
    spec = single_phase(TraceLengths(trace), 3.0, num_requests=50, max_prompt_tokens=1000, seed=4)
    a, b = spec.generate(), spec.generate()
    assert a == b and len(a) == 50
    assert max(r.num_prompt_tokens for r in a) == 1000
    assert [r.arrival_time_s for r in a] == sorted(r.arrival_time_s for r in a)
    other = single_phase(TraceLengths(trace), 3.0, num_requests=50, seed=5).generate()
    assert [r.arrival_time_s for r in other] != [r.arrival_time_s for r in a]
    doubled = spec.scaled(2.0).generate()
    assert [r.num_prompt_tokens for r in doubled] == [r.num_prompt_tokens for r in a]
    assert [r.arrival_time_s for r in doubled] == pytest.approx([r.arrival_time_s / 2 for r in a])


def test_phases_follow_each_other(trace):
    chat = SyntheticLengths(Fixed(77), Fixed(20))
    spec = WorkloadSpec((Phase(chat, ArrivalProcess(20.0), duration_s=10.0),
                         Phase(TraceLengths(trace), ArrivalProcess(2.0), num_requests=30),
                         Phase(chat, ArrivalProcess(5.0), duration_s=20.0)), seed=1)
    requests = spec.generate()
    first = [r for r in requests if r.num_prompt_tokens == 77 and r.arrival_time_s < 10.0]
    second = requests[len(first):len(first) + 30]
    third = requests[len(first) + 30:]
    assert len(first) == pytest.approx(200, rel=0.2)
    assert all(r.num_prompt_tokens != 77 for r in second) and second[0].arrival_time_s >= 10.0
    end_of_second = second[-1].arrival_time_s
    assert all(end_of_second < r.arrival_time_s < end_of_second + 20.0 for r in third)
    assert len(third) == pytest.approx(100, rel=0.3)
    assert spec.mean_qps == pytest.approx((20 * 10 + 2 * 15 + 5 * 20) / 45)


def test_yaml_workload(tmp_path, trace):
    path = tmp_path / "w.yaml"
    path.write_text(f"""
phases:
  - trace: {trace.name}
    qps: 4
    duration_s: 30
    max_output_tokens: 40
    max_total_len: 700
  - synthetic:
      prompt: {{dist: lognormal, median: 500, sigma: 0.5, max: 2000}}
      output: 64
    qps: 1.5
    num_requests: 10
    cv: 2
""")
    spec = load_workload(path, seed=3)
    assert spec.phases[0].lengths.path == trace  # relative to the YAML file
    assert spec.phases[0].lengths.max_total_len == 700
    assert spec.phases[1].arrivals == ArrivalProcess(1.5, 2.0)
    requests = spec.generate()
    assert max(r.num_output_tokens for r in requests if r.arrival_time_s < 30) == 40
    assert max(r.num_prompt_tokens for r in requests if r.arrival_time_s < 30) == 300  # 2000 + 50 > 700
    assert [r.num_output_tokens for r in requests[-10:]] == [64] * 10


@pytest.mark.parametrize("text,message", [
    ("phases: []", "phases: must be a non-empty list"),
    ("[1, 2]", "must be a mapping with either a 'phases' list or a 'conversations' mapping"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, duration_s: 5}]", r"phases\[0\]: qps: missing"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 0, duration_s: 5}]", r"phases\[0\]: qps=0 is invalid"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1, cv: -1, duration_s: 5}]", r"phases\[0\]: cv=-1"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1}]", "exactly one of duration_s and num_requests"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1, num_requests: 0}]", "num_requests=0 is invalid"),
    ("phases: [{qps: 1, duration_s: 5}]", "exactly one of 'trace' and 'synthetic'"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1, duration_s: 5, rate: 2}]", r"unknown key\(s\) \['rate'\]"),
    ("phases: [{synthetic: {prompt: 10}, qps: 1, duration_s: 5}]", "exactly 'prompt' and 'output'"),
    ("phases: [{synthetic: {prompt: {dist: zipf}, output: 5}, qps: 1, duration_s: 5}]",
     r"phases\[0\]: synthetic: prompt: must be an integer or a mapping with dist: one of fixed, uniform, lognormal"),
    ("phases: [{synthetic: {prompt: {dist: lognormal, median: 0, sigma: 1}, output: 5}, qps: 1, duration_s: 5}]",
     "prompt: median=0 is invalid: use a number >= 1"),
    ("phases: [{synthetic: {prompt: {dist: uniform, low: 5}, output: 5}, qps: 1, duration_s: 5}]",
     "dist uniform takes low, high"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1, duration_s: 5, max_prompt_tokens: 0}]",
     "max_prompt_tokens=0 is invalid"),
    ("phases: [{trace: {a: 1}, qps: 1, duration_s: 5}]", "trace"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1, duration_s: 5, max_total_len: 9}]",
     "max_total_len: only for trace phases"),
    ("phases: [oops", "not valid YAML"),
    ("phases: [{synthetic: {prompt: 10, output: 5}, qps: 1, duration_s: 5, slo_class: 3}]",
     r"phases\[0\]: slo_class=3 is invalid: use the name of a class"),
    ("phases: [{mix: [], qps: 1, duration_s: 5}]", r"phases\[0\]: mix: must be a non-empty list"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}}], qps: 1, duration_s: 5}]",
     r"phases\[0\]: mix: \[0\]: share: missing"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}, share: 0}], qps: 1, duration_s: 5}]",
     r"mix: \[0\]: share=0 is invalid: use a finite number > 0 \(shares are normalized"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}, share: -2}], qps: 1, duration_s: 5}]", "share=-2"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}, share: 1, qps: 2}], qps: 1, duration_s: 5}]",
     r"mix: \[0\]: unknown key\(s\) \['qps'\]: a component takes .*\(arrivals are the phase's\)"),
    ("phases: [{mix: [{share: 1}], qps: 1, duration_s: 5}]", r"mix: \[0\]: needs exactly one of 'trace' and 'synthetic'"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}, share: 1}], slo_class: batch, qps: 1, duration_s: 5}]",
     r"phases\[0\]: slo_class: a mix phase takes these per component"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}, share: 1}], synthetic: {prompt: 1, output: 1}, qps: 1, "
     "duration_s: 5}]", "synthetic: a mix phase takes these per component"),
    ("phases: [{mix: [{synthetic: {prompt: 10, output: 5}, share: 1, max_output_tokens: 0}], qps: 1, duration_s: 5}]",
     r"mix: \[0\]: max_output_tokens=0 is invalid"),
    ("phases: [{mix: {a: 1}, qps: 1, duration_s: 5}]", "mix: must be a non-empty list of components"),
])
def test_bad_workload_files_name_the_field_and_the_fix(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises((WorkloadError, FileNotFoundError), match=message):
        load_workload(path)


def test_missing_and_malformed_traces(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked at"):
        resolve_trace("no_such_trace")
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,output\n1,2\n")
    with pytest.raises(WorkloadError, match="lacks the column"):
        load_trace(bad)
    bad.write_text("num_prefill_tokens,num_decode_tokens\n1,2\n0,3\n")
    with pytest.raises(WorkloadError, match="line 3: token counts must be >= 1"):
        load_trace(bad)


def test_shipped_example_workloads_load_by_name_and_path():
    from adaptive_sarathi.workloads import EXAMPLE_WORKLOADS, resolve_workload

    names = sorted(p.stem for p in EXAMPLE_WORKLOADS.glob("*.yaml"))
    assert {"chat", "chat_short", "summarize", "phases", "chat_and_batch"} <= set(names)
    for name in names:
        assert resolve_workload(name) == EXAMPLE_WORKLOADS / f"{name}.yaml"
        assert resolve_workload(f"{name}.yaml") == EXAMPLE_WORKLOADS / f"{name}.yaml"
        if "trace:" in (EXAMPLE_WORKLOADS / f"{name}.yaml").read_text() and not SHARED_TRACES.is_dir():
            continue  # an example over the shared traces, which this checkout lacks
        spec = load_workload(name)
        if isinstance(spec, ConversationWorkload):
            assert spec.generate() and spec.mean_qps > 0
        else:
            assert spec.phases and all(p.lengths is not None for p in spec.phases)


@pytest.mark.skipif(not (SHARED_TRACES / "sharegpt_8k.csv").is_file(), reason="needs ../shared/traces")
def test_the_chat_and_batch_example_carries_the_tiered_policy_classes():
    from adaptive_sarathi.controller.slo import load_slo_policy

    spec = load_workload("chat_and_batch")
    policy = load_slo_policy("llama-3-8b-h100-tiered")
    assert spec.slo_classes == {c.name for c in policy.classes} == {"interactive", "batch"}
    requests = spec.generate()
    chat = [r for r in requests if r.slo_class == "interactive"]
    batch = [r for r in requests if r.slo_class == "batch"]
    assert len(chat) + len(batch) == len(requests) == 400
    assert len(chat) / len(requests) == pytest.approx(0.75, abs=0.06)
    # arxiv_4k rows total at most ~4K tokens; sharegpt_8k's reach 8K.
    assert max(r.num_prompt_tokens + r.num_output_tokens for r in batch) <= 4096 + 4056
    assert max(r.num_prompt_tokens for r in batch) <= 4054 < max(r.num_prompt_tokens for r in chat)


def mix_phase(chat_output=Fixed(20), share_batch=1.0, num_requests=400, **caps):
    return Phase(Mix((MixComponent(SyntheticLengths(Fixed(50), chat_output), 3.0, "interactive", **caps),
                      MixComponent(SyntheticLengths(Uniform(1000, 3000), Uniform(100, 300)), share_batch, "batch"))),
                 ArrivalProcess(10.0), num_requests=num_requests)


def test_a_mix_draws_components_by_normalized_share_on_the_phase_arrivals():
    mixed = WorkloadSpec((mix_phase(),), seed=3).generate()
    alone = WorkloadSpec((Phase(SyntheticLengths(Fixed(50), Fixed(20)), ArrivalProcess(10.0), num_requests=400),),
                         seed=3).generate()
    assert [r.arrival_time_s for r in mixed] == [r.arrival_time_s for r in alone]  # one arrival process
    chat = [r for r in mixed if r.slo_class == "interactive"]
    assert all((r.num_prompt_tokens, r.num_output_tokens) == (50, 20) for r in chat)
    assert all(r.num_prompt_tokens >= 1000 for r in mixed if r.slo_class == "batch")
    assert len(chat) / len(mixed) == pytest.approx(0.75, abs=0.05)
    # Shares are normalized: 6 and 2 is 3 and 1.
    doubled = Phase(Mix(tuple(MixComponent(c.lengths, 2 * c.share, c.slo_class)
                              for c in mix_phase().lengths.components)), ArrivalProcess(10.0), num_requests=400)
    assert WorkloadSpec((doubled,), seed=3).generate() == mixed
    assert WorkloadSpec((mix_phase(),), seed=3).generate() == mixed  # seeded
    assert WorkloadSpec((mix_phase(),), seed=4).generate() != mixed


def test_changing_one_components_lengths_keeps_every_arrivals_component_and_the_others_lengths():
    base = WorkloadSpec((mix_phase(),), seed=1).generate()
    longer = WorkloadSpec((mix_phase(chat_output=LogNormal(300, 1.0), max_output_tokens=100),), seed=1).generate()
    assert [r.slo_class for r in longer] == [r.slo_class for r in base]
    assert [r.arrival_time_s for r in longer] == [r.arrival_time_s for r in base]
    assert [r for r in longer if r.slo_class == "batch"] == [r for r in base if r.slo_class == "batch"]
    outputs = [r.num_output_tokens for r in longer if r.slo_class == "interactive"]
    assert max(outputs) == 100 and len(set(outputs)) > 10  # the changed component's lengths did change
    # More arrivals (a higher rate over a duration, or a longer phase) keep the earlier ones' components.
    more = WorkloadSpec((mix_phase(num_requests=600),), seed=1).generate()
    assert [r.slo_class for r in more[:400]] == [r.slo_class for r in base]


def test_yaml_phase_and_mix_classes(tmp_path, trace):
    path = tmp_path / "w.yaml"
    path.write_text(f"""
phases:
  - synthetic: {{prompt: 10, output: 5}}
    slo_class: batch
    qps: 2
    num_requests: 5
  - mix:
      - {{trace: {trace.name}, share: 1, slo_class: interactive, max_output_tokens: 8, max_total_len: 700}}
      - {{synthetic: {{prompt: 77, output: 7}}, share: 1}}
    qps: 4
    num_requests: 200
""")
    spec = load_workload(path, seed=2)
    assert spec.phases[0].slo_class == "batch" and spec.slo_classes == {"batch", "interactive"}
    mix = spec.phases[1].lengths
    assert mix.components[0].lengths.path == trace and mix.components[0].lengths.max_total_len == 700
    assert list(mix.probabilities) == [0.5, 0.5]
    requests = spec.generate()
    assert {r.slo_class for r in requests[:5]} == {"batch"}
    traced = [r for r in requests[5:] if r.slo_class == "interactive"]
    assert {r.num_prompt_tokens for r in traced} == {100, 300} and max(r.num_output_tokens for r in traced) == 8
    assert {(r.num_prompt_tokens, r.num_output_tokens) for r in requests[5:] if r.slo_class is None} == {(77, 7)}


def test_a_recorded_workload_keeps_classes_when_scaled():
    recorded = RecordedWorkload((WorkloadRequest(2.0, 5, 1, "batch"), WorkloadRequest(1.0, 7, 2)))
    assert recorded.slo_classes == {"batch"}
    assert [r.slo_class for r in recorded.scaled(2.0).generate()] == [None, "batch"]
    assert single_phase(SyntheticLengths(Fixed(5), Fixed(1)), 1.0, num_requests=3).slo_classes == frozenset()


def test_example_chat_lengths_match_the_sharegpt_statistics():
    import numpy as np

    prompt, output = load_workload("chat").phases[0].lengths.sample(np.random.default_rng(0), 20000)
    # sharegpt_8k published: prompt median 1730, P90 5696, max 8141; output median 415, P90 834, max 1024
    assert abs(np.median(prompt) / 1730 - 1) < 0.05 and abs(np.percentile(prompt, 90) / 5696 - 1) < 0.05
    assert abs(np.median(output) / 415 - 1) < 0.05 and abs(np.percentile(output, 90) / 834 - 1) < 0.05
    assert prompt.max() <= 8141 and output.max() <= 1024


def test_unknown_workload_name_lists_the_examples():
    with pytest.raises(FileNotFoundError, match="chat"):
        load_workload("no_such_workload")
