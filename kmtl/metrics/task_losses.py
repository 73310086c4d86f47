"""`TaskLossTrackers`: the per-task ``<task>_loss`` means, where Keras' callbacks find them."""

from __future__ import annotations

from typing import Sequence

import keras

# Private Keras class: EarlyStopping/ModelCheckpoint look for metrics by name (and read their
# direction) only inside `CompileMetrics` and `MetricsList` containers of `model.metrics`.
from keras.src.trainers.compile_utils import MetricsList


@keras.saving.register_keras_serializable(package="kmtl")
class LossMean(keras.metrics.Mean):
    """A `keras.metrics.Mean` of a loss: lower is better (``_direction = "down"``).

    Example:
        >>> tracker = LossMean(name="ner_loss")
    """

    def __init__(self, name="loss", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "down"


class TaskLossTrackers(MetricsList):
    """One `LossMean` per task, named ``<task>_loss``, read like a dict by task name.

    `kmtl.MultiTaskModel` updates ``trackers[task]`` with each task's mean loss over the
    examples it owns; the logs carry every ``<task>_loss`` (``result`` returns them all).
    Being a Keras ``MetricsList`` is what lets ``EarlyStopping(monitor="val_ner_loss")`` and
    ``ModelCheckpoint(monitor="val_ner_loss")`` find the tracker and its direction without
    ``mode`` (``keras/src/callbacks/monitor_callback.py`` searches only such containers).

    Args:
        task_names: the model's task names, in order.

    Example:
        >>> trackers = TaskLossTrackers(["sent", "ner"])
        >>> trackers["ner"].update_state(0.5, sample_weight=4.0)
        >>> {k: float(v) for k, v in trackers.result().items()}
        {'sent_loss': 0.0, 'ner_loss': 0.5}
    """

    def __init__(self, task_names: Sequence[str], name: str = "task_losses"):
        task_names = list(task_names)
        super().__init__([LossMean(name=f"{t}_loss") for t in task_names], name=name)
        self.task_names = task_names

    def __getitem__(self, task):
        try:
            return self.metrics[self.task_names.index(task)]
        except ValueError:
            raise KeyError(f"no loss tracker for task {task!r}; tasks: {self.task_names}") from None

    def __contains__(self, task):
        return task in self.task_names

    def keys(self):
        return list(self.task_names)

    def values(self):
        return list(self.metrics)

    def items(self):
        return list(zip(self.task_names, self.metrics))

    def update_state(self, *args, **kwargs):
        raise TypeError("update one task's tracker: trackers[task].update_state(loss, sample_weight=count)")

    def result(self):
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {"name": self.name, "task_names": self.task_names}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
