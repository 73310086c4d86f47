"""`TaskMetric`: one task's metric, named as Keras logs it (``<task>_<metric>``)."""

from __future__ import annotations

import keras


def direction_of(metric):
    """``"up"``/``"down"`` from the metric's ``_direction`` (the attribute Keras' callbacks read),
    or from the metric it wraps (``metric.metric``, e.g. `kmtl.distill.GoldMetric`); else None."""
    for candidate in (metric, getattr(metric, "metric", None)):
        direction = getattr(candidate, "_direction", None)
        if direction in ("up", "down"):
            return direction
    return None


@keras.saving.register_keras_serializable(package="kmtl")
class TaskMetric(keras.metrics.Metric):
    """A task's metric under its logged name, ``<task>_<metric name>``, with its direction.

    Keras logs the metric ``accuracy`` of output ``sent`` as ``sent_accuracy``, but
    ``EarlyStopping``/``ModelCheckpoint`` in ``mode="auto"`` look the metric up by the logged
    name among the compiled metrics and find only ``accuracy``
    (``keras/src/callbacks/monitor_callback.py``, ``_set_monitor_op``), so they cannot tell
    its direction and raise. `kmtl.metrics.TaskMetrics` wraps each compiled metric in a
    ``TaskMetric``: it updates, reads and resets the wrapped metric, and carries its
    ``_direction`` under the logged name. The wrapped metric keeps its own name.

    Args:
        metric: the task's metric (a `keras.metrics.Metric`).
        task: the task (output) name.

    Example:
        >>> m = TaskMetric(keras.metrics.SparseCategoricalAccuracy(name="accuracy"), "sent")
        >>> m.name, m._direction
        ('sent_accuracy', 'up')
    """

    def __init__(self, metric, task: str, name=None, dtype=None):
        if not isinstance(metric, keras.metrics.Metric):
            raise TypeError(f"TaskMetric wraps a keras.metrics.Metric, got {type(metric).__name__}")
        super().__init__(name=name or f"{task}_{metric.name}", dtype=dtype or metric.dtype)
        self.metric, self.task = metric, task
        direction = direction_of(metric)
        if direction is not None:
            self._direction = direction

    @property
    def variables(self):
        return list(self.metric.variables)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.metric.update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "task": self.task,
                "metric": keras.metrics.serialize(self.metric)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(keras.metrics.deserialize(config.pop("metric")), **config)
