"""The SLO class a request is added with comes back in every RequestOutput, finished or aborted."""

from adaptive_sarathi import SamplingParams
from adaptive_sarathi.llm import LLM

PARAMS = SamplingParams(max_tokens=3, ignore_eos=True)


def test_generate_carries_the_class_into_every_final_output():
    llm = LLM("dummy:tiny", num_kv_blocks=64)
    outputs = llm.generate([[5, 6, 7], [8, 9]], PARAMS, slo_class="batch")
    assert [o.slo_class for o in outputs] == ["batch", "batch"]
    assert all(len(o.token_ids) == 3 for o in outputs)
    assert llm.generate([[5, 6, 7]], PARAMS)[0].slo_class is None


def test_every_step_output_and_an_abort_carry_the_class():
    engine = LLM("dummy:tiny", num_kv_blocks=64).engine
    engine.add_request([1, 2, 3], PARAMS, request_id="a", slo_class="interactive")
    engine.add_request([4, 5, 6], SamplingParams(max_tokens=50, ignore_eos=True), request_id="b",
                       slo_class="batch")
    seen = {"a": set(), "b": set()}
    for _ in range(4):
        for out in engine.step():
            seen[out.request_id].add(out.slo_class)
    assert seen == {"a": {"interactive"}, "b": {"batch"}}
    aborted = engine.abort_request("b")
    assert aborted.finished and aborted.slo_class == "batch"
