"""`train`: the whole run a config describes — data, model, fit, evaluation, export."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import keras

from kmtl import tasks as task_kinds
from kmtl.backbone import load_backbone
from kmtl.data import mixture, validation_dataset
from kmtl.data.buckets import default_boundaries
from kmtl.data.mixture import default_steps_per_epoch
from kmtl.distill import TeacherAnnealing, gold_metrics, load_teacher_tables, with_teachers
from kmtl.evaluation import evaluate_tasks, format_table, write_json
from kmtl.model import build_model
from kmtl.model.precision import float32_copy, precision_scope, resolve_precision
from kmtl.optimizer import head_rate_multipliers as optimizer_head_rates
from kmtl.optimizer import make_optimizer
from kmtl.plots import plot_run_curves
from kmtl.run_files import METRICS_FILE, save_run
from kmtl.sharing import format_parameter_counts, make_sharing, trainable_parameter_counts
from kmtl.training.backup import BACKUP_FOLDER, StepBackup, read_backup_state
from kmtl.training.data import read_task_examples
from kmtl.training.early_stopping import RunEarlyStopping, TaskEarlyStopping, freeze_heads
from kmtl.training.multi_worker import agree_on_precision, by_example, check_same_start, remove_worker_folder, worker_config
from kmtl.training.run_folder import LOGS_FOLDER, describe, plan_run, start_run
from kmtl.training.strategy import choose_strategy, is_chief
from kmtl.training.tensorboard import TaskTensorBoard
from kmtl.training.warm_start import start_from_run
from kmtl.weighting import LinearWeighting, StaticWeighting, get_weighting

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_dir: the run folder (weights, ``run.json``, ``metrics.json``, ``logs/``).
        metrics: per-task dev metrics (empty when no task has a dev split).
        history: Keras ``History.history``.
        export_path: the SavedModel version folder, or ``None`` when export is off.
        seconds: wall-clock training time (fit only).
    """

    run_dir: Path
    metrics: dict
    history: dict
    export_path: Optional[Path]
    seconds: float
    model: object = None
    preprocessor: object = None



def head_rate_multipliers(config, model) -> dict:
    """`kmtl.optimizer.head_rate_multipliers` for the config: each task's ``head_learning_rate``,
    else ``training.head_learning_rate`` (`TrainingConfig.head_rate`).

    Example:
        >>> head_rate_multipliers(config, model)   # training: 5e-5, heads 1e-3, tasks[1]: 2e-4
        {'sst2': 20.0, 'rel': 4.0, 'rel_hidden': 4.0, ...}
    """
    tr = config.training
    return optimizer_head_rates(model, tr.learning_rate, tr.head_rate,
                                {t.name: t.head_learning_rate for t in config.tasks if t.head_learning_rate})


def make_tasks(config, train_examples, echo=print):
    """Task objects from the config, with label sets inferred where the config gives none.

    Each task gets the options of its kind (`TaskConfig.kind_options`: a tagging task's
    ``tag_scheme`` and ``outside_tag``); a scheme detected from the training split (none in the
    config) is reported through ``echo``.

    Example:
        >>> tasks = make_tasks(config, {"ner": ConllSource("train.conll").read()})
        task 'ner': tag scheme iob1 detected ('I-PER' begins a chunk (train.conll:1, word 1)); ...
    """
    tasks = []
    for tc in config.tasks:
        task = task_kinds.KINDS[tc.kind](tc.name, labels=list(tc.labels) if tc.labels else None, **tc.kind_options())
        task.fit_labels(train_examples[tc.name])
        if getattr(task, "detected_scheme", None):
            echo(task.detected_scheme)
        tasks.append(task)
    return tasks


def weighting_callback(config):
    """The loss-weighting callback the config asks for (`kmtl.weighting.STRATEGIES`).

    Task weights (``tasks[i].weight``) are the starting weights; ``static``, ``linear`` and
    ``pcgrad`` keep using them, the other strategies set their own.
    """
    base = {t.name: t.weight for t in config.tasks}
    w = config.weighting
    if w.strategy == "linear":
        return LinearWeighting({**base, **w.start}, {**base, **w.end}, config.training.epochs)
    if w.strategy == "static":
        return StaticWeighting({**base, **w.weights})
    return get_weighting(w.strategy, **w.options())


