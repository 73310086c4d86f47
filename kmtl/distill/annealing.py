"""Teacher annealing (Clark et al., "BAM! Born-Again Multi-Task Networks", ACL 2019).

The student's target for a teacher-covered task is ``λ·gold + (1-λ)·teacher`` where λ rises
linearly from 0 (pure distillation) at the first step to 1 (pure supervised learning) at the
end of training, so the student can end up better than its teachers.
"""

from __future__ import annotations

import keras


class TeacherAnnealing(keras.callbacks.Callback):
    """Sets the model's λ before every training step: ``λ = min(1, step / total_steps)``.

    λ is the model's own non-trainable variable ``model.teacher_lambda`` (1.0 until this
    callback moves it), read inside the compiled train step for every target that carries
    teacher outputs, so assigning it needs no retrace and a callback made after a first
    ``fit`` still takes effect. The step is the optimizer's iteration count, so a resumed run
    (BackupAndRestore) continues the schedule. While it runs, the train step logs λ as
    ``teacher_lambda``.

    Args:
        total_steps: training steps over the whole run (epochs × steps per epoch).
        start: λ at step 0 (BAM! starts from 0).

    Example:
        >>> annealing = TeacherAnnealing(total_steps=2 * steps)
        >>> model.fit(with_teachers(train_ds, model.tasks, tables), epochs=2, callbacks=[annealing])
    """

    anneals_teacher_lambda = True  # MultiTaskModel.fit then logs teacher_lambda from the step

    def __init__(self, total_steps: int, start: float = 0.0):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.start = float(start)

    def set_model(self, model):
        super().set_model(model)
        if not hasattr(model, "teacher_lambda"):
            raise TypeError(f"TeacherAnnealing works with a kmtl MultiTaskModel (kmtl.build_model), "
                            f"not {type(model).__name__}")

    def value_at(self, step: int) -> float:
        """λ at optimizer step ``step``."""
        return min(1.0, self.start + (1.0 - self.start) * step / self.total_steps)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.teacher_lambda.assign(self.value_at(int(self.model.optimizer.iterations.numpy())))


@keras.saving.register_keras_serializable(package="kmtl")
class GoldMetric(keras.metrics.Metric):
    """A training metric that reads the gold labels of ``{"gold", "teacher"}`` targets.

    Args:
        metric: the task's own metric (its name and direction are kept, so logs read
            ``<task>_accuracy`` and EarlyStopping knows which way is better).
    """

    def __init__(self, metric, name=None, dtype=None):
        if isinstance(metric, dict):  # from get_config
            metric = keras.metrics.deserialize(metric)
        super().__init__(name=name or metric.name, dtype=dtype or metric.dtype)
        self.metric = metric
        self._direction = getattr(metric, "_direction", None)

    def get_config(self):
        return {"metric": keras.metrics.serialize(self.metric), "name": self.name, "dtype": self.dtype}

    def update_state(self, y_true, y_pred, sample_weight=None):
        if isinstance(y_true, dict):
            y_true = y_true["gold"]
        return self.metric.update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()


def gold_metrics(tasks) -> dict:
    """``weighted_metrics`` for `MultiTaskModel.compile` when targets carry teachers."""
    return {t.name: [GoldMetric(m) for m in t.metrics()] for t in tasks}
