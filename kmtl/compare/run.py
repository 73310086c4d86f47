"""`compare`: single-task baselines vs the multi-task model, on the same data and schedule."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from kmtl.compare import stats
from kmtl.compare.baselines import BaselineCache, baseline_config, baseline_settings, file_stamps, settings_key
from kmtl.compare.chance import at_chance, chance_levels, describe_margin, level_of
from kmtl.compare.report import format_text, write_reports
from kmtl.errors import KmtlError
from kmtl.evaluation.delta import delta_m_of, task_deltas
from kmtl.files import json_safe, write_atomic
from kmtl.progress import default_mode

COMPARE_FOLDER = "compare"
MULTITASK_RECORD = "multitask.json"
FINETUNE_FOLDER = "finetune"
"""Second-stage runs (``kmtl compare --finetune``): ``<run_dir>/compare/finetune/<task>/``."""
FINETUNE_RECORD = "finetune.json"


def served_parameters(model) -> int:
    """Parameters a model serves: backbone, adapters, LoRA and heads (not loss weights)."""
    from kmtl.sharing import trainable_parameter_counts

    counts = trainable_parameter_counts(model)
    return int(counts["total"] - counts["parts"]["other"]["total"])


def check_comparable(config) -> None:
    """Raise `KmtlError` when ``config`` cannot be compared (fewer than 2 tasks, no dev split)."""
    if len(config.tasks) < 2:
        raise KmtlError(f"compare needs at least two tasks; the config has {len(config.tasks)} "
                        f"({', '.join(config.task_names)})")
    missing = [f"tasks[{i}] ({t.name})" for i, t in enumerate(config.tasks) if t.dev is None]
    if missing:
        raise KmtlError(f"compare evaluates every task on its dev split; add `dev:` to {', '.join(missing)}")


def machine() -> str:
    """The machine the figures come from, in words: ``"AMD EPYC, x86_64, 2 cores, Linux"`` (the CPU
    model from ``/proc/cpuinfo`` where there is one: ratios move with it)."""
    import os
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return ", ".join(part for part in (model, platform.machine(), f"{os.cpu_count()} cores", platform.system()) if part)


def recipe(config) -> dict:
    """The multi-task settings that a reader of the report needs to reproduce it."""
    tr, mix = config.training, config.mixture
    return {"sharing": config.sharing.mode, "weighting": config.weighting.strategy,
            "sampling": mix.sampling + (f" (T={mix.temperature})" if mix.sampling == "temperature" else ""),
            "batch_size": mix.batch_size, "epochs": tr.epochs, "learning_rate": tr.learning_rate,
            "head_learning_rate": tr.head_rate, "warmup_ratio": tr.warmup_ratio,
            "clipnorm": tr.clipnorm, "max_length": config.max_length,
            "examples_per_task": {t.name: t.limit for t in config.tasks}}


def multitask_settings(config) -> dict:
    """Every setting that changes the multi-task run (the whole config and its data files)."""
    data = config.to_yaml_dict()
    data.pop("export", None)
    return {"config": data, "files": {t.name: file_stamps(t) for t in config.tasks}}


def _silent(*_args, **_kwargs) -> None:
    """An ``echo`` that prints nothing (``--quiet``)."""


def _since(start: float) -> str:
    """``"12 min 5 s in"``: the time since ``start``, for the compare progress headers."""
    seconds = int(time.perf_counter() - start)
    return f"{seconds // 60} min {seconds % 60} s in" if seconds >= 60 else f"{seconds} s in"


NOT_A_RESULT = "not a result: at chance in both"
"""The verdict on the Δ of a task whose single- and multi-task scores both sit at its chance level."""
SEED_SUFFIX = "-seed{seed}"
"""The name suffix of a multi-task run at a seed other than the config's own ``training.seed``."""


