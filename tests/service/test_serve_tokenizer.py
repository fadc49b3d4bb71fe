"""serve --tokenizer DIR and --chat-template FILE, with vLLM's meaning: the server tokenizes with
that directory (a dummy model gets text prompts and chat), renders chat with that template, and
the flags reach EngineArgs; a tokenizer that cannot belong to the model is refused by flag name."""

import pytest

from adaptive_sarathi.cli import _serve_engine_args, build_parser
from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.loaders import resolve_model
from adaptive_sarathi.engine.loaders.tokenizer_export import export_tokenizer
from adaptive_sarathi.engine.tokenizer import Tokenizer

pytestmark = pytest.mark.embedded_model

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}: {{ m.content }}\n{% endfor %}<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer_dir():
    return export_tokenizer(resolve_model(None))


def test_flags_reach_the_engine_args(tmp_path):
    args = build_parser().parse_args(["serve", "--tokenizer", "/tok", "--chat-template", "/t.jinja"])
    engine_args = _serve_engine_args(args)
    assert (engine_args.tokenizer, engine_args.chat_template) == ("/tok", "/t.jinja")


def test_dummy_model_serves_text_and_chat_with_the_given_tokenizer(serve, tokenizer_dir, tmp_path):
    template_file = tmp_path / "chat.jinja"
    template_file.write_text(TEMPLATE)
    args = EngineArgs(model="dummy:smollm2-135m", num_kv_blocks=64, tokenizer=str(tokenizer_dir),
                      chat_template=str(template_file))
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    messages = [{"role": "user", "content": "Hi there"}]
    with serve(args) as server:
        status, _, body = server.request("POST", "/v1/completions", {"prompt": "The river Volta", "max_tokens": 2,
                                                                     "ignore_eos": True})
        assert status == 200, body
        assert body["usage"]["prompt_tokens"] == len(tokenizer.encode("The river Volta"))
        status, _, body = server.request("POST", "/v1/chat/completions", {"messages": messages, "max_tokens": 2,
                                                                          "ignore_eos": True})
        assert status == 200, body
        # Jinja drops the template's one trailing newline, as transformers' rendering does.
        rendered = "<|im_start|>user: Hi there\n<|im_start|>assistant"
        assert Tokenizer.from_dir(tokenizer_dir, chat_template=TEMPLATE).apply_chat_template(messages) == rendered
        assert body["usage"]["prompt_tokens"] == len(tokenizer.encode(rendered))
        status, _, body = server.request("POST", "/tokenize", {"prompt": "The river Volta"})
        assert body["tokens"] == tokenizer.encode("The river Volta")


def test_a_tokenizer_larger_than_the_model_is_refused(tokenizer_dir):
    with pytest.raises(ValueError, match="--tokenizer .* knows 49152 token ids, more than the model's 512"):
        create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=8, tokenizer=str(tokenizer_dir)))


def test_a_missing_tokenizer_dir_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--tokenizer .*tokenizer-path prints one"):
        create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=8, tokenizer=str(tmp_path)))


def test_chat_template_without_any_tokenizer_is_refused():
    with pytest.raises(ValueError, match="--chat-template needs a tokenizer"):
        create_engine(EngineArgs(model="dummy:tiny", num_kv_blocks=8, chat_template="{{ messages }}"))
