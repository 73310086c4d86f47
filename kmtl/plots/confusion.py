"""The confusion matrix of a classification task: gold label (rows) against predicted label (columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from kmtl.plots.figure import message, new_figure, save_png

ANNOTATE_UP_TO = 15
"""Counts are written in the cells of matrices up to this many classes (beyond, colour only)."""


def confusion_data(gold: Sequence[str], predicted: Sequence[str], labels: Optional[Sequence[str]] = None) -> Dict:
    """Count gold/predicted label pairs: ``{"labels": [...], "matrix": [[count]]}``.

    Row ``i`` is gold label ``labels[i]``, column ``j`` predicted label ``labels[j]``. Labels
    seen in ``gold`` or ``predicted`` but not in ``labels`` are appended (sorted), so no
    example is lost.

    Example:
        >>> confusion_data(["pos", "neg", "pos"], ["pos", "pos", "pos"], ["neg", "pos"])
        {'labels': ['neg', 'pos'], 'matrix': [[0, 1], [0, 2]]}
    """
    labels = list(labels or [])
    extra = sorted({str(x) for x in list(gold) + list(predicted)} - set(labels))
    labels += extra
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for g, p in zip(gold, predicted):
        matrix[index[str(g)], index[str(p)]] += 1
    return {"labels": labels, "matrix": matrix.tolist()}


def plot_confusion(data: Dict, path, title: str = "confusion matrix") -> Path:
    """Draw a confusion matrix as a PNG: cell colour is the share of the gold row (recall per
    class on the diagonal), the count is written in the cell (up to `ANNOTATE_UP_TO` classes).

    The image grows with the number of classes, and tick labels shrink, so 40 classes stay
    legible.

    Args:
        data: ``{"labels": [...], "matrix": [[count]]}`` as `confusion_data` returns
            (rows: gold, columns: predicted).
        path: the PNG to write.
        title: the figure title (e.g. the task name).

    Returns:
        ``path``.

    Example:
        >>> plot_confusion(confusion_data(gold, pred, task.labels), "runs/demo/sentiment_confusion.png",
        ...                title="sentiment")
    """
    labels = [str(label) for label in data["labels"]]
    counts = np.asarray(data["matrix"], dtype=float).reshape(len(labels), len(labels))
    n = len(labels)
    longest = max((len(label) for label in labels), default=1)
    font = 9 if n <= 12 else 7
    label_inches = min(2.6, 0.3 + font * 0.55 / 72 * min(longest, 40))
    side = max(3.2, (0.3 if n <= 12 else 0.22) * n + 1.0)
    fig = new_figure(side + label_inches + 1.4, side + label_inches + 0.6)
    ax = fig.subplots()
    total = int(counts.sum())
    accuracy = f", accuracy {np.trace(counts) / total:.3f}" if total else ""
    ax.set_title(f"{title}: {total} examples{accuracy}")
    if n == 0 or total == 0:
        message(ax, "no examples")
        return save_png(fig, path)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the gold label's examples")
    shown = [_cut(label) for label in labels]
    ax.set_xticks(range(n), shown, rotation=90 if n > 4 or longest > 10 else 0, fontsize=font)
    ax.set_yticks(range(n), shown, fontsize=font)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("gold label")
    if n <= ANNOTATE_UP_TO:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=font,
                            color="white" if share[i, j] > 0.6 else "black")
    return save_png(fig, path)


def _cut(label: str, width: int = 40) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"
