"""Early stopping across the several ``fit`` calls of one run: of the whole run, and of one task.

A kmtl run may be more than one ``fit`` (`kmtl.training.trainer`): a resumed epoch is finished
by a ``fit`` of its own, and a task that stops improving ends a ``fit`` so that the next one
trains without it. Keras' `keras.callbacks.EarlyStopping` resets its count at every
``on_train_begin`` and puts back its best weights at every ``on_train_end``; here it counts and
restores over the whole run.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from kmtl.sharing.counts import head_layers, task_rows


class RunEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` over all the ``fit`` calls of one run.

    Its state starts at the first ``on_train_begin`` only, and the best weights are put back
    by `finish` (the trainer calls it once the run's last ``fit`` returned), not at the end of
    every ``fit``: Keras' callback (3.15) restores them in each ``on_train_end``, which, in a
    run of several ``fit`` calls, would throw away the epochs since the best one while
    training goes on. The arguments are Keras'.

    Example:
        >>> stopper = RunEarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        >>> model.fit(train.take(10), epochs=1, callbacks=[stopper])
        >>> model.fit(train.skip(10), initial_epoch=1, epochs=3, callbacks=[stopper])
        >>> stopper.finish()   # the best epoch's weights, over both fits
    """

    _started = False

    def on_train_begin(self, logs=None):
        if not self._started:
            self._started = True
            super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        """Nothing: `finish` does Keras' ``on_train_end`` once, after the last ``fit``."""

    def finish(self) -> None:
        """Keras' ``on_train_end``: say where training stopped, put back the best weights."""
        super().on_train_end()


class _TaskView:
    """What one task's `keras.callbacks.EarlyStopping` sees as its model: the real model's
    metrics (their ``_direction`` sets ``mode: auto``) and a ``stop_training`` of its own."""

    def __init__(self, model):
        self._model = model
        self.stop_training = False

    @property
    def metrics(self):
        return self._model.metrics


