"""SLO policy files: the shipped examples load, the shorthand parses, invalid files name the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from adaptive_sarathi.controller.slo import (
    BudgetBounds, LatencyTarget, SLOPolicy, SLOPolicyError, UnknownSLOClassError, load_slo_policy,
    policy_from_dict, shipped_policy_names)

VALID = """\
name: test-policy
slo:
  ttft: {target_ms: 2000, percentile: 90}
  tbt: {target_ms: 100, percentile: 99}
budget:
  min_token_budget: 64
  max_token_budget: 4096
  min_chunk: 32
  max_chunk: 2048
  fallback_token_budget: 512
  tile_tokens: 64
classes:
  interactive:
    ttft: {target_ms: 1000}
  batch:
    tbt: {target_ms: 500, percentile: 95}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_every_shipped_policy_loads_by_name_and_by_path():
    names = shipped_policy_names()
    assert {"smollm2-cpu-strict", "smollm2-cpu-relaxed", "llama-3-8b-h100-strict",
            "llama-3-8b-h100-relaxed"} <= set(names)
    for name in names:
        policy = load_slo_policy(name)
        assert policy.name == name
        assert policy.tbt.target_ms < policy.ttft.target_ms
    strict, relaxed = load_slo_policy("llama-3-8b-h100-strict"), load_slo_policy("llama-3-8b-h100-relaxed")
    assert strict.tbt.target_ms < relaxed.tbt.target_ms
    assert strict.bounds.fallback_token_budget == 512 and relaxed.bounds.fallback_token_budget == 2048


def test_a_full_file_loads_with_classes_inheriting_targets(tmp_path: Path):
    policy = load_slo_policy(write(tmp_path, VALID))
    assert policy.ttft == LatencyTarget(2000, 90) and policy.tbt == LatencyTarget(100, 99)
    assert policy.bounds == BudgetBounds(64, 4096, 32, 2048, 512, 64)
    interactive, batch = policy.classes
    assert interactive.ttft == LatencyTarget(1000, 99) and interactive.tbt == policy.tbt  # inherited
    assert batch.ttft == policy.ttft and batch.tbt == LatencyTarget(500, 95)
    assert policy.tightest_ttft.target_ms == 1000 and policy.tightest_tbt.target_ms == 100
    assert policy.targets_for("batch") == (batch.ttft, batch.tbt)
    with pytest.raises(KeyError, match="interactive"):
        policy.targets_for("premium")


def test_budget_defaults_are_derived_from_the_bounds(tmp_path: Path):
    policy = load_slo_policy(write(tmp_path, """\
        name: minimal
        slo: {ttft: {target_ms: 2000}, tbt: {target_ms: 100}}
        budget: {max_token_budget: 256}
        """))
    b = policy.bounds
    assert (b.max_chunk, b.fallback_token_budget, b.tile_tokens) == (256, 256, 128)
    assert policy.tbt.percentile == 99 and policy.classes == ()


def test_shorthand():
    policy = SLOPolicy.from_shorthand("ttft:2000,tbt:100")
    assert policy.ttft == LatencyTarget(2000.0, 99.0) and policy.tbt == LatencyTarget(100.0, 99.0)
    assert SLOPolicy.from_shorthand(" tbt:50@p95 , ttft:1500@p90").tbt == LatencyTarget(50.0, 95.0)


@pytest.mark.parametrize("text,field", [
    ("ttft:2000", "tbt"),
    ("ttft:2000,tbt:fast", "tbt"),
    ("ttft:2000,tbt:-5", "tbt.target_ms"),
    ("ttft:2000@p101,tbt:100", "ttft.percentile"),
    ("ttft=2000,tbt:100", "ttft=2000"),
    ("ttft:1,ttft:2,tbt:100", "ttft"),
])
def test_shorthand_errors_name_the_part(text: str, field: str):
    with pytest.raises(SLOPolicyError) as e:
        SLOPolicy.from_shorthand(text)
    assert e.value.field == field and "--slo" in str(e.value)


INVALID = [
    # (what is wrong, YAML, the field the error must name)
    ("no name", "slo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}", "name"),
    ("a name with spaces", "name: my policy\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}", "name"),
    ("no tbt", "name: x\nslo: {ttft: {target_ms: 2000}}", "slo.tbt"),
    ("negative target", "name: x\nslo: {ttft: {target_ms: 2000}, tbt: {target_ms: -5}}", "slo.tbt.target_ms"),
    ("target not a number", "name: x\nslo: {ttft: {target_ms: soon}, tbt: {target_ms: 100}}", "slo.ttft.target_ms"),
    ("target a boolean", "name: x\nslo: {ttft: {target_ms: true}, tbt: {target_ms: 100}}", "slo.ttft.target_ms"),
    ("percentile above 100", "name: x\nslo: {ttft: {target_ms: 1, percentile: 100.5}, tbt: {target_ms: 1}}",
     "slo.ttft.percentile"),
    ("misspelt key", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target: 100}}", "slo.tbt.target"),
    ("unknown top-level key", "name: x\nslos: {}\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}", "slos"),
    ("min budget above max", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\n"
                             "budget: {min_token_budget: 4096, max_token_budget: 512}", "budget.min_token_budget"),
    ("fractional budget", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\n"
                          "budget: {max_token_budget: 512.5}", "budget.max_token_budget"),
    ("chunk above the budget", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\n"
                               "budget: {max_token_budget: 512, max_chunk: 1024}", "budget.max_chunk"),
    ("fallback outside the bounds", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\n"
                                    "budget: {max_token_budget: 512, fallback_token_budget: 2048}",
     "budget.fallback_token_budget"),
    ("class without targets", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\n"
                              "classes: {batch: {}}", "classes.batch"),
    ("bad class target", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\n"
                         "classes: {batch: {tbt: {target_ms: 0}}}", "classes.batch.tbt.target_ms"),
    ("classes as a list", "name: x\nslo: {ttft: {target_ms: 1}, tbt: {target_ms: 1}}\nclasses: [a, b]", "classes"),
    ("not a mapping", "- name: x", "(top level)"),
    ("broken YAML", "name: x\nslo: {ttft: [", "file"),
]


