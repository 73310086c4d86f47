"""Dev-set evaluation of every task, as a dict, a terminal table and a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

from kmtl.evaluation.predict import predict_task
from kmtl.files import json_safe, write_atomic
from kmtl.progress import Progress
from kmtl.tasks import KINDS


def evaluate_tasks(model, examples_by_task: Dict[str, Sequence], preprocessor, batch_size: int = 64,
                   figures=None, progress: Optional[str] = None) -> Dict[str, dict]:
    """Per-task dev metrics: accuracy and macro-F1, entity F1 (seqeval), Pearson/Spearman...

    Each task's progress (examples predicted) goes to standard error: a bar on a terminal,
    one line per task elsewhere (`kmtl.progress.Progress`).

    Args:
        model: a `kmtl.MultiTaskModel`.
        examples_by_task: labelled dev `Example`s per task name (tasks without any are skipped).
        preprocessor: the backbone's `kmtl.data.Preprocessor`.
        figures: a folder: also draw each task's figure there (`kmtl.plots.plot_task`: a
            confusion matrix per classification task, F1 per entity type per tagging task).
        progress: a `kmtl.progress` mode (``"off"`` prints nothing); default: the CLI's
            (`kmtl.progress.default_mode`).

    Returns:
        ``{task: {"kind": ..., "examples": n, metric: value, ...}}``.
    """
    by_name = {t.name: t for t in model.tasks}
    report = {}
    for name, examples in examples_by_task.items():
        if not examples:
            continue
        task = by_name[name]
        with Progress(f"evaluate {name}", total=len(examples), unit="examples", mode=progress) as bar:
            predictions = predict_task(model, task, list(examples), preprocessor, batch_size, on_batch=bar.update)
        report[name] = {"kind": task.kind, "examples": len(examples), **task.evaluate(examples, predictions)}
        if figures is not None:
            from kmtl.plots import plot_task

            plot_task(task, list(examples), predictions, figures)
    return report


def format_table(report: Dict[str, dict]) -> str:
    """A plain-text table: one row per task, its headline metric first, then the others (the
    numbers: per-label breakdowns such as a relation task's ``per_relation`` stay in the JSON)."""
    rows = [("task", "kind", "n", "metrics")]
    for name, res in report.items():
        head = KINDS[res["kind"]].primary_metric if res["kind"] in KINDS else None  # what compare judges by
        names = [head] + sorted(k for k in res if k not in ("kind", "examples", head))
        metrics = "  ".join(f"{k}={_fmt(res[k])}" for k in names
                            if isinstance(res.get(k), (int, float)) and not isinstance(res.get(k), bool))
        rows.append((name, res["kind"], str(res["examples"]), metrics))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * max(len(l) for l in lines))
    return "\n".join(lines)


def _fmt(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def write_json(report: Dict[str, dict], path) -> Path:
    """Write the report atomically (temporary file, then rename); NaN becomes null."""
    path = Path(path)
    return write_atomic(path, json.dumps(json_safe(report), indent=2, sort_keys=True) + "\n")