class TaskEarlyStopping(keras.callbacks.Callback):
    """Per-task early stopping: a task whose own figure stopped improving leaves training.

    At each epoch's end every task still training is judged as Keras' `EarlyStopping` judges a
    run (one instance per task: ``monitor`` — ``val_<task>_<metric>`` when the task has a dev
    split —, ``patience``, ``min_delta``, ``mode``; ``auto`` reads the metric's direction). A
    task that ran out of patience is *stopped from the next epoch on*: `stopped` records
    ``{task: first epoch without it}`` and the callback ends this ``fit`` (not on the last
    epoch), so that the trainer (`kmtl.training.train`) can go on with the task frozen
    (`freeze`: its head no longer trains, and its rows of the sharing mode's per-task weights —
    adapters, prefixes, soft copies, scalar mixes, gates — are put back after every step, since
    AdamW's momentum and decay would move them without a gradient) and a training mixture
    without its batches (``kmtl.data.mixture(stopped=...)``); the run ends when every task has
    stopped. The other
    tasks fill its share of the batches; the steps per epoch (and so the learning-rate
    schedule) stay as planned.

    Its state (`get_state` / `set_state`) goes into the run's backups, so a resumed run stops
    the same tasks at the same epochs. YAML: ``tasks[i].early_stopping``.

    Not a paper's method: the per-task settings users ask for in multi-task tools' trackers
    (one task converges epochs before another). A stopped task's own weights do not move, but
    the shared encoder does (the progressive mode's columns, stacked by column, are not held
    either), so its dev figure may still drift.

    Args:
        rules: ``{task: {"monitor": log key, "patience": n, "min_delta": x, "mode": m}}``.
        trained: every task in training (default: those of ``rules``): `all_stopped` when all
            of them have stopped.
        verbose: print one line when a task stops.
        echo: where that line goes.

    Example:
        >>> stopper = TaskEarlyStopping({"sst2": {"monitor": "val_sst2_accuracy", "patience": 1}})
        >>> model.fit(train, validation_data=dev, epochs=5, callbacks=[stopper])
        >>> stopper.stopped          # the fit ended after epoch 3 (0-based 2): no SST-2 batches from epoch 4
        {'sst2': 3}
    """

    def __init__(self, rules: Mapping[str, Mapping], trained: Optional[Sequence[str]] = None, verbose: int = 1,
                 echo=print):
        super().__init__()
        self.rules = {task: dict(rule) for task, rule in rules.items()}
        self.trained = list(trained) if trained is not None else list(self.rules)
        self.verbose, self.echo = verbose, echo
        self.stopped: Dict[str, int] = {}
        self._held, self._to_hold = [], []  # (variable, rows, values) held still; tasks whose rows to take
        self.stoppers = {
            task: keras.callbacks.EarlyStopping(monitor=rule["monitor"], patience=rule.get("patience", 2),
                                                min_delta=rule.get("min_delta", 0.0), mode=_mode(rule))
            for task, rule in self.rules.items()
        }
        for stopper in self.stoppers.values():
            stopper.on_train_begin()  # its count starts once, not at every fit of the run

    def set_model(self, model):
        super().set_model(model)
        for stopper in self.stoppers.values():
            stopper.set_model(_TaskView(model))

    @property
    def all_stopped(self) -> bool:
        return set(self.stopped) >= set(self.trained)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        newly = []
        for task, stopper in self.stoppers.items():
            if task in self.stopped:
                if logs is not None and self.stopped[task] <= epoch:
                    self._drop_training_figures(task, logs)
                continue
            stopper.model.stop_training = False
            stopper.on_epoch_end(epoch, logs)
            if stopper.model.stop_training:
                self.stopped[task] = epoch + 1
                newly.append(task)
        if not newly:
            return
        going_on = last is None or epoch + 1 < last
        if self.verbose:
            for task in newly:
                stopper = self.stoppers[task]
                then = (f"its head is frozen and it leaves the training mixture from epoch {epoch + 2}" if going_on
                        else "it was the last epoch")
                self.echo(f"task {task!r}: {stopper.monitor} has not improved for {stopper.wait} epoch(s) (best "
                          f"{float(stopper.best):.4f} after epoch {stopper.best_epoch + 1}); {then}")
        if going_on:
            self.model.stop_training = True  # the trainer goes on without it (a new stream)

    def freeze(self, model, tasks) -> None:
        """Freeze ``tasks``: their heads (`freeze_heads`), and their rows of the per-task weights
        (`kmtl.sharing.counts.task_rows`), held at their values of the next step's start (after a
        backup was loaded) and put back after every step."""
        freeze_heads(model, tasks)
        self._to_hold += [task for task in tasks if task not in self._to_hold]

    def on_train_batch_begin(self, batch, logs=None):
        if not self._to_hold:
            return
        names = [t.name for t in getattr(self.model, "tasks", [])]
        rows = np.array(sorted(names.index(t) for t in self._to_hold if t in names), dtype=np.int64)
        self._to_hold = []
        if rows.size:
            self._held += [(v, rows[:, None], np.asarray(v.numpy())[rows]) for v in task_rows(self.model)]

    def on_train_batch_end(self, batch, logs=None):
        if self._held:
            for variable, rows, values in self._held:
                variable.assign(tf.tensor_scatter_nd_update(variable.value, rows, tf.cast(values, variable.dtype)))

    def _drop_training_figures(self, task: str, logs: dict) -> None:
        """Leave a stopped task's training figures (a loss and metrics over no example: 0) out of
        the epoch's logs, so TensorBoard and ``curves.png`` end its training curves where it
        stopped (its ``val_`` figures go on: the shared encoder still moves it)."""
        metrics = getattr(self.model, "_compile_metrics", None)
        names = metrics.log_names([task]) if hasattr(metrics, "log_names") else set()
        for key in names | {f"{task}_loss"}:
            logs.pop(key, None)

    def get_state(self) -> dict:
        """JSON-able state for a backup: the stop epochs and each task's count."""
        return {"stopped": dict(self.stopped),
                "tasks": {task: {"wait": s.wait, "best": None if s.best is None else float(s.best),
                                 "best_epoch": int(s.best_epoch)} for task, s in self.stoppers.items()}}

    def set_state(self, state: Optional[Mapping]) -> None:
        """Go on from `get_state`'s dict (``None``: from the start)."""
        if not state:
            return
        self.stopped = {task: int(epoch) for task, epoch in state.get("stopped", {}).items() if task in self.rules}
        for task, saved in state.get("tasks", {}).items():
            if task in self.stoppers:
                stopper = self.stoppers[task]
                stopper.wait, stopper.best, stopper.best_epoch = saved["wait"], saved["best"], saved["best_epoch"]


def _mode(rule) -> str:
    """The rule's mode; ``auto`` for a ``<task>_loss`` is ``min`` (Keras' ``auto`` knows the bare
    ``loss`` and the metrics it finds by name, not a task's loss)."""
    mode = rule.get("mode", "auto")
    return "min" if mode == "auto" and rule["monitor"].endswith("_loss") else mode


def freeze_heads(model, tasks, trainable: bool = False) -> None:
    """Set the ``trainable`` flag of the head layers of ``tasks`` (`kmtl.sharing.counts.head_layers`)
    and drop the model's traced train step, which took ``model.trainable_weights`` when traced.

    A frozen head gets no gradient and no optimizer update (no AdamW decay or momentum either).
    Build the optimizer before freezing (``model.optimizer.build(model.trainable_variables)``)
    when its slots must match a backup made before.

    Example:
        >>> freeze_heads(model, ["sst2"])                   # the SST-2 head stays as it is
        >>> freeze_heads(model, ["sst2"], trainable=True)   # and trains again
    """
    for task in tasks:
        for layer in head_layers(model, task):
            layer.trainable = trainable
    model.train_function = None
