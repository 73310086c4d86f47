"""`affinity`: the negative-transfer report of ``kmtl affinity CONFIG``.

Trains the config's multi-task model (its own schedule, or a short run of ``steps``) with
`kmtl.training.affinity.TaskAffinity` on, then reports, in ``<output_dir>/<name>/affinity/``:

* ``affinity.json``: the mean gradient cosine and lookahead affinity matrices, every probe's
  figures, the suggested groupings (`kmtl.compare.grouping`) and the run's settings;
* ``affinity.md``: the same as tables, with the command, date and machine, and, when
  ``kmtl compare`` has measured the per-task Δ of this config (``compare/compare.json``
  beside it, or the report ``--compare`` names), a check of whether the affinity onto each
  task predicts the sign of its Δ;
* ``affinity.png``: both matrices as heat maps (`kmtl.plots.affinity.plot_affinity`).

The training run itself lives in ``affinity/run/`` (its TensorBoard logs hold the per-epoch
``grad_cosine/*`` and ``affinity/*`` curves), replaced at each call; ``<output_dir>/<name>``'s
own run is not touched. It trains without the dev splits (nothing here evaluates) and exports
nothing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from kmtl.bench.train import load_average
from kmtl.compare.grouping import MAX_TASKS, rank_groupings, suggest_groupings
from kmtl.errors import KmtlError
from kmtl.files import json_safe, write_atomic
from kmtl.progress import default_mode

AFFINITY_FOLDER = "affinity"
JSON_FILE = "affinity.json"
MARKDOWN_FILE = "affinity.md"
FIGURE_FILE = "affinity.png"
RUN_NAME = "run"
PROBES = 20
"""Probes in a run when ``every`` is not given: ``every = total steps // PROBES`` (at least 1)."""
RANKED = 3
"""Groupings listed for the chosen number of groups (the best and the runners-up)."""


def _silent(*_args, **_kwargs) -> None:
    """An ``echo`` that prints nothing (``--quiet``)."""


def affinity_config(config, steps: Optional[int] = None):
    """The config of the affinity run: ``config`` trained in ``<run_dir>/affinity/run``, without
    dev splits or export; ``steps`` makes it one epoch of ``steps`` steps."""
    training = config.training
    if steps is not None:
        training = training.model_copy(update={"epochs": 1, "steps_per_epoch": int(steps)})
    return config.model_copy(update={
        "output_dir": config.run_dir / AFFINITY_FOLDER, "name": RUN_NAME, "training": training,
        "tasks": tuple(t.model_copy(update={"dev": None}) for t in config.tasks),
        "export": config.export.model_copy(update={"enabled": False})})