def _length_options(config) -> dict:
    """`kmtl.data.mixture`'s ``length_buckets`` / ``group_by_length`` from the mixture section."""
    m = config.mixture
    buckets = m.length_buckets
    if m.group_by_length and not buckets:
        buckets = default_boundaries(config.max_length)
    return {"length_buckets": buckets, "group_by_length": m.group_by_length}


def _teacher_annealing(config, tasks, total_steps):
    """`kmtl.distill.TeacherAnnealing` for the tasks ``teachers`` names, or ``None``."""
    taught = [t for t in tasks if t.name in config.teachers]
    return TeacherAnnealing(total_steps) if taught else None


def _early_stopping(config, has_dev, tasks=None):
    """``EarlyStopping`` on ``training.early_stopping.monitor`` (``val_``-prefixed with a dev set).

    ``mode: auto`` goes to Keras as it is: every metric kmtl logs carries its direction
    (`kmtl.metrics`), so Keras finds it. `kmtl.config.load_config` already refuses a monitor the
    run will not log (from each kind's metric names, before any data is read); given the
    ``tasks``, this checks again against their real metrics, for configs built in Python.
    """
    from kmtl.errors import ConfigError

    es = config.training.early_stopping
    if es is None:
        return None
    monitor = es.monitor
    if has_dev and not monitor.startswith("val_"):
        monitor = "val_" + monitor
    if tasks is not None:
        logged = ["loss"] + [f"{t.name}_{m}" for t in tasks for m in ["loss"] + [x.name for x in t.metrics()]]
        if monitor.removeprefix("val_") not in logged:
            raise ConfigError([("training.early_stopping.monitor",
                                f"{es.monitor!r} is not in the training logs; monitor one of: {', '.join(logged)}")])
    return RunEarlyStopping(monitor=monitor, patience=es.patience, mode=es.mode, restore_best_weights=True, verbose=1)


def _task_early_stopping(config, dev_ex, frozen, echo):
    """`TaskEarlyStopping` for the tasks with ``early_stopping`` (and something to train), or ``None``.

    A task with dev examples is judged by its ``val_`` figure, one without by its training figure."""
    rules = {}
    for task in config.tasks:
        es = task.early_stopping
        if es is None or task.name in frozen:
            continue
        prefix = "val_" if dev_ex.get(task.name) else ""
        rules[task.name] = {"monitor": f"{prefix}{task.name}_{es.monitor}", "patience": es.patience,
                            "min_delta": es.min_delta, "mode": es.mode}
    trained = [t.name for t in config.tasks if t.name not in frozen]
    return TaskEarlyStopping(rules, trained=trained, echo=echo) if rules else None


def _fit_from_backup(model, stream, backup: StepBackup, steps: int, epochs: int, stopper=None, task_stopper=None,
                     **fit_args) -> dict:
    """``fit`` from where ``backup`` stands to the run's end; returns the merged ``History.history``.

    ``stream(stopped)`` is the run's whole input (``epochs × steps`` batches, the same for every
    iterator) for the tasks stopped so far (``{task: first epoch without it}``). Keras' ``fit``
    has no initial step, so an epoch interrupted after ``k`` steps is finished by a ``fit`` of
    its own (``steps - k`` steps, after ``skip``-ping the stream to the backup's step); the
    remaining epochs follow in a second ``fit``. When ``task_stopper``
    (`kmtl.training.early_stopping.TaskEarlyStopping`) stops a task, its ``fit`` ends at that
    epoch and the next one trains on a stream without the task (its first epochs are the
    same batches), with the task's head frozen. The same callback objects serve every ``fit``
    (their ``on_train_begin`` / ``on_train_end`` run each time). ``stopper`` (the run's
    `RunEarlyStopping`) ends the run.
    """
    start = backup.resume_point()
    backup.starting_at(start)
    epoch, offset, history = start.epoch, start.step, {}
    stopped = dict(task_stopper.stopped) if task_stopper is not None else {}
    while True:
        if offset:  # the rest of an interrupted epoch
            initial, end, n = epoch, epoch + 1, steps - offset
        else:
            initial, end, n = min(epoch, epochs), epochs, steps
        data = stream(stopped)
        done = initial * steps + offset
        # a run that had finished still loads its backup (a fit of no epoch)
        data = data.skip(done).take((end - initial) * n) if end > initial else data.take(1)
        fitted = model.fit(data, initial_epoch=initial, epochs=end, steps_per_epoch=n, shuffle=False, **fit_args)
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(values)
        if end <= initial:
            break
        epoch, offset = initial + len(fitted.history.get("loss", [])), 0
        new_stops = task_stopper is not None and task_stopper.stopped != stopped
        if epoch >= epochs or (stopper is not None and stopper.stopped_epoch > 0):
            break
        if epoch < end and not new_stops:  # another callback stopped training (TerminateOnNaN...)
            break
        if new_stops:
            if task_stopper.all_stopped:
                break
            task_stopper.freeze(model, [t for t in task_stopper.stopped if t not in stopped])
            stopped = dict(task_stopper.stopped)
    return history


