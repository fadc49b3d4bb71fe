"""Bad input gets a clear error naming the field; requests already in the engine are unaffected."""

import pytest

from adaptive_sarathi import LLM, SamplingParams
from adaptive_sarathi.engine.engine import InvalidRequestError
from adaptive_sarathi.engine.factory import EngineArgs
from adaptive_sarathi.engine.loaders import ModelLoadError


@pytest.fixture(scope="module")
def llm():
    return LLM("dummy:tiny", max_model_len=64, num_kv_blocks=32)


def run_all(engine):
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    return finals


@pytest.mark.parametrize("prompt,params,field,fragment", [
    ([], None, "prompt", "empty"),
    (list(range(64)), None, "prompt", "context window is 64"),
    ([1, 2, 10_000], None, "prompt", "outside the vocabulary"),
    ([1, "a"], None, "prompt", "token ids"),
    ("text", None, "prompt", "no tokenizer"),
    ([1, 2], SamplingParams(stop=["x"]), "stop", "stop_token_ids"),
])
def test_bad_requests_are_refused_without_disturbing_others(llm, prompt, params, field, fragment):
    engine = llm.engine
    good = engine.add_request([5, 6, 7], SamplingParams(max_tokens=4, ignore_eos=True))
    engine.step()  # the good request is mid-flight when the bad one arrives
    with pytest.raises(InvalidRequestError, match=fragment) as err:
        engine.add_request(prompt, params)
    assert err.value.field == field
    finals = run_all(engine)
    assert len(finals[good].token_ids) == 4
    engine.scheduler.check_invariants()
    assert engine.scheduler.block_manager.num_free_blocks == engine.scheduler.block_manager.num_total_blocks


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(max_tokens=0), "max_tokens"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=-2), "top_k"),
    (dict(stop=[""]), "stop"),
])
def test_bad_sampling_params_name_the_field(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(scheduler="fifo"), "scheduler='fifo' is unknown"),
    (dict(token_budget=0), "token_budget"),
    (dict(max_chunk=0), "max_chunk"),
    (dict(dtype="int3"), "dtype"),
    (dict(device="tpu"), "device"),
    (dict(block_size=12), "block_size"),
    (dict(num_kv_blocks=0), "num_kv_blocks=0"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"),
    (dict(cpu_kv_cache_bytes=0), "cpu_kv_cache_bytes"),
])
def test_bad_engine_args_name_the_field(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        EngineArgs(**kwargs)


def test_unknown_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        LLM(str(tmp_path / "no-such-model"))


def test_generate_validates_all_prompts_before_running(llm):
    with pytest.raises(InvalidRequestError):
        llm.generate([[1, 2, 3], []], SamplingParams(max_tokens=2))
    assert not llm.engine.has_unfinished_requests()


def test_abort_frees_blocks_and_reports_abort(llm):
    engine = llm.engine
    rid = engine.add_request([1, 2, 3, 4], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    assert engine.abort_request(rid)
    assert not engine.abort_request(rid)
    assert not engine.has_unfinished_requests()
    bm = engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_total_blocks


class _LetterTokenizer:
    """Token t reads as the letter chr(97 + t % 26): enough for the engine's text bookkeeping."""

    def incremental_detokenizer(self, prompt_token_ids=()):
        return self

    def push(self, ids):
        return "".join(chr(97 + t % 26) for t in ids)

    def flush(self):
        return ""


def test_abort_returns_the_final_output_with_the_text_so_far():
    from adaptive_sarathi.engine.factory import create_engine
    from adaptive_sarathi.engine.request import FinishReason

    engine = create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=32))
    engine.tokenizer = _LetterTokenizer()
    rid = engine.add_request([1, 2, 3, 4], SamplingParams(max_tokens=50, ignore_eos=True))
    text = ""
    for _ in range(4):
        text += "".join(o.delta_text for o in engine.step())
    assert engine.num_running == 1 and engine.num_waiting == 0
    final = engine.abort_request(rid)
    assert final is not None and final.finished and final.finish_reason is FinishReason.ABORT
    assert len(final.token_ids) == 4 and final.new_token_ids == [] and final.delta_text == ""
    assert final.text == text == _LetterTokenizer().push(final.token_ids)
    assert engine.abort_request(rid) is None and engine.abort_request("unknown") is None
    state = engine.state()
    assert (state.num_running, state.num_waiting) == (0, 0)
    assert state.admissible_free_tokens == (32 - int(0.01 * 32)) * state.block_size


def test_close_shuts_the_executor_down(monkeypatch):
    llm = LLM("dummy:tiny", max_model_len=64, num_kv_blocks=32)
    calls = []
    monkeypatch.setattr(llm.engine.executor, "shutdown", lambda: calls.append("shutdown"))
    with llm:
        pass
    assert calls == ["shutdown"]
