"""Precision, recall and F1 per entity type of a tagging task (seqeval's chunk rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from kmtl.plots.figure import message, new_figure, save_png

SUMMARY_ROWS = ("micro avg", "macro avg", "weighted avg")


def entity_f1_data(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> Dict[str, dict]:
    """Per entity type: ``{type: {"precision", "recall", "f1", "support"}}`` from BIO tag sequences.

    The scores are seqeval's (CoNLL chunks), the same rules as the task's ``entity_f1``; a type
    that is only predicted has support 0. Sentences without any entity give ``{}``.

    Example:
        >>> entity_f1_data([["B-PER", "O"]], [["B-PER", "O"]])["PER"]["f1"]
        1.0
    """
    from seqeval.metrics import classification_report

    if not any(tag.startswith(("B-", "I-")) for s in list(gold) + list(predicted) for tag in s):
        return {}
    report = classification_report([list(s) for s in gold], [list(s) for s in predicted],
                                    output_dict=True, zero_division=0)
    return {kind: {"precision": float(r["precision"]), "recall": float(r["recall"]),
                   "f1": float(r["f1-score"]), "support": int(r["support"])}
            for kind, r in sorted(report.items()) if kind not in SUMMARY_ROWS}


def plot_entity_f1(data: Dict[str, dict], path, title: str = "entity types") -> Path:
    """Draw precision, recall and F1 per entity type as horizontal bars, one group per type
    (most frequent gold type on top), each labelled with its gold count.

    Args:
        data: ``{type: {"precision", "recall", "f1", "support"}}`` as `entity_f1_data` returns;
            ``{}`` (no entity in gold or predictions) draws a figure that says so.
        path: the PNG to write.
        title: the figure title (e.g. the task name).

    Returns:
        ``path``.

    Example:
        >>> plot_entity_f1({"PER": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 120}},
        ...                "runs/demo/entities_entity_f1.png", title="entities")
    """
    kinds = sorted(data, key=lambda k: (-data[k].get("support", 0), k))
    height = max(2.4, 0.55 * len(kinds) + 1.4)
    fig = new_figure(7.0, height)
    ax = fig.subplots()
    ax.set_title(f"{title}: precision, recall and F1 per entity type")
    if not kinds:
        message(ax, "no entities in the gold tags or the predictions")
        return save_png(fig, path)
    y = np.arange(len(kinds))[::-1]
    bar = 0.26
    for offset, key, colour in ((bar, "precision", "#9ecae1"), (0.0, "recall", "#4292c6"), (-bar, "f1", "#08306b")):
        values = [float(data[k].get(key, 0.0)) for k in kinds]
        ax.barh(y + offset, values, height=bar, color=colour, label=key)
    for yi, k in zip(y, kinds):
        ax.text(min(float(data[k].get("f1", 0.0)), 1.0) + 0.01, yi - bar, f"{float(data[k].get('f1', 0.0)):.2f}",
                va="center", fontsize=8)
    ax.set_yticks(y, [f"{_cut(k)} (n={data[k].get('support', 0)})" for k in kinds],
                  fontsize=9 if len(kinds) <= 20 else 7)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("score (n: gold entities of the type)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8, ncols=3, frameon=False)
    return save_png(fig, path)


def _cut(label: str, width: int = 30) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"