def _float32_for_serving(model, echo):
    """What the run exports by default (``export.precision: float32``): the model in float32
    whatever its training precision, as `kmtl export` of the run folder gives (unless its
    ``--precision`` says otherwise): a SavedModel that runs at full speed on any serving CPU (a
    bfloat16 graph on a CPU without native bfloat16 is emulated, several times slower). The
    weights are the float32 master weights; outputs differ from the bfloat16 model's by its
    rounding (~1e-2 in logits)."""
    try:
        return float32_copy(model)
    except ValueError as err:
        echo(f"export: {err}; exporting the model in its training precision")
        return model


def _run_precision(configured: str, resumed: dict):
    """``(precision, reason)`` of a run: `resolve_precision` of the config's value, except that a
    run resumed from a backup under ``auto`` keeps the precision it started in (``resumed``: the
    backup state's ``extra``), so a rerun on a machine of another kind does not switch precision mid-run."""
    precision, reason = resolve_precision(configured)
    if configured != "auto":
        return precision, reason
    started = resumed.get("precision")
    if started and started != precision:
        return started, f"auto: resumed in the precision the run started in (this machine alone: {precision})"
    return precision, reason


def train(config, *, verbose: int = 1, export: Optional[bool] = None, echo=print, rerun: str = "auto",
          callbacks: Sequence = ()) -> RunResult:
    """Train, evaluate and export the multi-task model a validated `kmtl.config.Config` describes.

    Re-running the same config after a crash (even ``kill -9``) resumes at the last backup
    (`kmtl.training.backup.StepBackup` in ``<run_dir>/backup``: every 100 steps and at each
    epoch's end) with the same batches in the same order as an uninterrupted run (the input is
    one seeded stream of ``epochs × steps`` batches, skipped to the backup's step).

    Nothing is written before the config, the data and the model are validated: a failed
    (re)run leaves no folder behind, and a finished run's files untouched. ``rerun`` says
    what to do with an existing run folder (`kmtl.training.run_folder`): a backup of another
    config, or a finished run under ``resume`` / ``restart``, stops with a `KmtlError` naming
    the fix; a start from step 0 clears the old ``logs/``, so TensorBoard never appends one
    run's curves to another's.

    Under a multi-worker strategy (``TF_CONFIG`` naming several workers, each running this with
    the same config) the workers train one model on their parts of each global batch, and only
    the chief writes the run folder and the export; the others write into a scratch folder of
    their own, deleted at the end (`kmtl.training.multi_worker`).

    Args:
        config: from `kmtl.config.load_config`.
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).
        export: override ``config.export.enabled``.
        echo: where human-readable progress lines go.
        rerun: ``auto`` (default: resume a backup of this config, replace a finished run),
            ``resume`` (the CLI's default: as auto, but a finished run stops), ``restart``
            (discard the backup) or ``overwrite`` (replace whatever is there).
        callbacks: more Keras callbacks for ``fit`` (e.g. `kmtl.training.affinity.TaskAffinity`),
            called after kmtl's own and before TensorBoard's, so figures they add to the epoch
            logs reach TensorBoard and ``History``.

    Example:
        >>> result = kmtl.training.train(kmtl.config.load_config("configs/sst2_conll_stsb.yaml"))
        >>> result.metrics["sentiment"]["accuracy"]
    """
    plan = plan_run(config, rerun)  # reads the run folder, writes nothing
    run_dir = Path(config.run_dir)
    keras.utils.set_random_seed(config.training.seed)

    train_ex, dev_ex = read_task_examples(config)
    sizes = {name: len(exs) for name, exs in train_ex.items()}
    echo("examples: " + ", ".join(f"{n} train={sizes[n]} dev={len(dev_ex[n])}" for n in sizes))

    strategy = choose_strategy(config.training.strategy)
    chief, chief_run_dir = is_chief(strategy), run_dir
    if not chief:  # multi-worker: only the chief writes the run folder; this worker, a scratch folder
        config = worker_config(config, strategy)  # kmtl.training.multi_worker
        plan = plan_run(config, rerun if plan.resume else "overwrite")  # resumes when the chief does
        run_dir = Path(config.run_dir)
    tr = config.training
    batch_size = config.mixture.batch_size
    # tasks the sharing mode trains nothing for (progressive: no column) stay out of the training
    # mixture, where their batches would only cost steps; they are still evaluated
    frozen = make_sharing(config.sharing.mode, **config.sharing.options()).frozen_tasks(config.task_names)
    if frozen:
        echo(f"not trained (sharing {config.sharing.mode} trains nothing of theirs), evaluated: {', '.join(frozen)}")
    trained_ex = {name: exs for name, exs in train_ex.items() if name not in frozen}
    own_sizes = {t.name: t.batch_size for t in config.tasks if t.batch_size is not None}
    # an epoch sees each example once across all replicas and workers: steps of the global batch
    replicas = strategy.num_replicas_in_sync
    steps = tr.steps_per_epoch or default_steps_per_epoch(
        [len(exs) for exs in trained_ex.values()], batch_size * replicas,
        [own_sizes[name] * replicas if name in own_sizes else None for name in trained_ex] if own_sizes else None)
    # the encoder is built under the config's dtype policy (heads stay float32); the policy is
    # restored afterwards, so it does not leak into the caller's process (kmtl.model.precision)
    # what the backup recorded beside the weights (its precision, the tasks stopped early), read once
    resumed = ((read_backup_state(run_dir / BACKUP_FOLDER) if plan.resume else None) or {}).get("extra") or {}
    precision, precision_reason = _run_precision(tr.precision, resumed)
    precision, precision_reason = agree_on_precision(strategy, precision, precision_reason)
    with strategy.scope(), precision_scope(precision):
        encoder = load_backbone(config.backbone, seed=tr.seed)
        tasks = make_tasks(config, train_ex, echo)
        model = build_model(encoder, tasks, pooling=config.pooling, sharing=config.sharing.mode,
                            **config.sharing.options(), name=config.name, max_length=config.max_length)
        optimizer = make_optimizer(tr.learning_rate, steps * tr.epochs, tr.warmup_ratio, tr.weight_decay, tr.clipnorm,
                                   rate_multipliers=head_rate_multipliers(config, model))
        annealing = _teacher_annealing(config, tasks, steps * tr.epochs)  # None without teachers
        model.compile(optimizer=optimizer, loss_weights={t.name: t.weight for t in config.tasks},
                      weighted_metrics=gold_metrics(tasks) if annealing is not None else None,
                      jit_compile=tr.jit_compile)
    preprocessor = model.preprocessor  # the config's max_length: training, predict and export tokenize alike

    tables = load_teacher_tables(config.teachers, tasks, train_ex, preprocessor, echo) if annealing is not None else None

    built = {}  # {stopped tasks: the stream}: a fit without new stops reuses its dataset

    def stream(stopped=None):
        """The run's one stream: batch i depends on (seed, i, the tasks stopped before it) only,
        so a rerun can skip to i."""
        key = tuple(sorted((stopped or {}).items()))
        if key not in built:
            train_ds = mixture(
                tasks, trained_ex, preprocessor, batch_size=batch_size * replicas,
                sampling=config.mixture.sampling, temperature=config.mixture.temperature,
                granularity=config.mixture.granularity, epochs=tr.epochs, steps_per_epoch=steps, seed=tr.seed,
                reshuffle_each_iteration=False, **_length_options(config),
                shares={t.name: t.batch_share for t in config.tasks if t.batch_share is not None},
                batch_sizes={name: size * replicas for name, size in own_sizes.items()},
                stopped=dict(key) or None,
            )
            # BAM!: teacher targets ride along as y[task]["teacher"]
            train_ds = train_ds if tables is None else with_teachers(train_ds, tasks, tables)
            built[key] = by_example(train_ds, strategy)  # multi-worker: each worker its part of each batch
        return built[key]

    stream()  # builds (and so checks) the input before anything is written; fit reuses it
    before = start_from_run(config, model, dev_ex, echo) if config.init_from is not None else None
    has_dev = any(dev_ex.values())
    val_ds = by_example(validation_dataset(tasks, dev_ex, preprocessor), strategy) if has_dev else None

    task_stopper = _task_early_stopping(config, dev_ex, frozen, echo)
    backup = StepBackup(run_dir / BACKUP_FOLDER, steps, save_every=tr.backup_every, config_hash=plan.config_hash,
                        extra=lambda: {"precision": precision, **({} if task_stopper is None else
                                                                  {"task_early_stopping": task_stopper.get_state()})})
    if plan.resume:
        backup.resume_point()  # a backup with other steps per epoch stops here, before anything is written
        if task_stopper is not None:  # tasks stopped before the backup: frozen, out of the stream
            task_stopper.set_state(resumed.get("task_early_stopping"))
            if task_stopper.stopped:
                with strategy.scope():  # the optimizer's slots as the backup has them: every head's
                    model.optimizer.build(model.trainable_variables)
                task_stopper.freeze(model, list(task_stopper.stopped))
    stopper = _early_stopping(config, has_dev, tasks)
    weighting = weighting_callback(config)
    check_same_start(strategy, backup.resume_point().global_step(steps) if plan.resume else 0)  # multi-worker
    start_run(plan, config)  # everything is validated: clear a replaced run, write config.json
    if describe(plan):
        echo(describe(plan))
    if tr.log_affinity_every is not None:  # the negative-transfer figures, in TensorBoard (2+ tasks: config check)
        from kmtl.training.affinity import TaskAffinity

        callbacks = [TaskAffinity(train_ex, every=tr.log_affinity_every, seed=tr.seed), *callbacks]
    callbacks = [
        weighting,
        *([task_stopper] if task_stopper is not None else []),  # before the backup, which records its stops
        backup,
        *callbacks,  # the caller's: before TensorBoard, which writes what they add to the epoch logs
        TaskTensorBoard(str(run_dir / LOGS_FOLDER)),  # one section per task (kmtl/training/tensorboard.py)
    ]
    if annealing is not None:
        callbacks.insert(0, annealing)
    if stopper is not None:
        callbacks.append(stopper)

    said = "" if tr.precision == precision == "float32" else f", precision: {precision}" + (
        f" ({precision_reason})" if tr.precision == "auto" else "")
    echo(f"training {format_parameter_counts(trainable_parameter_counts(model))} "
         f"[sharing: {model.sharing}, weighting: {config.weighting.strategy}{said}] on "
         f"{strategy.num_replicas_in_sync} replica(s): "
         f"{tr.epochs} epochs x {steps} steps")
    start = time.perf_counter()
    history = _fit_from_backup(model, stream, backup, steps, tr.epochs, stopper=stopper, task_stopper=task_stopper,
                               validation_data=val_ds, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    if stopper is not None:
        stopper.finish()  # the best epoch's weights (Keras' on_train_end, once for the run's fits)
    extra = {"name": config.name, "precision": precision}
    if task_stopper is not None and task_stopper.stopped:
        freeze_heads(model, task_stopper.stopped, trainable=True)  # the saved model trains as any other
        extra["tasks_stopped"] = {task: epoch for task, epoch in task_stopper.stopped.items() if epoch < tr.epochs}
        if extra["tasks_stopped"]:
            echo("stopped early (epochs trained): " + ", ".join(f"{t} {e}" for t, e in extra["tasks_stopped"].items()))
    save_run(run_dir, model, config.max_length, extra)
    backup.clear()  # only now: a crash before save_run still resumes from the backup

    metrics = {}
    if has_dev:
        metrics = evaluate_tasks(model, dev_ex, preprocessor, figures=run_dir)  # <task>_confusion.png...
        write_json(metrics, run_dir / METRICS_FILE)
        echo("\ndev metrics\n" + format_table(metrics))
        if before is not None:
            from kmtl.evaluation.retention import format_retention, retention_report, write_retention

            retention = retention_report(before, metrics, config.init_from)
            write_retention(retention, run_dir)
            echo("\n" + format_retention(retention))

    # curves.png from the logs: the epochs before a resume too
    plot_run_curves(run_dir, config.task_names, history, title=config.name, logs=LOGS_FOLDER)

    export_path = None
    if config.export.enabled if export is None else export:
        from kmtl.export import export_saved_model

        served = model if config.export.precision == "training" else _float32_for_serving(model, echo)
        export_path = export_saved_model(served, preprocessor, config.export.dir, config.name,
                                         xla_max_batch=config.export.xla_max_batch)
    if not chief:  # its copies of the chief's files
        remove_worker_folder(config)
        run_dir, export_path = chief_run_dir, None
    return RunResult(run_dir, metrics, history, export_path, seconds, model, preprocessor)
