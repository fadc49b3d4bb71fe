"""Which SLO class a request is served to: its body's `slo_class`, else its `x-slo-class` header,
checked against the server's SLO policy."""

from __future__ import annotations

from adaptive_sarathi.controller.slo import SLOPolicy, UnknownSLOClassError
from adaptive_sarathi.server.errors import bad_request

HEADER = "x-slo-class"


def request_class(policy: SLOPolicy | None, body_class: str | None, header_class: str | None) -> str | None:
    """The class name to hand to the engine: the body's value when given (it wins over the
    header, as a body field is the more specific ask), else the header's (blank counts as not
    given), else the policy's default_class; None when neither names one and the policy has no
    default (the top-level targets). Raises a 400 APIError whose param is the field or header
    that named the class: for a class the policy does not declare (the message lists the known
    ones), or for any class on a server started without an SLO policy. Mutates nothing."""
    header_class = header_class.strip() if header_class is not None else None
    if body_class is not None:
        name, field = body_class, "slo_class"
    elif header_class:
        name, field = header_class, HEADER
    else:
        name, field = None, None
    if policy is None:
        if name is None:
            return None
        raise bad_request(field, f"'{field}' names class {name!r} but this server runs without an SLO policy, so "
                                 "it has no classes: start it with --slo-policy FILE|NAME (a policy that declares "
                                 "`classes:`), or leave the class out", code="unknown_slo_class")
    try:
        return policy.resolve_class(name)
    except UnknownSLOClassError as err:
        known = ", ".join(err.known) if err.known else "none (it declares no classes; leave the class out)"
        raise bad_request(field, f"'{field}'={name!r} is not a class of SLO policy {policy.name!r}: known "
                                 f"classes: {known}", code="unknown_slo_class") from None