def affinity(config, *, steps: Optional[int] = None, every: Optional[int] = None, groups: Optional[int] = None,
             probe_size: Optional[int] = None, compare_report=None, verbose: int = 0, echo=print, command: str = "",
             trainer: Optional[Callable] = None) -> dict:
    """Train the multi-task model of ``config`` with `TaskAffinity` on and write the affinity report.

    Args:
        config: a `kmtl.config.Config` with at least two tasks.
        steps: train one epoch of ``steps`` steps instead of the config's own schedule (the
            learning-rate schedule is then over those steps).
        every: probe every ``every`` optimizer steps (default: total steps // `PROBES`).
        groups: the number of groups whose best `RANKED` groupings are listed (default 2);
            the best grouping of every number of groups is always reported.
        probe_size: examples per task in a probe batch (default: the mixture's batch size).
        compare_report: a ``compare.json`` of ``kmtl compare`` whose per-task Δ the affinities
            are checked against (default: ``<run_dir>/compare/compare.json`` when it exists).
        verbose: Keras progress output of the training run.
        echo: where progress lines and the final tables go.
        command: the command line, recorded in the reports.
        trainer: the training function (default `kmtl.training.train`).

    Returns:
        the report (the content of ``affinity.json``) with ``"paths"`` added.

    Raises:
        KmtlError: fewer than two tasks, ``groups`` out of range, ``every`` longer than the run, or
            a ``compare_report`` that cannot be read.

    Example:
        >>> report = affinity(kmtl.config.load_config("configs/sst2_conll_stsb.yaml"), steps=200, every=10)
        >>> report["groupings"]["2"]["groups"]
    """
    from kmtl.data.mixture import default_steps_per_epoch
    from kmtl.training.affinity import TaskAffinity
    from kmtl.training.data import read_task_examples

    names = list(config.task_names)
    if len(names) < 2:
        raise KmtlError(f"affinity compares tasks: the config needs at least two, it has {len(names)} ({', '.join(names)})")
    chosen = 2 if groups is None else int(groups)
    if not 1 <= chosen <= len(names):
        raise KmtlError(f"--groups {chosen}: {len(names)} tasks make 1 to {len(names)} groups")
    measured = read_deltas(compare_report if compare_report is not None else default_compare_report(config),
                           required=compare_report is not None)
    if trainer is None:
        from kmtl.training import train as trainer
    run_config = affinity_config(config, steps)
    train_examples, _ = read_task_examples(run_config)
    tr = run_config.training
    per_epoch = tr.steps_per_epoch or default_steps_per_epoch([len(v) for v in train_examples.values()],
                                                              run_config.mixture.batch_size)
    total = per_epoch * tr.epochs
    every = int(every) if every is not None else max(1, total // PROBES)
    if every > total:
        raise KmtlError(f"--every {every}: the run has {total} training steps, so no probe would run; "
                        f"give --every {total} or less (or more --steps)")
    size = int(probe_size or run_config.mixture.batch_size)
    probe = TaskAffinity(train_examples, every=every, probe_size=size, seed=tr.seed)
    say = echo if default_mode() != "off" else _silent  # progress lines; the tables are always echoed
    say(f"affinity: {total} training steps, a probe of {size} examples per task every {every} steps "
        f"({total // every} probes), run folder {run_config.run_dir}")
    result = trainer(run_config, verbose=verbose, export=False, echo=say, rerun="overwrite", callbacks=[probe])
    if not probe.series:
        raise KmtlError(f"no probe ran in {total} steps (every {every}); did training stop early?")

    report = build_report(config, probe, command=command or f"kmtl affinity {config.name}", steps=total, every=every,
                          probe_size=size, groups=chosen, seconds=getattr(result, "seconds", None),
                          run_dir=run_config.run_dir, measured=measured)
    paths = write_reports(report, config.run_dir / AFFINITY_FOLDER)
    echo("\n" + format_text(report))
    echo(f"\nreports: {paths['json']}, {paths['markdown']}, {paths['figure']}")
    echo(f"TensorBoard: tensorboard --logdir {Path(run_config.run_dir) / 'logs'}")
    return {**report, "paths": {k: str(v) for k, v in paths.items()}}


def build_report(config, probe, *, command: str, steps: int, every: int, probe_size: int, groups: int,
                 seconds: Optional[float] = None, run_dir=None, measured: Optional[tuple] = None) -> dict:
    """The report's content from a `TaskAffinity` that has run (see `affinity`); ``measured``:
    `read_deltas`' ``(path, {task: Δ %})`` to check the affinities against."""
    from kmtl.compare.run import machine

    names = list(probe.task_names)
    cosine, z = probe.cosine, probe.affinity
    usable = np.nan_to_num(z)
    groupings, ranked = {}, []
    if len(names) <= MAX_TASKS:
        groupings = {str(k): {"groups": [list(g) for g in best.groups], "score": best.score}
                     for k, best in suggest_groupings(usable, names).items()}
        ranked = [{"groups": [list(g) for g in r.groups], "score": r.score}
                  for r in rank_groupings(usable, names, groups, top=RANKED)]
    rates = [row["learning_rate"] for row in probe.series]
    report = {
        "name": config.name, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "load_average_1m_at_end": load_average(),  # the seconds hold for this CPU and load only
        "backbone": config.backbone, "sharing": config.sharing.mode, "tasks": names,
        "steps": int(steps), "every": int(every), "probe_size": int(probe_size),
        "probes": len(probe.series), "lookahead_probes": probe.lookahead_probes,
        "learning_rate": [min(rates), max(rates)],
        "shared_parameters": probe.series[-1]["shared_parameters"],
        "cosine": cosine.tolist(), "affinity": z.tolist(),
        "affinity_onto": onto(z, names),
        "groups": int(groups), "groupings": groupings, "ranked": ranked,
        "seconds": {"training": seconds, "probing": round(probe.seconds, 3)},
        "run_dir": str(run_dir) if run_dir is not None else None,
        "series": probe.series,
    }
    if measured is not None:
        report["compare"] = delta_check(report["affinity_onto"], *measured)
    return report


def onto(z, names) -> Dict[str, float]:
    """``{task j: mean of Z(i→j) over the other tasks i}``: how much the others' steps lower j's loss."""
    z = np.asarray(z, dtype=np.float64)
    out = {}
    for j, name in enumerate(names):
        others = [z[i, j] for i in range(len(names)) if i != j and math.isfinite(z[i, j])]
        out[name] = float(np.mean(others)) if others else float("nan")
    return out


def default_compare_report(config) -> Path:
    """Where ``kmtl compare`` writes this config's report: ``<run_dir>/compare/compare.json``."""
    from kmtl.compare.report import JSON_FILE as COMPARE_JSON
    from kmtl.compare.run import COMPARE_FOLDER

    return Path(config.run_dir) / COMPARE_FOLDER / COMPARE_JSON


def read_deltas(path, required: bool = False) -> Optional[tuple]:
    """``(path, {task: relative Δ %})`` from a ``kmtl compare`` report (``compare.json``; with
    several seeds, the mean), or ``None`` when ``path`` is not a file and not ``required``.

    Raises:
        KmtlError: a ``required`` report that is missing, or any report that is not a compare report.
    """
    path = Path(path)
    if not path.is_file():
        if required:
            raise KmtlError(f"--compare {path}: no such file (a compare.json written by kmtl compare)")
        return None
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"]
        deltas = {name: row.get("relative_percent") for name, row in tasks.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KmtlError(f"{path} is not a kmtl compare report (compare.json with per-task Δ under 'tasks')") from None
    return str(path), {k: float(v) if isinstance(v, (int, float)) else float("nan") for k, v in deltas.items()}


def delta_check(affinity_onto: Dict[str, float], report: str, deltas: Dict[str, float]) -> dict:
    """Set the affinity onto each task beside its measured Δ (`read_deltas`): does the help a
    task gets from the others predict whether multi-task training made it better?

    Returns:
        ``{"report": path, "tasks": {task: {"affinity_onto", "delta_percent", "agrees"}},
        "agreeing": n, "compared": n}``; ``agrees``: the affinity's sign is the Δ's, ``None``
        when either is missing or 0.
    """
    tasks = {}
    for name, value in affinity_onto.items():
        delta = deltas.get(name, float("nan"))
        agrees = None
        if math.isfinite(delta) and math.isfinite(value) and delta != 0 and value != 0:
            agrees = (delta > 0) == (value > 0)
        tasks[name] = {"affinity_onto": value, "delta_percent": delta, "agrees": agrees}
    compared = [t for t in tasks.values() if t["agrees"] is not None]
    return {"report": report, "tasks": tasks, "agreeing": sum(t["agrees"] for t in compared), "compared": len(compared)}


# --------------------------------------------------------------------------- output


def _exponent(matrix) -> int:
    from kmtl.plots.affinity import display_scale

    m = np.asarray(matrix, dtype=np.float64)
    return display_scale(m[~np.eye(len(m), dtype=bool)]) if m.size else 0


def _cell(value, factor=1.0, digits=3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * factor:+.{digits}f}"


def _table(names, matrix, factor=1.0, corner="") -> list:
    """Rows of cells: a header of task names, then one row per task."""
    m = np.asarray(matrix, dtype=np.float64)
    return [[corner] + list(names)] + [[a] + [_cell(m[i, j], factor) for j in range(len(names))]
                                       for i, a in enumerate(names)]


def _text_table(rows) -> list:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def _markdown_table(rows) -> list:
    return (["| " + " | ".join(rows[0]) + " |", "|---|" + "---:|" * (len(rows[0]) - 1)]
            + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def _scale_note(report, lead=" (") -> str:
    """``" (×1e-3)"`` when the affinities are written scaled (`_exponent`), else ``""``."""
    e = _exponent(report["affinity"])
    return f"{lead}×1e{e}{')' if lead == ' (' else ''}" if e else ""


def _probes(n: int) -> str:
    return f"{n} probe" + ("" if n == 1 else "s")


def _affinity_caption(report) -> str:
    e = _exponent(report["affinity"])
    scale = f", values ×1e{e}" if e else ""
    return (f"lookahead affinity Z(i→j) (row i: the task whose gradient steps; column j: the task whose loss "
            f"changes; positive: i helps j{scale}), mean of {_probes(report['lookahead_probes'])}")


def _cosine_caption(report) -> str:
    if not report["shared_parameters"]:
        return (f"no trainable parameter is reached by every task's loss (sharing {report['sharing']}): the tasks cannot "
                "help or hurt each other through the encoder, so there is nothing to measure")
    return (f"gradient cosine on the shared encoder ({report['shared_parameters']:,} parameters; negative: the tasks' "
            f"gradients conflict), mean of {_probes(report['probes'])}")


def _grouping_lines(report) -> list:
    lines = []
    for k, g in report["groupings"].items():
        lines.append(f"{k} group{'s' if k != '1' else ''}: " + " ".join("{" + ", ".join(grp) + "}" for grp in g["groups"])
                     + f"  (score {g['score']:+.3g})")
    return lines


def format_text(report: dict) -> str:
    """The report for the terminal: both matrices, each task's affinity from the others, the
    best grouping per number of groups."""
    names = report["tasks"]
    factor = 10.0 ** -_exponent(report["affinity"])
    out = [_cosine_caption(report)] + _text_table(_table(names, report["cosine"]))
    out += ["", _affinity_caption(report)] + _text_table(_table(names, report["affinity"], factor, "i \\ j"))
    out += ["", f"affinity onto each task from the others{_scale_note(report)}: "
            + ", ".join(f"{t} {_cell(v, factor)}" for t, v in report["affinity_onto"].items())]
    if report["groupings"]:
        out += ["", "suggested groupings (TAG network selection: the most affinity onto each task within its group)"]
        out += ["  " + line for line in _grouping_lines(report)]
    check = report.get("compare")
    if check:
        out += ["", f"against kmtl compare's Δ: the sign of the affinity onto a task matches the sign of its Δ for "
                    f"{check['agreeing']} of {check['compared']} tasks"]
    return "\n".join(out)


def format_markdown(report: dict, figure: Optional[str] = None) -> str:
    """The report as Markdown: tables, groupings, the Δ check and the heat map."""
    names = report["tasks"]
    factor = 10.0 ** -_exponent(report["affinity"])
    rate = report["learning_rate"]
    out = [f"# kmtl affinity: {report['name']}", "",
           f"`{report['command']}` on {report['date']}; machine: {report['machine']}, 1-min load at the end "
           f"{report.get('load_average_1m_at_end')}; backbone `{report['backbone']}`, "
           f"sharing `{report['sharing']}`", "",
           f"{report['steps']} training steps; a probe of {report['probe_size']} training examples per task every "
           f"{report['every']} steps ({report['probes']} probes, {report['lookahead_probes']} with a lookahead step; "
           f"learning rate η {rate[0]:.3g} to {rate[1]:.3g}); probing took {report['seconds']['probing']:.1f} s"
           + (f" of {report['seconds']['training']:.1f} s of training" if report["seconds"].get("training") else ""),
           "", "## Gradient cosine", "", _cosine_caption(report) + ".", ""]
    out += _markdown_table(_table(names, report["cosine"]))
    out += ["", "## Lookahead affinity", "",
            _affinity_caption(report) + ". Z(i→j) = 1 − L_j(θ_s − η∇L_i) / L_j(θ_s) "
            "(Fifty et al., NeurIPS 2021, eq. 3); the diagonal is each task's effect on itself.", ""]
    out += _markdown_table(_table(names, report["affinity"], factor, "i \\ j"))
    out += ["", f"Affinity onto each task from the others (mean over i of Z(i→j){_scale_note(report, ', ')}): "
            + ", ".join(f"{t} {_cell(v, factor)}" for t, v in report["affinity_onto"].items()) + "."]
    if report["groupings"]:
        out += ["", "## Suggested groupings", "",
                "Each grouping maximises the sum over tasks of the mean affinity onto the task from the other tasks "
                "of its group (TAG's network selection, exhaustive; a task alone scores 0).", "",
                "| groups | grouping | score |", "|---:|---|---:|"]
        out += [f"| {k} | " + " ".join("{" + ", ".join(grp) + "}" for grp in g["groups"]) + f" | {g['score']:+.4g} |"
                for k, g in report["groupings"].items()]
        if report["ranked"]:
            out += ["", f"Best {len(report['ranked'])} groupings into {report['groups']} groups: "
                    + "; ".join(" ".join("{" + ", ".join(grp) + "}" for grp in r["groups"]) + f" ({r['score']:+.4g})"
                                for r in report["ranked"]) + "."]
    check = report.get("compare")
    if check:
        out += ["", "## Against the measured Δ", "",
                f"From `{check['report']}`: does the affinity onto a task predict whether multi-task training helped "
                f"it? Signs agree for {check['agreeing']} of {check['compared']} tasks.", "",
                f"| task | affinity onto it{_scale_note(report)} | Δ (%) | signs agree |", "|---|---:|---:|---|"]
        out += [f"| {t} | {_cell(v['affinity_onto'], factor)} | {_cell(v['delta_percent'], 1.0, 2)} | "
                f"{'n/a' if v['agrees'] is None else ('yes' if v['agrees'] else 'no')} |"
                for t, v in check["tasks"].items()]
    if figure:
        out += ["", f"![task affinity]({figure})"]
    return "\n".join(out) + "\n"


def write_reports(report: dict, folder) -> dict:
    """Write ``affinity.json``, ``affinity.png`` and ``affinity.md`` into ``folder``.

    Returns:
        ``{"json": path, "markdown": path, "figure": path}``.
    """
    from kmtl.plots.affinity import plot_affinity

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / JSON_FILE, "markdown": folder / MARKDOWN_FILE, "figure": folder / FIGURE_FILE}
    write_atomic(paths["json"], json.dumps(json_safe(report), indent=2) + "\n")
    note = (f"{report['steps']} steps, {report['probes']} probes of {report['probe_size']} examples per task, "
            f"every {report['every']} steps")
    plot_affinity(report["tasks"], report["affinity"], paths["figure"], cosine=report["cosine"],
                  title=f"{report['name']}: task affinity", note=note)
    write_atomic(paths["markdown"], format_markdown(report, paths["figure"].name))
    return paths
