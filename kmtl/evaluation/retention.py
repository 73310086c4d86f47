"""Retention: how much the old tasks moved when a task was added to a trained model."""

from __future__ import annotations

import json
import math
from pathlib import Path

from kmtl.evaluation.delta import lower_is_better, primary_metric, relative_change
from kmtl.files import json_safe, write_atomic

JSON_FILE = "retention.json"
MARKDOWN_FILE = "retention.md"


def retention_report(before: dict, after: dict, init_from=None) -> dict:
    """Old tasks' primary metric before (the run it started from) and after; new tasks' score.

    Args:
        before: ``{task: metrics}`` of the old model on this config's dev splits.
        after: ``{task: metrics}`` of the new model.
        init_from: the old run folder (recorded).

    Returns:
        ``{"init_from", "old_tasks": {task: {"metric", "before", "after", "difference",
        "relative_percent"}}, "new_tasks": {task: {"metric", "score"}}, "mean_relative_percent"}``.

    Example:
        >>> retention_report({"a": {"kind": "classification", "accuracy": 0.8}},
        ...                  {"a": {"kind": "classification", "accuracy": 0.78},
        ...                   "b": {"kind": "tagging", "entity_f1": 0.5}})["old_tasks"]["a"]["difference"]
        -0.02...
    """
    old, new = {}, {}
    for task, metrics in after.items():
        metric = primary_metric(metrics["kind"])
        if task in before:
            lower = lower_is_better(metric)
            b, a = before[task].get(metric), metrics.get(metric)
            missing = b is None or a is None or math.isnan(b) or math.isnan(a)
            old[task] = {"metric": metric, "before": b, "after": a,
                         "difference": math.nan if missing else (b - a if lower else a - b),
                         "relative_percent": math.nan if missing else relative_change(a, b, lower)}
        else:
            new[task] = {"metric": metric, "score": metrics.get(metric)}
    changes = [d["relative_percent"] for d in old.values()]
    mean = sum(changes) / len(changes) if changes else math.nan
    return {"init_from": str(init_from) if init_from else None, "old_tasks": old, "new_tasks": new,
            "mean_relative_percent": mean}


def format_retention(report: dict) -> str:
    """Markdown: a table of the old tasks (before, after, Δ) and the new tasks' scores."""
    def num(v, fmt="{:.4f}"):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = [f"retention after adding {', '.join(report['new_tasks']) or 'no task'} to {report['init_from']}", "",
             "| task | metric | before | after | Δ (points) | Δ (relative) |", "|---|---|---:|---:|---:|---:|"]
    for task, d in report["old_tasks"].items():
        diff = None if d["difference"] is None or math.isnan(d["difference"]) else 100 * d["difference"]
        lines.append(f"| {task} | {d['metric']} | {num(d['before'])} | {num(d['after'])} | "
                     f"{num(diff, '{:+.2f}')} | {num(d['relative_percent'], '{:+.2f} %')} |")
    for task, d in report["new_tasks"].items():
        lines.append(f"| {task} (new) | {d['metric']} | | {num(d['score'])} | | |")
    lines += ["", f"mean relative change of the old tasks: {num(report['mean_relative_percent'], '{:+.2f} %')}"]
    return "\n".join(lines) + "\n"


def write_retention(report: dict, folder) -> Path:
    """Write ``retention.json`` and ``retention.md`` into ``folder``; returns the JSON path."""
    folder = Path(folder)
    clean = json_safe(report)
    write_atomic(folder / MARKDOWN_FILE, format_retention(report))
    return write_atomic(folder / JSON_FILE, json.dumps(clean, indent=2, sort_keys=True) + "\n")