@pytest.mark.parametrize("text,field", [(t, f) for _, t, f in INVALID], ids=[w for w, _, _ in INVALID])
def test_invalid_files_name_the_field_and_the_fix(tmp_path: Path, text: str, field: str):
    path = write(tmp_path, text + "\n")
    with pytest.raises(SLOPolicyError) as e:
        load_slo_policy(path)
    assert e.value.field == field
    message = str(e.value)
    assert message.startswith(f"{path}: {field}: ")
    assert any(word in message for word in ("use", "add", "give", "write", "fix", "pick", "lower", "remove"))


def test_unknown_names_and_missing_files():
    with pytest.raises(SLOPolicyError, match="smollm2-cpu-strict"):  # lists the shipped ones
        load_slo_policy("no-such-policy")
    with pytest.raises(SLOPolicyError, match="does not exist"):
        load_slo_policy("/nonexistent/policy.yaml")


def test_default_class_resolves_requests_that_name_none(tmp_path: Path):
    policy = load_slo_policy(write(tmp_path, VALID + "default_class: batch\n"))
    assert policy.default_class == "batch"
    assert policy.class_names == ("interactive", "batch")
    assert policy.resolve_class(None) == "batch"
    assert policy.resolve_class("interactive") == "interactive"
    assert policy.targets_for(policy.resolve_class(None)) == (policy.ttft, LatencyTarget(500, 95))


def test_without_default_class_requests_that_name_none_get_the_top_level_targets(tmp_path: Path):
    policy = load_slo_policy(write(tmp_path, VALID))
    assert policy.default_class is None
    assert policy.resolve_class(None) is None
    assert policy.targets_for(policy.resolve_class(None)) == (policy.ttft, policy.tbt)


def test_the_tiered_policy_defaults_to_interactive():
    policy = load_slo_policy("llama-3-8b-h100-tiered")
    assert policy.default_class == "interactive"
    assert policy.targets_for(policy.resolve_class(None))[0] == LatencyTarget(1000, 90)


def test_an_unknown_class_names_the_known_ones(tmp_path: Path):
    policy = load_slo_policy(write(tmp_path, VALID))
    with pytest.raises(UnknownSLOClassError, match="'premium'.*interactive, batch") as info:
        policy.resolve_class("premium")
    assert info.value.class_name == "premium" and info.value.known == ("interactive", "batch")
    with pytest.raises(UnknownSLOClassError, match="declares no classes"):
        SLOPolicy.from_shorthand("ttft:2000,tbt:100").resolve_class("interactive")


@pytest.mark.parametrize("line,fragment", [
    ("default_class: premium", "'premium', which is not a declared class; use one of interactive, batch"),
    ("default_class: 3", "write the name of a class"),
])
def test_a_bad_default_class_names_the_field_and_the_classes(tmp_path: Path, line: str, fragment: str):
    with pytest.raises(SLOPolicyError, match=fragment) as info:
        load_slo_policy(write(tmp_path, VALID + line + "\n"))
    assert info.value.field == "default_class"


def test_a_default_class_needs_declared_classes():
    with pytest.raises(SLOPolicyError, match="none is") as info:
        SLOPolicy("p", LatencyTarget(2000), LatencyTarget(100), default_class="interactive")
    assert info.value.field == "default_class"


@pytest.mark.parametrize("name", shipped_policy_names())
def test_to_dict_parses_back_to_an_equal_policy(name):
    policy = load_slo_policy(name)
    doc = policy.to_dict()
    assert policy_from_dict(doc) == policy
    assert policy_from_dict(yaml.safe_load(yaml.safe_dump(doc, sort_keys=False))) == policy  # plain types


def test_to_dict_writes_inherited_class_targets_and_the_default_class():
    policy = policy_from_dict({"name": "p", "slo": {"ttft": {"target_ms": 2000}, "tbt": {"target_ms": 80}},
                               "classes": {"batch": {"ttft": {"target_ms": 30000}}}, "default_class": "batch"})
    doc = policy.to_dict()
    assert doc["classes"]["batch"]["tbt"] == {"target_ms": 80.0, "percentile": 99.0}
    assert doc["default_class"] == "batch" and doc["budget"]["max_chunk"] == 8192
    assert policy_from_dict(doc) == policy
