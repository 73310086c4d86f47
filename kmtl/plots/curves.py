"""Training curves per task: its loss and each of its metrics per epoch, on train and dev."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from kmtl.plots.figure import message, new_figure, save_png

Curves = Dict[str, Dict[str, Dict[str, List[float]]]]
"""``{task: {panel (loss or a metric): {line name: [value per epoch]}}}``."""

SPLIT_STYLE = {"train": "-", "dev": "--"}
RUN_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def history_tasks(history: Mapping[str, Sequence[float]]) -> List[str]:
    """The task names of a Keras ``History.history`` of a kmtl model: ``<task>_loss`` keys.

    Example:
        >>> history_tasks({"loss": [1.0], "sentiment_loss": [0.7], "val_sentiment_loss": [0.6]})
        ['sentiment']
    """
    return sorted(k[:-len("_loss")] for k in history
                  if k.endswith("_loss") and k != "loss" and not k.startswith(("val_", "loss_weight_")))


def curves_from_history(history: Mapping[str, Sequence[float]], tasks: Optional[Sequence[str]] = None,
                        run: str = "") -> Curves:
    """Group a ``History.history`` (or `kmtl.plots.events.read_history`) by task and panel.

    Each task gets a ``loss`` panel and one panel per metric it logged (``accuracy``,
    ``entity_f1``...), each with a ``train`` and (when the run had a dev split) a ``dev`` line.

    Args:
        history: ``{"<task>_<metric>": [...], "val_<task>_<metric>": [...], ...}``.
        tasks: the task names (default: `history_tasks`).
        run: a prefix for the line names (``"multi-task"`` gives ``"multi-task train"``) when
            several runs share a figure (`merge_curves`).

    Example:
        >>> curves_from_history({"ner_loss": [1.2, 0.8], "val_ner_loss": [1.0, 0.9]})
        {'ner': {'loss': {'train': [1.2, 0.8], 'dev': [1.0, 0.9]}}}
    """
    tasks = list(tasks) if tasks is not None else history_tasks(history)
    out = {}
    for task in tasks:
        longer = [t for t in tasks if t != task and t.startswith(task + "_")]  # "ner" vs "ner_extra"
        names = sorted({k[len(task) + 1:] for k in history if k.startswith(task + "_")
                        and not any(k.startswith(t + "_") for t in longer)}, key=lambda m: (m != "loss", m))
        panels = {}
        for name in names:
            lines = {}
            for split, key in (("train", f"{task}_{name}"), ("dev", f"val_{task}_{name}")):
                if history.get(key):
                    lines[f"{run} {split}".strip()] = [float(v) for v in history[key]]
            panels[name] = lines
        out[task] = panels
    return out


def merge_curves(*curves: Curves) -> Curves:
    """Put several runs' curves into one `Curves` (line names must differ: use ``run=``).

    Example:
        >>> merge_curves(curves_from_history(single, ["ner"], run="single-task"),
        ...              curves_from_history(multi, run="multi-task"))
    """
    out: Curves = {}
    for one in curves:
        for task, panels in one.items():
            for panel, lines in panels.items():
                out.setdefault(task, {}).setdefault(panel, {}).update(lines)
    return out


def plot_curves(data: Curves, path, title: str = "training curves") -> Path:
    """Draw one row of panels per task (loss, then each metric) against the epoch.

    Train lines are solid, dev lines dashed; lines of different runs (``"single-task dev"``,
    ``"multi-task dev"``) get different colours, named once in a legend under the panels. A
    panel with nothing logged says so instead of staying blank (a task without a dev split has
    train lines only).

    Args:
        data: ``{task: {panel: {line: [value per epoch]}}}`` (`curves_from_history`,
            `merge_curves`); NaN values are gaps.
        path: the PNG to write.
        title: the figure title.

    Returns:
        ``path``.

    Example:
        >>> plot_curves(curves_from_history(result.history), "runs/demo/curves.png", title="demo")
    """
    tasks = list(data)
    columns = max([len(data[t]) for t in tasks] + [1])
    fig = new_figure(3.4 * columns + 0.6, 2.5 * max(1, len(tasks)) + 0.6)
    fig.suptitle(title)
    if not tasks:
        message(fig.subplots(), "no per-epoch values were logged")
        return save_png(fig, path)
    axes = fig.subplots(len(tasks), columns, squeeze=False)
    runs = sorted({_run_of(line) for t in tasks for lines in data[t].values() for line in lines})
    colour = {run: RUN_COLOURS[i % len(RUN_COLOURS)] for i, run in enumerate(runs)}
    for row, task in enumerate(tasks):
        panels = list(data[task].items())
        for col in range(columns):
            ax = axes[row][col]
            if col >= len(panels):
                ax.set_axis_off()
                continue
            panel, lines = panels[col]
            ax.set_title(f"{task}: {panel}", fontsize=10)
            drawn = False
            for line, values in lines.items():
                if not any(math.isfinite(v) for v in values):
                    continue
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, values, SPLIT_STYLE.get(_split_of(line), "-"), color=colour[_run_of(line)],
                        marker="o", markersize=3, label=line)
                drawn = True
            if not drawn:
                message(ax, "nothing logged" + ("" if any(lines) else f" for {panel}"))
                continue
            ax.set_xlabel("epoch", fontsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    # one legend for the figure, under the panels: the lines are the same in every panel, and a
    # legend inside each panel covered the curves it explains
    legend = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", fontsize=8,
                   ncols=min(len(legend), 4), frameon=False)
    return save_png(fig, path)


def _split_of(line: str) -> str:
    return line.rsplit(" ", 1)[-1]


def _run_of(line: str) -> str:
    return line.rsplit(" ", 1)[0] if " " in line else ""


CURVES_FILE = "curves.png"


def plot_run_curves(run_dir, tasks: Sequence[str], history: Optional[Mapping[str, Sequence[float]]] = None,
                    title: str = "training curves", logs: str = "logs") -> Path:
    """Write ``<run_dir>/curves.png``: `plot_curves` of a run's TensorBoard logs
    (`kmtl.plots.events.read_history`: every epoch, those before a resume included), or of
    ``history`` when the logs hold nothing.

    Example:
        >>> plot_run_curves("runs/demo", ["sentiment", "ner"], result.history, title="demo")
        PosixPath('runs/demo/curves.png')
    """
    from kmtl.plots.events import read_history

    logged = read_history(Path(run_dir) / logs)
    curves = curves_from_history(logged if any(k.endswith("_loss") for k in logged) else (history or {}), tasks)
    return plot_curves(curves, Path(run_dir) / CURVES_FILE, title=title)
