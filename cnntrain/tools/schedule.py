"""The learning-rate curve of a solver config, as numbers or a plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cnntrain.errors import CnnTrainError
from cnntrain.solvers import learning_rate


def lr_curve(values: Any, points: int = 21) -> list[tuple[int, float]]:
    """(iteration, rate) at ``points`` evenly spaced iterations from 0 to max_iter."""
    last = values.max_iter
    iters = sorted({round(i * last / max(points - 1, 1)) for i in range(points)})
    return [(it, learning_rate(values, it)) for it in iters]


def plot_curve(values: Any, path: Path) -> None:
    """Write the full curve (every iteration) to a PNG; needs the optional matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CnnTrainError("plotting needs matplotlib: pip install 'cnntrain[plot]' "
                            "(or pip install matplotlib)") from None
    iters = range(values.max_iter + 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(list(iters), [learning_rate(values, it) for it in iters])
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{values.lr_policy} schedule")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
