"""`compare`: single-task baselines vs the multi-task model, on the same data and schedule."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from kmtl.compare.baselines import BaselineCache, file_stamps, settings_key
from kmtl.compare.report import format_text, write_reports
from kmtl.errors import KmtlError
from kmtl.evaluation.delta import delta_m_of, task_deltas
from kmtl.files import json_safe, write_atomic
from kmtl.progress import default_mode

COMPARE_FOLDER = "compare"
MULTITASK_RECORD = "multitask.json"


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
    """The machine the figures come from, in words: ``"x86_64, 2 cores, Linux"``."""
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


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


def compare(config, *, retrain: bool = False, teachers: bool = False, verbose: int = 0, echo=print,
            primary: Optional[Dict[str, str]] = None, command: str = "", trainer: Optional[Callable] = None,
            restart: bool = False) -> dict:
    """Train (or take from the cache) every task's single-task baseline and the multi-task model,
    then report per-task metrics, per-task Δ, Δm, training time and parameters served.

    Δm is the mean relative change of Maninis et al. (CVPR 2019) over each task's primary
    metric (`kmtl.tasks.Task.primary_metric`). Baselines live in
    ``<output_dir>/baselines/`` keyed by a hash of their settings (`BaselineCache`); the
    multi-task run is ``<output_dir>/<name>`` as with `kmtl train` and is reused when its
    config and data did not change. The reports go to ``<output_dir>/<name>/compare/``:
    ``compare.json``, ``compare.md`` and TensorBoard scalars in ``logs/``.

    Args:
        config: a `kmtl.config.Config` with at least two tasks, each with a dev split.
        retrain: ignore the cache: train every baseline and the multi-task model again.
        restart: each run that trains starts from step 0, its folder replaced (``kmtl compare
            --restart``; `kmtl.training.train`'s ``rerun="overwrite"``): for a backup left by
            an earlier config, which a resume refuses. By default a crashed run resumes.
        teachers: distil the multi-task model from the baselines with teacher annealing
            (Clark et al., "BAM! Born-Again Multi-Task Networks", ACL 2019); tasks that the
            config's ``teachers`` already names keep their teacher.
        verbose: Keras progress output of the training runs.
        echo: where progress lines and the final table go; under `kmtl.progress` mode
            ``"off"`` (the CLI's ``--quiet``) only the table and the report paths.
        primary: ``{task: metric}`` to override the primary metric of a task.
        command: the command line, recorded in the reports.
        trainer: the training function (default `kmtl.training.train`; tests count calls).

    Returns:
        the report (the content of ``compare.json``) with ``"paths"`` added.

    Example:
        >>> report = compare(kmtl.config.load_config("configs/compare_four_tasks.yaml"))
        >>> report["delta_m"], report["tasks"]["sst2"]["difference"]
    """
    check_comparable(config)
    if trainer is None:
        from kmtl.training import train as trainer
    rerun = {"rerun": "overwrite"} if restart else {}  # kmtl.training.run_folder.RERUN_MODES
    cache = BaselineCache(config.output_dir)
    config = config.model_copy(update={"export": config.export.model_copy(update={"enabled": False})})
    say = echo if default_mode() != "off" else _silent  # progress lines; the report is always echoed
    runs = len(config.task_names) + 1
    started = time.perf_counter()

    baselines, cached = {}, {}
    for n, task in enumerate(config.task_names, 1):
        record = None if retrain else cache.get(config, task)
        cached[task] = record is not None
        if record is None:
            say(f"\n== [{n}/{runs}] single-task baseline: {task} ({_since(started)}) ==")
            base = cache.config(config, task)
            result = trainer(base, verbose=verbose, export=False, echo=say, **rerun)
            record = cache.put(config, task, result.metrics, result.seconds, served_parameters(result.model))
            say(f"[{n}/{runs}] baseline {task}: trained in {result.seconds:.0f} s")
            del result
            gc.collect()
        else:
            say(f"[{n}/{runs}] single-task baseline {task}: cached in {cache.run_dir(config, task)}")
        baselines[task] = record

    if teachers:
        given = dict(getattr(config, "teachers", {}) or {})
        chosen = {t: given.get(t, Path(baselines[t]["run_dir"])) for t in config.task_names}
        config = config.model_copy(update={"teachers": chosen})

    folder = config.run_dir / COMPARE_FOLDER
    settings = multitask_settings(config)
    key = settings_key(settings)
    record_path = folder / MULTITASK_RECORD
    multi = None
    if not retrain and record_path.is_file():
        try:
            multi = json.loads(record_path.read_text(encoding="utf-8"))
        except ValueError:
            multi = None
        if multi is not None and multi.get("key") != key:
            multi = None
    cached["multi_task"] = multi is not None
    if multi is None:
        say(f"\n== [{runs}/{runs}] multi-task model: {', '.join(config.task_names)} ({_since(started)}) ==")
        result = trainer(config, verbose=verbose, export=False, echo=say, **rerun)
        multi = {"key": key, "run_dir": str(result.run_dir), "metrics": result.metrics,
                 "seconds": result.seconds, "parameters": served_parameters(result.model),
                 "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        del result
        gc.collect()
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(record_path, json.dumps(json_safe(multi), indent=2, sort_keys=True) + "\n")
    else:
        say(f"[{runs}/{runs}] multi-task model: cached in {multi['run_dir']}")

    single_metrics = {t: baselines[t]["metrics"][t] for t in config.task_names}
    deltas = task_deltas(multi["metrics"], single_metrics, primary)
    report = {
        "name": config.name,
        "command": command or f"kmtl compare {config.name}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "backbone": config.backbone,
        "recipe": recipe(config),
        "teachers": sorted(getattr(config, "teachers", {}) or {}),
        "tasks": deltas,
        "delta_m": delta_m_of(deltas),
        "metrics": {"single_task": single_metrics, "multi_task": multi["metrics"]},
        "seconds": {"single_task": {t: baselines[t]["seconds"] for t in config.task_names},
                    "single_task_total": sum(baselines[t]["seconds"] for t in config.task_names),
                    "multi_task": multi["seconds"]},
        "parameters": {"single_task": {t: baselines[t]["parameters"] for t in config.task_names},
                       "single_task_total": sum(baselines[t]["parameters"] for t in config.task_names),
                       "multi_task": multi["parameters"]},
        "cached": cached,
        "runs": {"single_task": {t: baselines[t]["run_dir"] for t in config.task_names},
                 "multi_task": multi["run_dir"]},
    }
    paths = write_reports(report, folder)
    echo("\n" + format_text(report))
    echo(f"\nreports: {paths['json']}, {paths['markdown']}")
    echo(f"TensorBoard: tensorboard --logdir {paths['logs']}")
    return {**report, "paths": {k: str(v) for k, v in paths.items()}}
