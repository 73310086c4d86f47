"""`TaskTensorBoard`: Keras' TensorBoard callback with one dashboard section per task.

TensorBoard groups scalar cards by the part of the tag before the first ``/``. Keras writes
every figure as ``epoch_<name>``, so a multi-task run shows one long list. This callback
writes the same figures (`kmtl.metrics` log names) as:

| log name (History)                         | TensorBoard tag (run ``train`` / ``validation``) |
|--------------------------------------------|--------------------------------------------------|
| ``<task>_<metric>`` / ``val_<task>_<metric>`` | ``<task>/<metric>``                           |
| ``loss_weight_<task>``                     | ``loss_weights/<task>``                          |
| anything else (``loss``, ``learning_rate``) | ``run/<name>``                                  |

plus a custom-scalars layout (TensorBoard's "Custom Scalars" tab) with all loss weights on one
chart and all task losses on another. Batch-level figures (``update_freq``) get the same tags
with a ``batch_`` metric prefix. Keras' ``evaluation_<name>_vs_iterations`` (the validation
figures again, against the optimizer step) are left out unless asked for; they then go to one
section, ``evaluation_vs_iterations/<task>/<metric>``.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

import keras

LOSS_WEIGHTS = "loss_weights"
RUN = "run"
VS_ITERATIONS = "evaluation_vs_iterations"


def tensorboard_tag(name: str, tasks: Iterable[str], run_section: str = RUN, weights_section: str = LOSS_WEIGHTS) -> str:
    """The grouped TensorBoard tag of one log name (without its ``val_`` prefix).

    Args:
        name: a log name, e.g. ``sentiment_accuracy``, ``loss_weight_ner``, ``loss``.
        tasks: the task (output) names; the longest one that prefixes ``name`` wins.
        run_section, weights_section: the sections of run-level figures and of loss weights.

    Example:
        >>> tensorboard_tag("sentiment_macro_f1", ["sentiment", "ner"])
        'sentiment/macro_f1'
        >>> tensorboard_tag("loss_weight_ner", ["sentiment", "ner"])
        'loss_weights/ner'
        >>> tensorboard_tag("loss", ["sentiment", "ner"])
        'run/loss'
    """
    tasks = sorted(tasks, key=len, reverse=True)
    if name.startswith("loss_weight_") and name[len("loss_weight_"):] in tasks:
        return f"{weights_section}/{name[len('loss_weight_'):]}"
    for task in tasks:
        if name.startswith(task + "_"):
            return f"{task}/{name[len(task) + 1:]}"
    return f"{run_section}/{name}"


def scalars_layout(tasks: Iterable[str], weights_section: str = LOSS_WEIGHTS):
    """The custom-scalars layout proto: one chart of all loss weights, one of all task losses.

    Example:
        >>> layout = scalars_layout(["sentiment", "ner"])
        >>> [c.title for c in layout.category[0].chart]
        ['loss weights', 'task losses']
    """
    from tensorboard.plugins.custom_scalar import layout_pb2

    tasks = list(tasks)
    losses = "^(" + "|".join(re.escape(t) for t in tasks) + ")/loss$"
    return layout_pb2.Layout(category=[layout_pb2.Category(title="multi-task", chart=[
        layout_pb2.Chart(title="loss weights",
                         multiline=layout_pb2.MultilineChartContent(tag=[f"^{re.escape(weights_section)}/"])),
        layout_pb2.Chart(title="task losses", multiline=layout_pb2.MultilineChartContent(tag=[losses])),
    ])])


class TaskTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` that groups the figures per task (see the module table).

    Takes every argument of `keras.callbacks.TensorBoard` (histograms, graph, profiling keep
    Keras' defaults and behaviour) and ``tasks``: the task names, by default ``model.tasks``'
    names (a `kmtl` model) or ``model.output_names``; ``evaluation_vs_iterations``: also write
    Keras' validation-figures-against-steps (off: within ``fit`` they repeat the epoch curves,
    and fill a section longer than all the tasks'). A task named ``run`` or ``loss_weights``
    moves that section to ``run-level`` / ``loss-weights`` (task names cannot hold ``-``).

    Example:
        >>> model.fit(train, validation_data=dev, epochs=3,
        ...           callbacks=[kmtl.callbacks.TaskTensorBoard("logs")])
        >>> # tensorboard --logdir logs: sections sentiment/, ner/, loss_weights/, run/
    """

    def __init__(self, log_dir="logs", *, tasks: Optional[Iterable[str]] = None, evaluation_vs_iterations: bool = False,
                 **kwargs):
        super().__init__(log_dir, **kwargs)
        self.tasks = list(tasks) if tasks is not None else None
        self.evaluation_vs_iterations = evaluation_vs_iterations
        self._layout_written = False

    def set_model(self, model):
        super().set_model(model)
        if self.tasks is None:
            tasks = getattr(model, "tasks", None)
            self.tasks = [t.name for t in tasks] if tasks else list(getattr(model, "output_names", None) or [])
        self._run_section = "run-level" if RUN in self.tasks else RUN
        self._weights_section = "loss-weights" if LOSS_WEIGHTS in self.tasks else LOSS_WEIGHTS

    def tag(self, name: str) -> str:
        """The grouped tag of a log name (`tensorboard_tag` with this run's tasks)."""
        return tensorboard_tag(name, self.tasks, self._run_section, self._weights_section)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self._layout_written:  # once per callback (a resumed fit calls this again)
            import tensorflow as tf
            from tensorboard.plugins.custom_scalar import metadata

            layout = scalars_layout(self.tasks, self._weights_section)
            with self._train_writer.as_default():
                self.summary.write(metadata.CONFIG_SUMMARY_TAG, tf.constant(layout.SerializeToString()),
                                   step=0, metadata=metadata.create_summary_metadata().SerializeToString())
            self._layout_written = True

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, None)  # graph, profiler, steps/s; the scalars are written here
        if self.update_freq == "epoch":  # Keras writes batch scalars nowhere then (no default writer)
            return
        for name, value in (logs if isinstance(logs, dict) else {}).items():
            section, metric = self.tag(name).split("/", 1)
            self.summary.scalar(f"{section}/batch_{metric}", value, step=self._global_train_batch)

    def on_test_end(self, logs=None):
        optimizer = self.model.optimizer
        if self.evaluation_vs_iterations and logs and optimizer is not None and hasattr(optimizer, "iterations"):
            with self._val_writer.as_default():
                for name, value in logs.items():
                    self.summary.scalar(f"{VS_ITERATIONS}/{self.tag(name)}", value, step=optimizer.iterations)
        super().on_test_end({})  # pops the writer; Keras' flat `evaluation_<name>_vs_iterations` replaced by the above

    def _log_epoch_metrics(self, epoch, logs):
        """Keras' epoch summaries (`keras/src/callbacks/tensorboard.py`), with grouped tags."""
        if not logs:
            return
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[len("val_"):]: v for k, v in logs.items() if k.startswith("val_")}
        train_logs = self._collect_learning_rate(train_logs)
        if self.write_steps_per_second:
            train_logs["steps_per_second"] = self._compute_steps_per_second()
        for writer, figures in ((self._train_writer, train_logs), (self._val_writer, val_logs)):
            if figures:
                with writer.as_default():
                    for name, value in figures.items():
                        self.summary.scalar(self.tag(name), value, step=epoch)