def seed_config(config, seed: int):
    """``config`` at ``training.seed = seed``: the config itself at its own seed, else a copy
    named ``<name>-seed<seed>`` so that each seed's multi-task run has its own folder.

    The config's own seed keeps ``<output_dir>/<name>``, the folder `kmtl train` and a one-seed
    compare use, so their runs are reused; the other seeds' folders are siblings (not inside
    ``<name>``, whose rerun would own them) and do not depend on which other seeds a compare asks for.

    Example:
        >>> seed_config(config, 3).run_dir          # config.training.seed is 0
        PosixPath('runs/four_tasks-seed3')
    """
    if seed == config.training.seed:
        return config
    return config.model_copy(update={"name": config.name + SEED_SUFFIX.format(seed=seed),
                                     "training": config.training.model_copy(update={"seed": seed})})


def _train_seed(config, cache, *, retrain, teachers, verbose, say, trainer, rerun, step, total, label, started):
    """The baselines and the multi-task record of one seed, trained or from the cache:
    ``(baselines, multi, cached, config)`` (``config`` with its teachers when ``teachers``).
    ``total`` counts the runs of every seed, and ``step`` those of the seeds before this one."""
    baselines, cached = {}, {}
    for n, task in enumerate(config.task_names, step + 1):
        record = None if retrain else cache.get(config, task)
        cached[task] = record is not None
        if record is None:
            say(f"\n== [{n}/{total}] {label}single-task baseline: {task} ({_since(started)}) ==")
            base = cache.config(config, task)
            result = trainer(base, verbose=verbose, export=False, echo=say, **rerun)
            record = cache.put(config, task, result.metrics, result.seconds, served_parameters(result.model))
            say(f"[{n}/{total}] {label}baseline {task}: trained in {result.seconds:.0f} s")
            del result
            gc.collect()
        else:
            say(f"[{n}/{total}] {label}single-task baseline {task}: cached in {cache.run_dir(config, task)}")
        baselines[task] = record

    if teachers:
        given = dict(getattr(config, "teachers", {}) or {})
        chosen = {t: given.get(t, Path(baselines[t]["run_dir"])) for t in config.task_names}
        config = config.model_copy(update={"teachers": chosen})

    n = step + len(config.task_names) + 1
    folder = config.run_dir / COMPARE_FOLDER
    key = settings_key(multitask_settings(config))
    record_path = folder / MULTITASK_RECORD
    multi = None if retrain else _read_record(record_path, key)
    cached["multi_task"] = multi is not None
    if multi is None:
        say(f"\n== [{n}/{total}] {label}multi-task model: {', '.join(config.task_names)} ({_since(started)}) ==")
        result = trainer(config, verbose=verbose, export=False, echo=say, **rerun)
        multi = {"key": key, "run_dir": str(result.run_dir), "metrics": result.metrics,
                 "seconds": result.seconds, "parameters": served_parameters(result.model),
                 "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        del result
        gc.collect()
        _write_record(record_path, multi)
    else:
        say(f"[{n}/{total}] {label}multi-task model: cached in {multi['run_dir']}")
    return baselines, multi, cached, config


def _read_record(path: Path, key: str) -> Optional[dict]:
    """The JSON record at ``path`` when it exists, reads, and was made with settings ``key``; else ``None``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(json_safe(record), indent=2, sort_keys=True) + "\n")


def _finetune_seed(config, multi, *, retrain, verbose, say, trainer, rerun, step, total, label, started) -> dict:
    """MT-DNN's second stage for one seed: each task's single-task run started from the
    multi-task model (``init_from``), trained or from its record: ``{task: record}``.

    A record is kept beside each run (``<run_dir>/compare/finetune/<task>/finetune.json``) and
    reused while the multi-task model and the task's baseline settings are the same."""
    tuned = {}
    folder = Path(config.run_dir) / COMPARE_FOLDER / FINETUNE_FOLDER
    for n, task in enumerate(config.task_names, step + 1):
        base = baseline_config(config, task, output_dir=folder, name=task)
        base = base.model_copy(update={"init_from": Path(multi["run_dir"])})
        key = settings_key({"multi_task": multi["key"], "baseline": baseline_settings(config, task)})
        path = base.run_dir / FINETUNE_RECORD
        record = None if retrain else _read_record(path, key)
        if record is None:
            say(f"\n== [{n}/{total}] {label}second stage: {task} fine-tuned from the multi-task model "
                f"({_since(started)}) ==")
            result = trainer(base, verbose=verbose, export=False, echo=say, **rerun)
            record = {"key": key, "run_dir": str(result.run_dir), "metrics": result.metrics,
                      "seconds": result.seconds, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            del result
            gc.collect()
            _write_record(path, record)
        else:
            say(f"[{n}/{total}] {label}second stage {task}: cached in {record['run_dir']}")
        tuned[task] = record
    return tuned


def compare(config, *, retrain: bool = False, teachers: bool = False, verbose: int = 0, echo=print,
            primary: Optional[Dict[str, str]] = None, command: str = "", trainer: Optional[Callable] = None,
            restart: bool = False, seeds: Union[None, int, Sequence[int]] = None, finetune: bool = False) -> dict:
    """Train (or take from the cache) every task's single-task baseline and the multi-task model,
    then report per-task metrics, per-task Δ, Δm, training time and parameters served; with
    several seeds, each figure's mean, spread and 95 % interval.

    Δm is the mean relative change of Maninis et al. (CVPR 2019) over each task's primary
    metric (`kmtl.tasks.Task.primary_metric`). Baselines live in
    ``<output_dir>/baselines/`` keyed by a hash of their settings (`BaselineCache`); the
    multi-task run is ``<output_dir>/<name>`` as with `kmtl train` and is reused when its
    config and data did not change. The reports go to ``<output_dir>/<name>/compare/``:
    ``compare.json``, ``compare.md`` and TensorBoard scalars in ``logs/``.

    Seeds (`kmtl.compare.stats`): each seed is the config with ``training.seed`` replaced, so
    its baselines are cached under their own key (the seed is part of the training section
    they hash) and its multi-task run is `seed_config`'s folder (``<name>-seed<k>`` but for the
    config's own seed). Each task's Δ is paired by seed; the report gives the single- and
    multi-task mean ± standard deviation, the Δ's mean, standard deviation and Student-t 95 %
    interval (*within noise* when it holds 0), and Δm's per-seed values, mean and interval.
    With one seed the report is the one-seed report it always was.

    Every report flags a task whose single- or multi-task score sits at its chance level
    (`kmtl.compare.chance`: the score of the majority class, or of a constant, on the dev
    split), in ``report["chance"]``; the Δ of a task at chance in both runs is not a result
    (``"delta_m_without_chance"`` leaves such tasks out).

    Args:
        config: a `kmtl.config.Config` with at least two tasks, each with a dev split.
        retrain: ignore the cache: train every baseline and the multi-task model again.
        restart: each run that trains starts from step 0, its folder replaced (``kmtl compare
            --restart``; `kmtl.training.train`'s ``rerun="overwrite"``): for a backup left by
            an earlier config, which a resume refuses. By default a crashed run resumes.
        teachers: distil the multi-task model from the baselines with teacher annealing
            (Clark et al., "BAM! Born-Again Multi-Task Networks", ACL 2019); tasks that the
            config's ``teachers`` already names keep their teacher. Each seed's multi-task
            model learns from that seed's baselines.
        verbose: Keras progress output of the training runs.
        echo: where progress lines and the final table go; under `kmtl.progress` mode
            ``"off"`` (the CLI's ``--quiet``) only the table and the report paths.
        primary: ``{task: metric}`` to override the primary metric of a task.
        command: the command line, recorded in the reports.
        trainer: the training function (default `kmtl.training.train`; tests count calls).
        seeds: ``None`` (the config's ``training.seed`` alone), a count ``n`` (``training.seed``
            and the ``n - 1`` seeds after it) or a list of seeds (`stats.resolve_seeds`).
        finetune: add MT-DNN's second stage (Liu et al., "Multi-Task Deep Neural Networks for
            Natural Language Understanding", ACL 2019): each task fine-tuned alone from the
            multi-task model, with its baseline's data and schedule (``kmtl compare
            --finetune``); the report gets ``finetuned`` (each task's score, its Δ against
            the single-task baseline, Δm) and a second table.

    Returns:
        the report (the content of ``compare.json``) with ``"paths"`` added. With ``n ≥ 2``
        seeds, each per-run value (``metrics``, ``cached``, ``runs``, ``seconds["per_seed"]``)
        is a list in the order of ``report["seeds"]``, and ``tasks`` and ``delta_m`` hold the
        means, with the spreads beside them (see `aggregate_seeds`).

    Example:
        >>> report = compare(kmtl.config.load_config("configs/compare_four_tasks.yaml"), seeds=3)
        >>> report["delta_m"], report["delta_m_ci95"], report["tasks"]["sst2"]["verdict"]
    """
    check_comparable(config)
    chosen = stats.resolve_seeds(config.training.seed, seeds)
    if trainer is None:
        from kmtl.training import train as trainer
    rerun = {"rerun": "overwrite"} if restart else {}  # kmtl.training.run_folder.RERUN_MODES
    cache = BaselineCache(config.output_dir)
    config = config.model_copy(update={"export": config.export.model_copy(update={"enabled": False})})
    say = echo if default_mode() != "off" else _silent  # progress lines; the report is always echoed
    runs = len(config.task_names) * (2 if finetune else 1) + 1
    started = time.perf_counter()

    per_seed = []
    for k, seed in enumerate(chosen):
        label = f"seed {seed}: " if len(chosen) > 1 else ""
        options = dict(retrain=retrain, verbose=verbose, say=say, trainer=trainer, rerun=rerun,
                       total=runs * len(chosen), label=label, started=started)
        baselines, multi, cached, seeded = _train_seed(seed_config(config, seed), cache, teachers=teachers,
                                                       step=k * runs, **options)
        tuned = (_finetune_seed(seed_config(config, seed), multi, step=k * runs + len(config.task_names) + 1,
                                **options) if finetune else None)
        per_seed.append(_seed_report(config.task_names, baselines, multi, cached, primary, tuned))
    teacher_names = sorted(getattr(seeded, "teachers", {}) or {})  # the same tasks at every seed

    report = per_seed[0] if len(chosen) == 1 else aggregate_seeds(per_seed)  # one seed: the report as it always was
    report = {"name": config.name, "command": command or f"kmtl compare {config.name}",
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "backbone": config.backbone,
              "recipe": recipe(config), "teachers": teacher_names,
              "seeds": chosen, **report}
    report["chance"] = chance_flags(report["tasks"], chance_levels(config, cache.root, echo=say))
    without = delta_m_without_chance(per_seed, report["chance"])
    if without is not None:
        report["delta_m_without_chance"] = without
    folder = config.run_dir / COMPARE_FOLDER
    paths = write_reports(report, folder)
    echo("\n" + format_text(report))
    echo(f"\nreports: {paths['json']}, {paths['markdown']}")
    echo(f"TensorBoard: tensorboard --logdir {paths['logs']}")
    return {**report, "paths": {k: str(v) for k, v in paths.items()}}


def _seed_report(names, baselines, multi, cached, primary, tuned=None) -> dict:
    """One seed's figures: the body of a one-seed report (with ``finetuned`` given ``tuned``)."""
    single_metrics = {t: baselines[t]["metrics"][t] for t in names}
    deltas = task_deltas(multi["metrics"], single_metrics, primary)
    extra = {}
    if tuned is not None:
        tuned_metrics = {t: tuned[t]["metrics"][t] for t in names}
        tuned_deltas = task_deltas(tuned_metrics, single_metrics, primary)
        extra["finetuned"] = {
            "tasks": {t: {**{k: v for k, v in d.items() if k != "multi_task"}, "finetuned": d["multi_task"]}
                      for t, d in tuned_deltas.items()},
            "delta_m": delta_m_of(tuned_deltas),
            "metrics": tuned_metrics,
            "seconds": {t: tuned[t]["seconds"] for t in names},
            "runs": {t: tuned[t]["run_dir"] for t in names},
        }
    return {
        "tasks": deltas,
        "delta_m": delta_m_of(deltas),
        "metrics": {"single_task": single_metrics, "multi_task": multi["metrics"]},
        "seconds": {"single_task": {t: baselines[t]["seconds"] for t in names},
                    "single_task_total": sum(baselines[t]["seconds"] for t in names),
                    "multi_task": multi["seconds"]},
        "parameters": {"single_task": {t: baselines[t]["parameters"] for t in names},
                       "single_task_total": sum(baselines[t]["parameters"] for t in names),
                       "multi_task": multi["parameters"]},
        "cached": cached,
        "runs": {"single_task": {t: baselines[t]["run_dir"] for t in names}, "multi_task": multi["run_dir"]},
        **extra,
    }


def aggregate_seeds(per_seed: List[dict]) -> dict:
    """The report body of several seeds from each seed's (`_seed_report`), in seed order.

    Per task: ``single_task``, ``multi_task``, ``difference`` and ``relative_percent`` are
    means over the seeds (as in a one-seed report, so readers of one read the other), with
    ``n`` (seeds with both scores), ``single_task_sd``, ``multi_task_sd``, ``difference_sd``,
    ``difference_ci95`` (``[low, high]``, points as fractions like ``difference``),
    ``relative_percent_sd``, ``relative_percent_ci95``, ``within_noise`` (the Δ's interval
    holds 0; ``None`` under two seeds), ``verdict`` (`stats.verdict`) and ``per_seed`` (each
    figure's list). Δm: ``delta_m`` (mean), ``delta_m_per_seed``, ``delta_m_sd``,
    ``delta_m_ci95`` and ``delta_m_verdict``.
    """
    first = per_seed[0]
    names = list(first["tasks"])
    tasks = {}
    for task in names:
        rows = [s["tasks"][task] for s in per_seed]
        values = {key: [r[key] for r in rows] for key in ("single_task", "multi_task", "difference", "relative_percent")}
        st, mt = stats.summary(values["single_task"]), stats.summary(values["multi_task"])
        diff, rel = stats.summary(values["difference"]), stats.summary(values["relative_percent"])
        tasks[task] = {
            "metric": rows[0]["metric"], "lower_is_better": rows[0]["lower_is_better"],
            "single_task": st["mean"], "multi_task": mt["mean"], "difference": diff["mean"],
            "relative_percent": rel["mean"], "n": diff["n"],
            "single_task_sd": st["sd"], "multi_task_sd": mt["sd"],
            "difference_sd": diff["sd"], "difference_ci95": diff["ci95"],
            "relative_percent_sd": rel["sd"], "relative_percent_ci95": rel["ci95"],
            "within_noise": None if diff["ci95"] is None else stats.contains_zero(diff["ci95"]),
            "verdict": stats.verdict(diff),
            "per_seed": values,
        }
    dm = stats.summary([s["delta_m"] for s in per_seed])
    extra = {}
    if "finetuned" in first:  # the second stage: means over the seeds, each seed's figures beside them
        stages = [s["finetuned"] for s in per_seed]
        extra["finetuned"] = {
            "tasks": {t: {"metric": stages[0]["tasks"][t]["metric"],
                          "lower_is_better": stages[0]["tasks"][t]["lower_is_better"],
                          **{key: stats.summary([st["tasks"][t][key] for st in stages])["mean"]
                             for key in ("single_task", "finetuned", "difference", "relative_percent")},
                          "per_seed": {key: [st["tasks"][t][key] for st in stages]
                                       for key in ("finetuned", "difference", "relative_percent")}}
                      for t in names},
            "delta_m": stats.summary([st["delta_m"] for st in stages])["mean"],
            "delta_m_per_seed": [st["delta_m"] for st in stages],
            "seconds": {t: sum(st["seconds"][t] for st in stages) for t in names},
            "runs": {t: [st["runs"][t] for st in stages] for t in names},
        }
    seconds = {"single_task": {t: sum(s["seconds"]["single_task"][t] for s in per_seed) for t in names},
               "single_task_total": sum(s["seconds"]["single_task_total"] for s in per_seed),
               "multi_task": sum(s["seconds"]["multi_task"] for s in per_seed),
               "per_seed": {"single_task": {t: [s["seconds"]["single_task"][t] for s in per_seed] for t in names},
                            "multi_task": [s["seconds"]["multi_task"] for s in per_seed]}}
    return {
        "tasks": tasks,
        "delta_m": dm["mean"],
        "delta_m_per_seed": [s["delta_m"] for s in per_seed],
        "delta_m_sd": dm["sd"],
        "delta_m_ci95": dm["ci95"],
        "delta_m_verdict": stats.verdict(dm),
        "metrics": {"single_task": {t: [s["metrics"]["single_task"][t] for s in per_seed] for t in names},
                    "multi_task": [s["metrics"]["multi_task"] for s in per_seed]},
        "seconds": seconds,
        "parameters": first["parameters"],  # the same models at every seed
        "cached": {key: [s["cached"][key] for s in per_seed] for key in first["cached"]},
        "runs": {"single_task": {t: [s["runs"]["single_task"][t] for s in per_seed] for t in names},
                 "multi_task": [s["runs"]["multi_task"] for s in per_seed]},
        **extra,
    }


def chance_flags(tasks: dict, levels: dict) -> dict:
    """``{task: {"metric", "level", "how", "rule", "single_task", "multi_task", "delta"}}``:
    whether each task's single- and multi-task score (the mean over seeds) sits at its
    chance level (`kmtl.compare.chance`); ``delta`` is ``"not a result"`` when both do.

    A task at chance in the multi-task run only (it collapsed) or in the baseline only (the
    multi-task model trained a task its baseline could not) keeps its Δ: that is a finding,
    flagged so that the reader knows which side did not train. A task at chance in a
    multi-seed report also gets that ``verdict``.
    """
    out = {}
    for task, d in tasks.items():
        chance = levels.get(task)
        level = level_of(chance, d["metric"])
        flags = {side: at_chance(d[side], d["metric"], level) for side in ("single_task", "multi_task")}
        out[task] = {"metric": d["metric"], "level": level, "how": (chance or {}).get("how"),
                     "rule": describe_margin(d["metric"], level) if level is not None else None, **flags,
                     "delta": "not a result" if all(flags.values()) else "kept"}
        if "verdict" in d and all(flags.values()):
            d["verdict"] = NOT_A_RESULT
    return out


def delta_m_without_chance(per_seed: List[dict], chance: dict) -> Optional[dict]:
    """Δm over the tasks that are not at chance in both runs: ``{"left_out", "delta_m"}``
    (and ``"delta_m_per_seed"``, ``"sd"``, ``"ci95"`` with several seeds); ``None`` when no
    task, or every task, is left out."""
    left_out = [t for t, c in chance.items() if c["single_task"] and c["multi_task"]]
    if not left_out or len(left_out) == len(chance):
        return None
    values = [delta_m_of({t: d for t, d in s["tasks"].items() if t not in left_out}) for s in per_seed]
    if len(values) == 1:
        return {"left_out": left_out, "delta_m": values[0]}
    dm = stats.summary(values)
    return {"left_out": left_out, "delta_m": dm["mean"], "delta_m_per_seed": values, "sd": dm["sd"],
            "ci95": dm["ci95"], "verdict": stats.verdict(dm)}
