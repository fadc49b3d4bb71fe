"""bench's text prompts (exact token lengths from the tokenizer, for completions and chat) and
vLLM's goodput rule."""

import pytest

from adaptive_sarathi.bench.client import RequestResult
from adaptive_sarathi.bench.config import BenchConfig
from adaptive_sarathi.bench.prompts import PromptBuilder, load_bench_tokenizer
from adaptive_sarathi.bench.report import format_report, summarize
from adaptive_sarathi.bench.run import bench_requests
from adaptive_sarathi.bench.slo import is_good, parse_goodput
from adaptive_sarathi.bench.workload import draw_workload


@pytest.fixture(scope="module")
def tokenizer():
    from adaptive_sarathi.engine.loaders.default_model import default_gguf_path
    from adaptive_sarathi.engine.loaders.source import ModelLoadError

    try:
        default_gguf_path()
    except ModelLoadError as err:
        pytest.skip(str(err))
    return load_bench_tokenizer(None)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_text_prompts_have_the_asked_token_length(tokenizer, endpoint):
    builder = PromptBuilder(tokenizer, endpoint, seed=0)
    for length in [1, 2, 7, 40, 41, 64, 333, 2000]:
        text, count = builder.build(length)
        assert isinstance(text, str) and text.strip()
        assert count == len(builder.encode(text))  # what the server will run
        if length > builder.overhead + 2:
            assert count == length, (endpoint, length)
        else:
            assert count <= builder.overhead + 3  # the fewest the template allows
    if endpoint == "chat":
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        assert text in rendered and len(tokenizer.encode(rendered)) == 2000


def test_text_prompts_are_seeded(tokenizer):
    a, b, c = (PromptBuilder(tokenizer, "completions", seed=seed).build(30) for seed in (5, 5, 6))
    assert a == b and a != c


def test_bench_requests_carry_text_of_the_drawn_lengths(tokenizer, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{37 * i},{3 + i}\n" for i in range(1, 30)))
    config = BenchConfig(trace=str(trace), qps=4, num_requests=25, seed=3)
    drawn = draw_workload(config)
    sent = bench_requests(config)
    assert [(r.prompt_len, r.output_len, r.arrival_s) for r in sent] == \
           [(r.num_prompt_tokens, r.num_output_tokens, r.arrival_time_s) for r in drawn]
    assert all(isinstance(r.prompt, str) for r in sent)
    ids = bench_requests(BenchConfig(trace=str(trace), qps=4, num_requests=25, seed=3, prompts="token-ids"))
    assert [r.prompt_len for r in ids] == [r.prompt_len for r in sent] and isinstance(ids[0].prompt, list)


@pytest.mark.parametrize("flags,error", [(["ttft:0"], "MS"), (["itl:5"], "KEY"), (["ttft"], "KEY:MS"),
                                         (["ttft:5", "ttft:6"], "twice")])
def test_goodput_flag_errors_name_the_fix(flags, error):
    with pytest.raises(ValueError, match=error):
        parse_goodput(flags)


def result(ttft, tpot, outputs=11, success=True):
    return RequestResult(10, outputs, success=success, ttft_s=ttft, e2e_s=ttft + tpot * (outputs - 1),
                         itl_s=[tpot] * (outputs - 1), output_tokens=outputs)


def test_goodput_counts_successful_requests_within_every_target():
    goodput = parse_goodput(["ttft:100", "tpot:20", "e2el:500"])
    assert goodput == {"ttft": 0.1, "tpot": 0.02, "e2el": 0.5}
    results = [result(0.05, 0.01), result(0.15, 0.01), result(0.05, 0.03), result(0.09, 0.019),
               result(0.05, 0.01, success=False), result(0.09, 0.019, outputs=30)]  # the last: e2el 0.64 s
    assert [is_good(r, goodput) for r in results] == [True, False, False, True, False, False]
    summary = summarize(results, 2.0, {}, goodput)
    assert summary["request_goodput"] == pytest.approx(1.0) and summary["goodput_targets_ms"]["tpot"] == 20
    assert "Request goodput (req/s) [ttft:100 tpot:20 e2el:500]" in format_report(summary)
    # TPOT is per request (10, 10, 30, 19, 19 ms over the successful ones), ITL per gap.
    assert summary["tpot_ms"]["median"] == pytest.approx(19.0)
    assert summary["itl_ms"]["median"] == pytest.approx(19.0) and summary["itl_ms"]["mean"] != summary["tpot_ms"]["mean"]


def test_flags_of_the_other_prompt_kind_are_refused():
    with pytest.raises(ValueError, match="--prompts token-ids"):
        BenchConfig(vocab_size=1000)
    with pytest.raises(ValueError, match="--tokenizer"):
        BenchConfig(prompts="token-ids", tokenizer="/some/dir")
    assert BenchConfig(prompts="token-ids", vocab_size=1000).vocab_size == 1000


def test_token_ids_only_for_completions():
    with pytest.raises(ValueError, match="--endpoint completions"):
        BenchConfig(prompts="token-ids", endpoint="chat")
    with pytest.raises(ValueError, match="--endpoint"):
        BenchConfig(endpoint="embeddings")
