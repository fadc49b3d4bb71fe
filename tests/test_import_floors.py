"""The package floors, lowest first: kernels -> engine -> controller -> service (adaptive_sarathi/*).
A module may import its own floor and lower ones, never a higher one. Every import counts, at any
depth (inside functions too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Floor of a top-level folder; the service floor is adaptive_sarathi/ outside the mapped sub-packages.
FLOORS = {"kernels": 0, "engine": 1, "controller": 2, "adaptive_sarathi": 3}
NAMES = {0: "kernels", 1: "engine", 2: "controller", 3: "service"}


def floor_of_module(name: str) -> int | None:
    """The floor of an absolute module name, None for modules outside the project."""
    parts = name.split(".")
    if parts[0] != "adaptive_sarathi":
        return None
    if len(parts) > 1 and parts[1] in ("kernels", "engine", "controller"):
        return FLOORS[parts[1]]
    return FLOORS["adaptive_sarathi"]


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "adaptive_sarathi" else ["adaptive_sarathi", *parts])


def imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `tree`; relative imports resolved against
    `package`. `from a import b` yields a.b as well as a (b may be a submodule)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """One line per import in the file at `path` (under `root`) from a floor above its own."""
    name = module_name(path, root)
    own = floor_of_module(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for line, target in imported_modules(ast.parse(path.read_text(), str(path)), package):
        floor = floor_of_module(target)
        if floor is not None and floor > own:
            out.append(f"{path.relative_to(root)}:{line} ({NAMES[own]}) imports {target} ({NAMES[floor]})")
    return out


def project_modules() -> list[Path]:
    return sorted(p for top in FLOORS for p in (ROOT / top).rglob("*.py"))


def test_the_tree_has_the_modules_the_check_reads():
    names = {module_name(p) for p in project_modules()}
    assert {"adaptive_sarathi.engine.engine", "adaptive_sarathi.controller.adaptive",
            "adaptive_sarathi.kernels", "adaptive_sarathi.cli"} <= names


def test_no_module_imports_a_higher_floor():
    bad = [v for p in project_modules() for v in violations(p)]
    assert not bad, "imports against the floors kernels -> engine -> controller -> service:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder, source", [
    ("engine", "def f():\n    from adaptive_sarathi.controller.adaptive import AdaptiveBudget\n"),
    ("engine", "import adaptive_sarathi.scenario\n"),
    ("controller", "from adaptive_sarathi import capacity\n"),
    ("controller", "def f():\n    from ...scenario import Scenario\n"),
    ("kernels", "from adaptive_sarathi.engine.batch import ScheduledBatch\n"),
])
def test_a_forbidden_import_is_caught(tmp_path, folder, source):
    (tmp_path / folder / "sub").mkdir(parents=True)
    path = tmp_path / folder / "sub" / "bad.py"
    path.write_text(source)
    assert violations(path, tmp_path)


@pytest.mark.parametrize("folder, source", [
    ("engine", "from adaptive_sarathi.kernels.attention import backends\n"),
    ("controller", "from adaptive_sarathi.engine.budget import BudgetPolicy\n"),
    ("adaptive_sarathi", "from adaptive_sarathi.controller.tuner import tune\n"),
])
def test_imports_down_the_floors_are_allowed(tmp_path, folder, source):
    (tmp_path / folder).mkdir()
    path = tmp_path / folder / "ok.py"
    path.write_text(source)
    assert not violations(path, tmp_path)
