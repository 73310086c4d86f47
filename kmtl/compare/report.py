"""The comparison as a terminal table, Markdown, JSON, TensorBoard scalars and figures (PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from kmtl.files import json_safe, write_atomic

JSON_FILE = "compare.json"
MARKDOWN_FILE = "compare.md"
LOGS_FOLDER = "logs"
DELTAS_FIGURE = "deltas.png"
CURVES_FIGURE = "curves.png"
RUN_LOGS = "logs"  # a run folder's TensorBoard logs (kmtl.training.run_folder.LOGS_FOLDER)


def _num(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _signed(value, digits=2, unit="") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}{unit}"


def _rows(report: dict):
    for task, d in report["tasks"].items():
        arrow = "↓" if d["lower_is_better"] else "↑"
        yield [task, f"{d['metric']} {arrow}", _num(d["single_task"]), _num(d["multi_task"]),
               _signed(None if d["difference"] is None else 100 * d["difference"]),
               _signed(d["relative_percent"], unit=" %")]


HEADER = ["task", "metric", "single-task", "multi-task", "Δ (points)", "Δ (relative)"]


def _summary_lines(report: dict):
    s, p = report["seconds"], report["parameters"]
    return [
        f"Δm = {_signed(report['delta_m'], unit=' %')} (mean relative change over {len(report['tasks'])} tasks; "
        "positive: multi-task is better)",
        f"training time: single-task {s['single_task_total']:.1f} s in all "
        f"({', '.join(f'{t} {v:.1f}' for t, v in s['single_task'].items())}), multi-task {s['multi_task']:.1f} s",
        f"parameters served: {len(p['single_task'])} single-task models {p['single_task_total']:,}, "
        f"one multi-task model {p['multi_task']:,} ({p['multi_task'] / max(1, p['single_task_total']):.0%})",
    ]


def format_text(report: dict) -> str:
    """A plain-text table for the terminal, then Δm, training time and parameters served."""
    rows = [HEADER] + list(_rows(report))
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + [""] + _summary_lines(report))


def format_markdown(report: dict, figures: dict = None) -> str:
    """The report as Markdown: the command and date, a per-task table, the summary and the
    ``figures`` (``{caption: file name beside compare.md}``) as images."""
    out = [f"# kmtl compare: {report['name']}", "",
           f"`{report['command']}` on {report['date']}; backbone `{report['backbone']}`"
           + (f", teachers: {', '.join(report['teachers'])}" if report.get("teachers") else "")
           + (f"; machine: {report['machine']}" if report.get("machine") else ""), ""]
    if report.get("recipe"):
        out += ["Multi-task recipe (the baselines share its backbone, data and training section): "
                + ", ".join(f"{k} {v}" for k, v in report["recipe"].items()), ""]
    out += ["| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(r) + " |" for r in _rows(report)]
    out += [""] + [f"- {line}" for line in _summary_lines(report)]
    cached = [t for t, c in report["cached"].items() if c]
    if cached:
        out.append(f"- from the cache (not retrained this time): {', '.join(cached)}")
    for caption, name in (figures or {}).items():
        out += ["", f"![{caption}]({name})"]
    return "\n".join(out) + "\n"


def write_reports(report: dict, folder) -> dict:
    """Write ``compare.json``, ``compare.md``, TensorBoard scalars (``logs/``) and the figures
    (`write_figures`: ``deltas.png``, ``curves.png``) into ``folder``.

    Returns:
        ``{"json": path, "markdown": path, "logs": path, "deltas": path}``, and ``"curves"``
        when the runs' logs hold curves.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / JSON_FILE, "markdown": folder / MARKDOWN_FILE, "logs": folder / LOGS_FOLDER}
    write_atomic(paths["json"], json.dumps(json_safe(report), indent=2, sort_keys=True) + "\n")
    figures = write_figures(report, folder)
    paths.update(figures)
    captions = {"deltas": "per-task Δ", "curves": "training curves: single-task vs multi-task"}
    markdown = format_markdown(report, {captions[k]: p.name for k, p in figures.items()})
    write_atomic(paths["markdown"], markdown)
    write_tensorboard(report, paths["logs"], markdown)
    return paths


def write_figures(report: dict, folder) -> dict:
    """Draw the comparison into ``folder``: ``deltas.png`` (`kmtl.plots.plot_deltas`: per-task
    relative Δ and Δm; error bars once a task's ``relative_percent`` holds one value per seed)
    and ``curves.png`` (`kmtl.plots.plot_curves`: each task's loss and metrics per epoch, its
    single-task baseline against the multi-task model, read from the runs' TensorBoard logs;
    left out when no run folder named in ``report["runs"]`` has logs).

    Returns:
        ``{"deltas": path}`` and ``"curves": path`` when drawn.

    Example:
        >>> write_figures(report, "runs/four_tasks/compare")["deltas"]
        PosixPath('runs/four_tasks/compare/deltas.png')
    """
    from kmtl.plots import curves_from_history, merge_curves, plot_curves, plot_deltas, read_history

    folder = Path(folder)
    tasks = list(report["tasks"])
    paths = {"deltas": plot_deltas(report["tasks"], folder / DELTAS_FIGURE, delta_m=report.get("delta_m"),
                                   title=f"{report.get('name', 'compare')}: multi-task vs single-task")}
    runs = report.get("runs") or {}
    parts = [curves_from_history(read_history(Path(run) / RUN_LOGS), [task], run="single-task")
             for task, run in (runs.get("single_task") or {}).items() if task in tasks]
    if runs.get("multi_task"):
        parts.append(curves_from_history(read_history(Path(runs["multi_task"]) / RUN_LOGS), tasks, run="multi-task"))
    curves = merge_curves(*parts)
    curves = {t: curves[t] for t in tasks if any(curves.get(t, {}).values())}
    if curves:
        paths["curves"] = plot_curves(curves, folder / CURVES_FIGURE,
                                      title=f"{report.get('name', 'compare')}: single-task vs multi-task")
    return paths


def write_tensorboard(report: dict, logdir, markdown: str = None) -> None:
    """Scalars ``compare/<task>/{single_task,multi_task,difference,relative_percent}``,
    ``compare/delta_m``, ``compare/seconds/*`` and ``compare/parameters/*`` (step 0), and the
    Markdown report as text."""
    import tensorflow as tf

    def scalar(name, value):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            tf.summary.scalar(f"compare/{name}", float(value), step=0)

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for task, d in report["tasks"].items():
            for key in ("single_task", "multi_task", "difference", "relative_percent"):
                scalar(f"{task}/{key}", d[key])
        scalar("delta_m", report["delta_m"])
        scalar("seconds/single_task_total", report["seconds"]["single_task_total"])
        scalar("seconds/multi_task", report["seconds"]["multi_task"])
        scalar("parameters/single_task_total", report["parameters"]["single_task_total"])
        scalar("parameters/multi_task", report["parameters"]["multi_task"])
        if markdown is not None:
            tf.summary.text("compare/report", markdown, step=0)
    writer.flush()
    writer.close()
