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


def _seeds(report: dict) -> list:
    return list(report.get("seeds") or [])


def several_seeds(report: dict) -> bool:
    """Whether ``report`` aggregates several seeds (`kmtl.compare.run.aggregate_seeds`)."""
    return len(_seeds(report)) > 1


def _spread(mean, sd, digits=4, scale=1.0, signed=False) -> str:
    """``"0.8123 ± 0.0042"``: a mean and its standard deviation (the mean alone without one)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{scale * mean:+.{digits}f}" if signed else f"{scale * mean:.{digits}f}"
    return text if sd is None else f"{text} ± {scale * sd:.{digits}f}"


def _interval(ci, digits=2, scale=100.0) -> str:
    return "n/a" if ci is None else f"[{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]"


def _chance_note(report: dict, task: str) -> str:
    c = (report.get("chance") or {}).get(task) or {}
    if c.get("single_task") and c.get("multi_task"):
        return "not a result: at chance in both"
    if c.get("single_task"):
        return "single-task at chance"
    if c.get("multi_task"):
        return "multi-task at chance"
    return ""


def _any_chance(report: dict) -> bool:
    return any(c.get("single_task") or c.get("multi_task") for c in (report.get("chance") or {}).values())


def _rows(report: dict):
    several, notes = several_seeds(report), _any_chance(report)
    for task, d in report["tasks"].items():
        arrow = "↓" if d["lower_is_better"] else "↑"
        note = _chance_note(report, task)
        if several:
            verdict = d.get("verdict") or ""
            note = verdict if not note or note == verdict else (note if note.startswith("not a result") else
                                                                f"{verdict}; {note}")
            yield [task, f"{d['metric']} {arrow}", str(d.get("n", "")), _spread(d["single_task"], d.get("single_task_sd")),
                   _spread(d["multi_task"], d.get("multi_task_sd")),
                   _spread(d["difference"], d.get("difference_sd"), digits=2, scale=100.0, signed=True),
                   _interval(d.get("difference_ci95")), _signed(d["relative_percent"], unit=" %"), note]
            continue
        row = [task, f"{d['metric']} {arrow}", _num(d["single_task"]), _num(d["multi_task"]),
               _signed(None if d["difference"] is None else 100 * d["difference"]),
               _signed(d["relative_percent"], unit=" %")]
        yield row + [note] if notes else row


HEADER = ["task", "metric", "single-task", "multi-task", "Δ (points)", "Δ (relative)"]
HEADER_SEEDS = ["task", "metric", "n", "single-task", "multi-task", "Δ (points)", "Δ 95 % CI", "Δ (relative)", "note"]
"""The columns with several seeds: mean ± standard deviation over the seeds, the Δ's Student-t
95 % interval (points) and what it says (within noise, better, worse, at chance)."""


def _header(report: dict) -> list:
    if several_seeds(report):
        return HEADER_SEEDS
    return HEADER + ["note"] if _any_chance(report) else HEADER


def _delta_m_line(report: dict) -> str:
    tail = f"(mean relative change over {len(report['tasks'])} tasks; positive: multi-task is better)"
    if not several_seeds(report):
        return f"Δm = {_signed(report['delta_m'], unit=' %')} {tail}"
    n = len(finite_values(report.get("delta_m_per_seed") or []))
    sd, ci = report.get("delta_m_sd"), report.get("delta_m_ci95")
    spread = f" ± {sd:.2f}" if sd is not None else ""
    interval = f", 95 % CI {_interval(ci, scale=1.0)} %" if ci is not None else ""
    seeds = len(_seeds(report))
    over = f"{n} seed{'' if n == 1 else 's'}" if n == seeds else f"{n} of {seeds} seeds (the others n/a)"
    return (f"Δm = {_signed(report['delta_m'], unit=' %')}{spread} over {over}{interval}: "
            f"{report.get('delta_m_verdict', '')} {tail}")


def finite_values(values) -> list:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _chance_lines(report: dict) -> list:
    lines = []
    for task, c in (report.get("chance") or {}).items():
        if not (c.get("single_task") or c.get("multi_task")):
            continue
        d = report["tasks"][task]
        level = f"chance {c['level']:.4f}" if c.get("metric") not in ("pearson", "spearman") else "chance 0"
        why = f"{level}: {c.get('how')}; at chance: {c.get('rule')}"
        mean = "mean " if several_seeds(report) else ""
        if c.get("single_task") and c.get("multi_task"):
            lines.append(f"⚠ {task}: {c['metric']} at chance in both runs (single-task {mean}{_num(d['single_task'])}, "
                         f"multi-task {mean}{_num(d['multi_task'])}; {why}): neither model learnt the task, "
                         "its Δ is not a result")
        else:
            side = "single-task" if c.get("single_task") else "multi-task"
            value = d["single_task"] if c.get("single_task") else d["multi_task"]
            lines.append(f"⚠ {task}: {side} {c['metric']} at chance ({mean}{_num(value)}; {why}): the {side} model "
                         "did not learn the task" + (", so its Δ is against an untrained baseline"
                                                     if c.get("single_task") else ""))
    return lines


def _summary_lines(report: dict):
    s, p = report["seconds"], report["parameters"]
    seeds, several = _seeds(report), several_seeds(report)
    lines = []
    if several:
        lines.append(f"seeds: {', '.join(map(str, seeds))} (each a run of every baseline and of the multi-task model); "
                     "Δ paired by seed; ± is the standard deviation over the seeds, the 95 % CI a Student-t interval; "
                     "within noise: the interval holds 0")
    lines.append(_delta_m_line(report))
    without = report.get("delta_m_without_chance")
    if without:
        extra = (f" ± {without['sd']:.2f}, 95 % CI {_interval(without.get('ci95'), scale=1.0)} %: {without.get('verdict')}"
                 if several and without.get("sd") is not None else "")
        lines.append(f"Δm without the tasks at chance in both runs ({', '.join(without['left_out'])}) = "
                     f"{_signed(without['delta_m'], unit=' %')}{extra}")
    over = f" over {len(seeds)} seeds" if several else ""
    lines += [
        f"training time{over}: single-task {s['single_task_total']:.1f} s in all "
        f"({', '.join(f'{t} {v:.1f}' for t, v in s['single_task'].items())}), multi-task {s['multi_task']:.1f} s",
        f"parameters served: {len(p['single_task'])} single-task models {p['single_task_total']:,}, "
        f"one multi-task model {p['multi_task']:,} ({p['multi_task'] / max(1, p['single_task_total']):.0%})",
    ]
    if len(seeds) == 1:
        lines.append(f"one seed (training.seed {seeds[0]}): no spread; `kmtl compare --seeds 3` gives each Δ a 95 % "
                     "interval, to tell it from noise")
    return lines + _chance_lines(report)


FINETUNE_HEADER = ["task", "metric", "single-task", "multi-task", "multi-task + fine-tune", "Δ (points)",
                   "Δ (relative)"]
FINETUNE_TITLE = ("Second stage (MT-DNN, Liu et al., ACL 2019): each task fine-tuned alone from the multi-task "
                  "model, with its baseline's data and schedule; Δ against the single-task baseline")


def _finetune_rows(report: dict):
    stage = report["finetuned"]
    for task, d in stage["tasks"].items():
        arrow = "↓" if d["lower_is_better"] else "↑"
        yield [task, f"{d['metric']} {arrow}", _num(d["single_task"]), _num(report["tasks"][task]["multi_task"]),
               _num(d["finetuned"]), _signed(None if d["difference"] is None else 100 * d["difference"]),
               _signed(d["relative_percent"], unit=" %")]


def _finetune_summary(report: dict) -> str:
    stage = report["finetuned"]
    over = f" (mean over {len(_seeds(report))} seeds)" if several_seeds(report) else ""
    return (f"Δm after fine-tuning = {_signed(stage['delta_m'], unit=' %')}{over} (multi-task alone: "
            f"{_signed(report['delta_m'], unit=' %')}); fine-tuning time {sum(stage['seconds'].values()):.1f} s in all; "
            f"serving it takes {len(stage['tasks'])} models again; each task trained twice as long as its baseline "
            "(the multi-task run, then its baseline's schedule again): before reading a gain as transfer, compare "
            "with a baseline trained twice as long")


def _table_text(header: list, rows: list) -> list:
    rows = [header] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 or i == len(header) - 1 and header[-1] == "note" else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return lines


def format_text(report: dict) -> str:
    """A plain-text table for the terminal, then Δm, training time, parameters served and the
    tasks at chance; with several seeds, each figure's mean ± standard deviation and the Δ's
    95 % interval and verdict."""
    lines = _table_text(_header(report), list(_rows(report))) + [""] + _summary_lines(report)
    if report.get("finetuned"):
        lines += ["", FINETUNE_TITLE, ""] + _table_text(FINETUNE_HEADER, list(_finetune_rows(report)))
        lines += ["", _finetune_summary(report)]
    return "\n".join(lines)


def _cached_names(report: dict) -> list:
    if not several_seeds(report):
        return [t for t, c in report["cached"].items() if c]
    seeds = _seeds(report)
    out = []
    for key, flags in report["cached"].items():
        hits = [str(s) for s, c in zip(seeds, flags) if c]
        if hits:
            out.append(f"{key} (seed{'s' if len(hits) > 1 else ''} {', '.join(hits)})")
    return out


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
    header = _header(report)
    align = {"task": "---", "metric": "---", "note": "---"}
    out += ["| " + " | ".join(header) + " |", "|" + "|".join(align.get(h, "---:") for h in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in _rows(report)]
    out += [""] + [f"- {line}" for line in _summary_lines(report)]
    cached = _cached_names(report)
    if cached:
        out.append(f"- from the cache (not retrained this time): {', '.join(cached)}")
    if report.get("finetuned"):
        out += ["", f"## {FINETUNE_TITLE}", "", "| " + " | ".join(FINETUNE_HEADER) + " |",
                "|---|---|" + "---:|" * (len(FINETUNE_HEADER) - 2)]
        out += ["| " + " | ".join(r) + " |" for r in _finetune_rows(report)]
        out += ["", f"- {_finetune_summary(report)}"]
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
    relative Δ and Δm; with several seeds the mean, an error bar of one standard deviation and
    a dot per seed)
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
    deltas, delta_m = report["tasks"], report.get("delta_m")
    stage = report.get("finetuned")  # --finetune: a hatched bar beside each multi-task one
    tuned, tuned_m = (stage["tasks"], stage.get("delta_m")) if stage else (None, None)
    if several_seeds(report):  # one bar per task: the mean, its error bar the sd, a dot per seed
        deltas = {t: {**d, "relative_percent": d["per_seed"]["relative_percent"]} for t, d in deltas.items()}
        delta_m = report.get("delta_m_per_seed", delta_m)
        if stage:
            tuned = {t: {"relative_percent": d["per_seed"]["relative_percent"]} for t, d in tuned.items()}
            tuned_m = stage.get("delta_m_per_seed", tuned_m)
    notes = {t: _chance_note(report, t) for t in deltas}  # a task at chance says so under its bar
    label = {t: f"{t}\n({notes[t].split(':')[0]})" if notes[t] else t for t in deltas}
    deltas = {label[t]: d for t, d in deltas.items()}
    tuned = {label[t]: d for t, d in tuned.items() if t in label} if tuned else None
    title = f"{report.get('name', 'compare')}: multi-task vs single-task"
    paths = {"deltas": plot_deltas(deltas, folder / DELTAS_FIGURE, delta_m=delta_m, title=title,
                                   finetuned=tuned, finetuned_delta_m=tuned_m)}
    runs = report.get("runs") or {}
    first = _first_seed  # with several seeds, the curves are those of the first seed's runs
    parts = [curves_from_history(read_history(Path(first(run)) / RUN_LOGS), [task], run="single-task")
             for task, run in (runs.get("single_task") or {}).items() if task in tasks]
    if runs.get("multi_task"):
        parts.append(curves_from_history(read_history(Path(first(runs["multi_task"])) / RUN_LOGS), tasks,
                                         run="multi-task"))
    curves = merge_curves(*parts)
    curves = {t: curves[t] for t in tasks if any(curves.get(t, {}).values())}
    if curves:
        seed = f" (seed {_seeds(report)[0]})" if several_seeds(report) else ""
        paths["curves"] = plot_curves(curves, folder / CURVES_FIGURE,
                                      title=f"{report.get('name', 'compare')}: single-task vs multi-task{seed}")
    return paths


def _first_seed(value):
    """A run folder of a report: the first seed's when ``value`` holds one per seed."""
    return value[0] if isinstance(value, list) else value


