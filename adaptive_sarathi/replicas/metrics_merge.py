"""One Prometheus exposition out of several replicas' own, each sample labelled with its replica.

Every replica renders its metrics as one engine does (labels model_name and engine, engine being
the replica's index); the ingress serves them together on its /metrics with a `replica` label
added, so one scrape sees every replica and a dashboard sums or splits by replica. The text
format allows one HELP/TYPE per family with all its samples together, so the texts are parsed
and re-rendered family by family rather than concatenated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


def merge_expositions(texts: Mapping[str, str]) -> str:
    """The samples of every text (replica label -> exposition text), each with replica="<key>"
    added, grouped by family in first-seen order. Raises ValueError for a text that is not the
    Prometheus text format."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for replica, text in texts.items():
        for family in text_string_to_metric_families(text):
            kind = "unknown" if family.type == "unknown" else family.type
            entry = families.setdefault(family.name, (kind, family.documentation, []))
            for sample in family.samples:
                labels = {**sample.labels, "replica": replica}
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                entry[2].append(f"{sample.name}{{{body}}} {_value(sample.value)}")
    lines = []
    for name, (kind, doc, samples) in families.items():
        if kind == "counter":  # the parser drops the suffix its samples keep, as prometheus-client writes it
            name += "_total"
        lines.append(f"# HELP {name} {_escape_doc(doc)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n" if lines else ""


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_doc(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")
