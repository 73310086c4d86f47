"""Heat maps of how tasks affect each other: TAG's lookahead affinity and the gradient cosine
(`kmtl.training.affinity`, `kmtl affinity`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from kmtl.plots.figure import message, new_figure, save_png

DIAGONAL = "#e6e6e6"
"""The background of a task's cell with itself (not coloured: it would set the scale)."""


def display_scale(values) -> int:
    """The power of ten ``e`` to write ``values`` as ``v × 10^e`` (the largest between 1 and 10)
    when they are all small (largest magnitude under 0.1), else 0. Lookahead affinities at a
    fine-tuning learning rate are often 1e-4..1e-3.

    Example:
        >>> display_scale([0.0004, -0.0012]), display_scale([0.2, -0.5])
        (-3, 0)
    """
    finite = [abs(float(v)) for v in np.ravel(values) if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    if top == 0.0 or top >= 0.1:
        return 0
    return int(math.floor(math.log10(top)))


def _panel(fig, ax, matrix: np.ndarray, names: Sequence[str], title: str, limit: Optional[float], label: str,
           xlabel: str, ylabel: str) -> None:
    n = len(names)
    off = ~np.eye(n, dtype=bool)
    values = matrix[off & np.isfinite(matrix)]
    exponent = 0 if limit is not None else display_scale(values)
    factor = 10.0 ** -exponent
    if limit is None:
        limit = float(np.max(np.abs(values))) if values.size else 1.0
        limit = limit or 1.0
    shown = np.where(off, matrix, np.nan)
    image = ax.imshow(shown, cmap="RdBu", vmin=-limit, vmax=limit, aspect="equal")
    ax.set_facecolor(DIAGONAL)  # the masked diagonal (and NaN cells) show the background
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label(label + (f" (×1e{exponent})" if exponent else ""), fontsize=8)
    if exponent:
        bar.ax.yaxis.set_major_formatter(_scaled_formatter(factor))
    font = 9 if n <= 6 else 7
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            if not math.isfinite(value):
                text = "n/a"
            else:
                text = f"{value * factor:.2f}" if i != j or exponent else f"{value:.2f}"
            strong = i != j and math.isfinite(value) and abs(value) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=font,
                    color="white" if strong else ("0.35" if i == j else "black"), style="italic" if i == j else "normal")
    ax.set_xticks(range(n), names, rotation=30 if n > 3 else 0, ha="right" if n > 3 else "center", fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)


def _scaled_formatter(factor: float):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v * factor:g}")


def plot_affinity(names: Sequence[str], affinity, path, cosine=None, title: str = "task affinity",
                  note: str = "") -> Path:
    """Draw the lookahead affinity matrix (and the gradient cosine matrix beside it) as a PNG.

    Cells carry their values; colours are red for negative (the tasks hurt each other), blue
    for positive, on a scale symmetric around 0 set by the off-diagonal cells (the cosine's is
    fixed at ±1). A task's cell with itself is grey: its self-affinity is written in it but not
    coloured. Small affinities are written scaled (``×1e-3`` on the colour bar).

    Args:
        names: the task names, in the matrices' order.
        affinity: ``[tasks, tasks]``, ``affinity[i][j] = Z(i→j)``: row ``i`` the task whose
            step is taken, column ``j`` the task whose loss changes; ``None`` to leave it out.
        path: the PNG to write.
        cosine: ``[tasks, tasks]`` gradient cosines, or ``None``.
        title: the figure title.
        note: a line under the title (steps, probes).

    Returns:
        ``path``.

    Example:
        >>> plot_affinity(["sst2", "ner"], [[.01, -.002], [.003, .02]], "runs/demo/affinity/affinity.png",
        ...               cosine=[[1, -.1], [-.1, 1]])
    """
    names = [str(n) for n in names]
    n = len(names)
    panels = [(m, kind) for m, kind in ((affinity, "affinity"), (cosine, "cosine")) if m is not None]
    side = max(3.4, 0.75 * n + 1.6)
    fig = new_figure(max(1, len(panels)) * (side + 1.3), side + 1.0)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    if not panels or n == 0:
        message(axes[0], "nothing measured")
        return save_png(fig, path)
    for ax, (matrix, kind) in zip(axes, panels):
        matrix = np.asarray(matrix, dtype=np.float64).reshape(n, n)
        if kind == "affinity":
            _panel(fig, ax, matrix, names, "lookahead affinity Z(i→j)\nblue: a step on i lowers j's loss", None,
                   "Z(i→j)", "j: task whose loss changes", "i: task whose gradient steps")
        else:
            _panel(fig, ax, matrix, names, "gradient cosine on the shared encoder\nred: the gradients conflict", 1.0,
                   "cos(g_i, g_j)", "", "")  # symmetric: no axis titles
    return save_png(fig, path)