def write_tensorboard(report: dict, logdir, markdown: str = None) -> None:
    """Scalars ``compare/<task>/{single_task,multi_task,difference,relative_percent}``,
    ``compare/delta_m`` (with several seeds the means, and ``*_sd``, ``*_ci95_{low,high}`` beside
    them), ``compare/seconds/*`` and ``compare/parameters/*`` (step 0), with ``--finetune``
    ``compare/<task>/finetuned``, ``.../finetuned_difference``, ``.../finetuned_relative_percent``
    and ``compare/delta_m_finetuned``; and the Markdown report as text."""
    import tensorflow as tf

    def scalar(name, value):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            tf.summary.scalar(f"compare/{name}", float(value), step=0)

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for task, d in report["tasks"].items():
            for key in ("single_task", "multi_task", "difference", "relative_percent"):
                scalar(f"{task}/{key}", d[key])
            for key in ("single_task_sd", "multi_task_sd", "difference_sd", "relative_percent_sd"):
                scalar(f"{task}/{key}", d.get(key))
            for key in ("difference_ci95", "relative_percent_ci95"):
                for end, value in zip(("low", "high"), d.get(key) or ()):
                    scalar(f"{task}/{key}_{end}", value)
        scalar("delta_m", report["delta_m"])
        scalar("delta_m_sd", report.get("delta_m_sd"))
        for end, value in zip(("low", "high"), report.get("delta_m_ci95") or ()):
            scalar(f"delta_m_ci95_{end}", value)
        scalar("seconds/single_task_total", report["seconds"]["single_task_total"])
        scalar("seconds/multi_task", report["seconds"]["multi_task"])
        scalar("parameters/single_task_total", report["parameters"]["single_task_total"])
        scalar("parameters/multi_task", report["parameters"]["multi_task"])
        stage = report.get("finetuned") or {}
        for task, d in stage.get("tasks", {}).items():  # --finetune: the second stage beside them
            for key in ("finetuned", "difference", "relative_percent"):
                scalar(f"{task}/finetuned_{key}" if key != "finetuned" else f"{task}/finetuned", d[key])
        if stage:
            scalar("delta_m_finetuned", stage["delta_m"])
        if markdown is not None:
            tf.summary.text("compare/report", markdown, step=0)
    writer.flush()
    writer.close()
