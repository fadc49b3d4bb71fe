"""Figures of a tuning study: the optimization history and the parameter importances (matplotlib,
the `experiments` extra; nothing else in the package needs it)."""

from __future__ import annotations

from pathlib import Path

from adaptive_sarathi.controller.tuner import TuneResult


def require_matplotlib() -> None:
    """Raise ValueError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plots needs matplotlib: pip install matplotlib (or the package's "
                         "'experiments' extra)") from None


def write_tune_plots(result: TuneResult, folder: Path) -> list[Path]:
    """Write optimization_history.png (every trial's value and the best so far, by trial number)
    and, when the study has them, param_importances.png into `folder` (created); return the paths
    written."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    unit = "goodput req/s" if result.objective == "goodput" else "qps"
    numbers = [t.number for t in result.trials]
    values = [t.value for t in result.trials]
    best, running = [], float("-inf")
    for value in values:
        running = max(running, value)
        best.append(running)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(numbers, values, "o", label="trial")
    ax.step(numbers, best, where="post", label="best so far")
    ax.axhline(result.default_value, color="grey", linestyle=":", label="defaults (trial 0)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{result.objective} ({unit})")
    ax.set_title(f"tuning {result.policy}: {result.objective}")
    ax.legend()
    fig.tight_layout()
    paths = [folder / "optimization_history.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    if result.importances:
        names = list(result.importances)
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(names)))
        ax.barh(names, [result.importances[n] for n in names])
        ax.set_xlabel("importance (fANOVA share of the objective's variance)")
        ax.invert_yaxis()
        fig.tight_layout()
        paths.append(folder / "param_importances.png")
        fig.savefig(paths[1], dpi=120)
        plt.close(fig)
    return paths
