"""River's estimator habits for budget policies and their parts: parameters from the constructor, clone()."""

from __future__ import annotations

import copy
import inspect
from typing import Any, TypeVar

E = TypeVar("E", bound="Estimator")


class Estimator:
    """Every constructor argument is kept as an attribute of the same name, so the object can be
    rebuilt from its parameters (what Optuna and the offline tuner do)."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments by name, as given (not copied)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def clone(self: E, **overrides: Any) -> E:
        """A new, unfitted object with deep copies of these parameters (those in `overrides`
        replaced). Shares nothing mutable with self."""
        params = copy.deepcopy(self.get_params())
        params.update(overrides)
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
