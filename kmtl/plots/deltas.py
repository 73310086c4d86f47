"""The per-task Δ of `kmtl compare`: how much better (or worse) the multi-task model is than
each task's single-task baseline, with Δm beside it."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from kmtl.plots.figure import new_figure, save_png

BETTER, WORSE, DELTA_M, GAP = "#2a9d5c", "#c8553d", "#555555", "#999999"


def seed_values(value) -> list:
    """The per-seed values of a Δ: a number gives one value, a sequence one per seed; missing
    values (``None``, NaN) are dropped.

    Example:
        >>> seed_values([1.0, None, 2.0]), seed_values(0.5), seed_values(float("nan"))
        ([1.0, 2.0], [0.5], [])
    """
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def plot_deltas(deltas: Mapping[str, dict], path, delta_m: Optional[float] = None,
                title: str = "multi-task vs single-task", finetuned: Optional[Mapping[str, dict]] = None,
                finetuned_delta_m=None) -> Path:
    """Draw each task's relative change (percent, positive: multi-task is better) as a bar,
    and Δm as a last grey bar.

    With one seed the bars are plain. When a task's ``relative_percent`` holds one value per
    seed (a list), the bar is their mean, the error bar their sample standard deviation and
    each seed a dot; Δm may be a list the same way. A missing Δ (NaN, ``None``: the baseline
    scored 0 or a task has no value) draws no bar but ``n/a``. With ``finetuned`` (MT-DNN's
    second stage, `kmtl compare --finetune`) each task gets a second, hatched bar beside the
    multi-task one: the fine-tuned models against the same single-task baselines.

    Args:
        deltas: ``{task: {"metric", "lower_is_better", "relative_percent", ...}}``, the
            ``tasks`` of a compare report (`kmtl.compare.task_deltas`).
        path: the PNG to write.
        delta_m: the report's ``delta_m`` (percent), or ``None`` to leave it out.
        title: the figure title.
        finetuned: ``{task: {"relative_percent": ...}}`` with the keys of ``deltas``, or ``None``.
        finetuned_delta_m: the fine-tuned models' Δm (a number or one per seed).

    Returns:
        ``path``.

    Example:
        >>> plot_deltas(report["tasks"], "runs/demo/compare/deltas.png", delta_m=report["delta_m"])
    """
    names = [f"{task}\n{d.get('metric', '')} {'↓' if d.get('lower_is_better') else '↑'}".strip()
             for task, d in deltas.items()]
    series = [[seed_values(d.get("relative_percent")) for d in deltas.values()]]
    totals = [delta_m]
    if finetuned is not None:
        series.append([seed_values((finetuned.get(task) or {}).get("relative_percent")) for task in deltas])
        totals.append(finetuned_delta_m)
    has_total = delta_m is not None or not deltas
    if has_total:
        names.append("Δm\n(mean)")
        for values, total in zip(series, totals):
            values.append(seed_values(total))
    seeds = max([len(v) for values in series for v in values] + [1])
    width = max(4.5, (1.1 + 0.5 * (len(series) - 1)) * len(names) + 1.5)
    fig = new_figure(width, 4.2)
    ax = fig.subplots()
    title = title + (f" (mean ± sd over {seeds} seeds)" if seeds > 1 else "")
    # wrapped to the figure's width (about 9 characters an inch at 11 points), so that a long
    # name on a narrow figure (few tasks) is not cut off at the edges
    ax.set_title("\n".join(textwrap.fill(line, int(width * 9), break_on_hyphens=False) for line in title.split("\n")),
                 fontsize=11)
    x = np.arange(len(names))
    bar = 0.6 / len(series)
    top = 1.0
    for k, values in enumerate(series):
        at = x + (k - (len(series) - 1) / 2) * bar
        colours = [BETTER if v and np.mean(v) >= 0 else WORSE for v in values]
        if has_total:
            colours[-1] = DELTA_M
        means = [float(np.mean(v)) if v else 0.0 for v in values]
        errors = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        present = [bool(v) for v in values]
        ax.bar(at[present], np.asarray(means)[present], color=np.asarray(colours)[present], width=bar * 0.95,
               yerr=np.asarray(errors)[present] if seeds > 1 else None, capsize=3, ecolor="black",
               hatch="//" if k else None, edgecolor="white" if k else None, alpha=0.7 if k else 1.0)
        if seeds > 1:
            for xi, v in zip(at, values):
                if len(v) > 1:
                    ax.scatter(np.full(len(v), xi) + np.linspace(-bar / 5, bar / 5, len(v)), v, s=10, color="black",
                               zorder=3)
        top = max([top] + [abs(m) + e for m, e in zip(means, errors)] + [abs(s) for v in values for s in v])
        for xi, m, e, ok, v in zip(at, means, errors, present, values):
            text = f"{m:+.2f} %" if ok else "n/a"
            # past the error bar and the seeds' dots, so that neither covers the figure
            y = (max([m + e] + v) if m >= 0 else min([m - e] + v)) if ok else 0.0
            ax.annotate(text, (xi, y), xytext=(0, 4 if y >= 0 else -4), textcoords="offset points", ha="center",
                        va="bottom" if y >= 0 else "top", fontsize=8 if len(series) == 1 else 6.5,
                        color="black" if ok else GAP)
    if len(series) > 1:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor=GAP, label="multi-task"),
                           Patch(facecolor=GAP, hatch="//", edgecolor="white", alpha=0.7,
                                 label="fine-tuned from it (MT-DNN)")], fontsize=8, loc="best")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylim(-1.3 * top, 1.3 * top)
    ax.set_xticks(x, names, fontsize=8 if len(names) <= 8 else 7, rotation=0 if len(names) <= 8 else 45)
    ax.set_ylabel("relative change vs single-task (%)\npositive: better than single-task", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_xlim(-0.6, len(names) - 0.4)
    if not math.isfinite(top):
        ax.set_ylim(-1, 1)
    return save_png(fig, path)
