"""The tokenizer directory written for clients: written once, plain Hugging Face files that
transformers' AutoTokenizer reads to the same token ids and chat prompt the engine makes, the
chat template override, and `adaptive-sarathi tokenizer-path` printing it."""

import json

import pytest

from adaptive_sarathi.cli import main
from adaptive_sarathi.engine.loaders import ModelLoadError, resolve_model
from adaptive_sarathi.engine.loaders.tokenizer_export import export_tokenizer, export_tokenizer_dir
from adaptive_sarathi.engine.tokenizer import Tokenizer, resolve_chat_template

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river in Ghana."}]
TEXT = "Rivers: the Volta, the Ankobra; ünïcode & digits 12345."


@pytest.fixture(scope="module")
def source():
    return resolve_model(None)  # the embedded model, converted once into the user's cache


pytestmark = pytest.mark.embedded_model


def test_export_holds_only_tokenizer_files_and_is_written_once(source, tmp_path):
    first = export_tokenizer(source, cache_dir=tmp_path)
    assert sorted(p.name for p in first.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                      "tokenizer_config.json"]
    stamp = (first / "tokenizer_config.json").stat().st_mtime_ns
    again = export_tokenizer(source, cache_dir=tmp_path)
    assert again == first and (again / "tokenizer_config.json").stat().st_mtime_ns == stamp
    config = json.loads((first / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in config
    assert json.loads((first / "special_tokens_map.json").read_text())["eos_token"] == "<|im_end|>"


def test_transformers_reads_it_as_the_engine_tokenizes(source, tmp_path):
    transformers = pytest.importorskip("transformers")
    exported = export_tokenizer(source, cache_dir=tmp_path)
    engine_side = Tokenizer.from_dir(source.tokenizer_path)
    client_side = transformers.AutoTokenizer.from_pretrained(str(exported))
    assert client_side.encode(TEXT, add_special_tokens=False) == engine_side.encode(TEXT, add_special_tokens=False)
    rendered = client_side.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == engine_side.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert client_side.eos_token == "<|im_end|>"


def test_chat_template_override_is_a_separate_export(source, tmp_path):
    own = export_tokenizer(source, cache_dir=tmp_path)
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    other = export_tokenizer(source, chat_template=template, cache_dir=tmp_path)
    assert other != own
    assert Tokenizer.from_dir(other).apply_chat_template(MESSAGES[1:]) == "[user] Name a river in Ghana.\n"


def test_a_model_without_tokenizer_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        export_tokenizer(resolve_model("dummy:tiny"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no tokenizer.json"):
        export_tokenizer_dir(tmp_path, "empty", cache_dir=tmp_path)


def test_cli_prints_the_directory(source, tmp_path, monkeypatch, capsys):
    # The user's cache, as serve's conversion: an export there is idempotent.
    assert main(["tokenizer-path"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(export_tokenizer(source))
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages[0].content }}")
    monkeypatch.setenv("ADAPTIVE_SARATHI_CACHE", str(tmp_path))  # --tokenizer needs no model conversion
    assert main(["tokenizer-path", "--tokenizer", printed, "--chat-template", str(template)]) == 0
    overridden = capsys.readouterr().out.strip()
    assert Tokenizer.from_dir(overridden).apply_chat_template(MESSAGES[1:]) == "Name a river in Ghana."
    assert main(["tokenizer-path", "dummy:tiny"]) == 2
    assert "has no tokenizer" in capsys.readouterr().err


def test_chat_template_flag_reads_a_file_or_template_text(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{{ messages }}")
    assert resolve_chat_template(str(path)) == "{{ messages }}"
    assert resolve_chat_template("{% if x %}y{% endif %}") == "{% if x %}y{% endif %}"
    with pytest.raises(ValueError, match="no such file"):
        resolve_chat_template(str(tmp_path / "missing.jinja"))
    with pytest.raises(ValueError, match="does not compile"):
        resolve_chat_template("{% for %}")
