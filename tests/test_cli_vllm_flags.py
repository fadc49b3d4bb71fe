"""A vLLM user's serve command line parses unchanged, to the same settings under our names."""

import os

import pytest

from adaptive_sarathi.cli import _serve_engine_args, build_parser, main


def parse(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_a_vllm_command_line_maps_to_the_engine_and_server_settings():
    args = parse("dummy:tiny", "--max-num-batched-tokens", "2048", "--served-model-name", "X",
                 "--gpu-memory-utilization", "0.8", "--api-key", "K", "--max-num-seqs", "32",
                 "--block-size", "32", "--seed", "7", "--enable-chunked-prefill", "--disable-log-requests")
    engine = _serve_engine_args(args)
    assert (engine.model, engine.token_budget, engine.gpu_memory_utilization, engine.max_num_seqs,
            engine.block_size, engine.seed) == ("dummy:tiny", 2048, 0.8, 32, 32, 7)
    assert args.served_model_name == ["X"] and args.api_key == "K"


def test_the_model_is_named_once():
    with pytest.raises(ValueError, match="name the model once"):
        _serve_engine_args(parse("dummy:tiny", "--model", "dummy:llama-3-8b"))
    assert _serve_engine_args(parse("--model", "dummy:tiny")).model == "dummy:tiny"


def test_flag_prefixes_are_not_guessed(capsys):
    with pytest.raises(SystemExit):
        parse("--seed-g", "x")  # a prefix of --seed-gpu: refused, not taken for it
    assert "unrecognized arguments: --seed-g" in capsys.readouterr().err


def test_help_shows_defaults_but_never_the_api_key(capsys, monkeypatch):
    monkeypatch.setenv("ADAPTIVE_SARATHI_API_KEY", "top-secret")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "(default: 2048)" not in out and "(default: 512)" in out  # --token-budget's default
    assert "top-secret" not in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("adaptive-sarathi ")


def test_cors_flags_take_vllms_json_lists_and_are_off_by_default(capsys):
    args = parse("--allowed-origins", '["https://a.example", "https://b.example"]', "--allowed-methods",
                 '["GET", "POST"]', "--allowed-headers", "Authorization", "--allow-credentials")
    assert args.allowed_origins == ["https://a.example", "https://b.example"]
    assert args.allowed_methods == ["GET", "POST"] and args.allowed_headers == ["Authorization"]
    assert args.allow_credentials
    plain = parse()
    assert plain.allowed_origins == [] and not plain.allow_credentials
    with pytest.raises(SystemExit):
        parse("--allowed-origins", '["https://a.example", 3]')
    assert "--allowed-origins" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expected", [
    ((), True), (("--enable-prefix-caching",), True), (("--no-prefix-caching",), False),
    (("--no-enable-prefix-caching",), False),
])
def test_prefix_caching_is_on_unless_turned_off(flags, expected):
    assert _serve_engine_args(parse("dummy:tiny", *flags)).enable_prefix_caching is expected
    assert build_parser().parse_args(["generate", "hi", *flags]).enable_prefix_caching is expected
