"""`TaskMetrics`: the compiled metrics of a multi-task model, each named as it is logged."""

from __future__ import annotations

# Private Keras module: the class `keras.Model.compile` builds its metrics container from,
# and one of the two containers whose metrics EarlyStopping/ModelCheckpoint search by name.
from keras.src.trainers.compile_utils import CompileMetrics

from kmtl.metrics.task_metric import TaskMetric


class TaskMetrics(CompileMetrics):
    """Keras' compiled-metrics container whose metrics carry their logged names.

    Keras 3.15 logs a per-output metric ``accuracy`` of output ``sent`` as ``sent_accuracy``
    but keeps the metric's own name ``accuracy``, and ``EarlyStopping`` / ``ModelCheckpoint``
    with ``mode="auto"`` look for a compiled metric *named* like the monitored log key to
    read its direction (``keras/src/callbacks/monitor_callback.py``: ``m.name == metric_name``,
    then ``m._direction``); for any multi-output model they find none and ask for ``mode``.
    (No upstream issue found for this; checked keras 3.15.1.) Once built, this container
    wraps every metric in a `TaskMetric` named ``<task>_<metric>`` and drops Keras' own
    prefix, so the logs keep their keys and the callbacks find each metric and its
    direction. A one-output model's metrics are named ``<task>_<metric>`` too (Keras would
    log them bare), so kmtl's log keys do not depend on the number of tasks.

    `kmtl.MultiTaskModel.compile` installs it; the constructor takes what
    ``keras.Model.compile`` passes to `CompileMetrics`.

    Example:
        >>> model.compile(optimizer="adam")            # MultiTaskModel: TaskMetrics inside
        >>> model.fit(train, validation_data=val, callbacks=[
        ...     keras.callbacks.EarlyStopping(monitor="val_sent_accuracy")])   # no mode needed
    """

    def log_names(self, tasks) -> set:
        """The log keys of the metrics of ``tasks`` (task names), once built."""
        groups = list(getattr(self, "_flat_metrics", None) or []) + list(getattr(self, "_flat_weighted_metrics", None) or [])
        return {m.name for group in groups if group is not None for m in group.metrics
                if getattr(m, "task", None) in tasks}

    def build(self, y_true, y_pred):
        super().build(y_true, y_pred)
        only = self.output_names[0] if self.output_names and len(self.output_names) == 1 else None
        for group in self._flat_metrics + self._flat_weighted_metrics:
            task = None if group is None else (group.output_name or only)
            if task is None:
                continue
            group.metrics = [m if isinstance(m, TaskMetric) else TaskMetric(m, task) for m in group.metrics]
            group.output_name = None  # the names carry the task now: no second prefix in `result`
