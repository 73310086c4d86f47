"""Teacher annealing (Clark et al., "BAM! Born-Again Multi-Task Networks", ACL 2019).

The student's target for a teacher-covered task is ``λ·gold + (1-λ)·teacher`` where λ rises
linearly from 0 (pure distillation) at the first step to 1 (pure supervised learning) at the
end of training, so the student can end up better than its teachers.
"""

from __future__ import annotations

import keras


class TeacherAnnealing(keras.callbacks.Callback):
    """Sets λ before every training step: ``λ = min(1, step / total_steps)``.

    λ is one non-trainable variable shared by the teacher-covered tasks (assigned to their
    ``teacher_lambda``), read inside the compiled train step, so assigning it needs no
    retrace. The step is the optimizer's iteration count, so a resumed run (BackupAndRestore)
    continues the schedule. λ is logged as ``teacher_lambda`` at every epoch end.

    Args:
        tasks: the `kmtl.tasks.Task` objects distilled from teachers.
        total_steps: training steps over the whole run (epochs × steps per epoch).
        start: λ at step 0 (BAM! starts from 0).

    Example:
        >>> annealing = TeacherAnnealing([sst2_task], total_steps=2 * steps)
        >>> model.fit(with_teachers(train_ds, model.tasks, tables), epochs=2, callbacks=[annealing])
    """

    def __init__(self, tasks, total_steps: int, start: float = 0.0):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.start = float(start)
        self.variable = keras.Variable(self.start, trainable=False, dtype="float32", name="teacher_lambda",
                                       aggregation="only_first_replica")
        for task in tasks:
            task.teacher_lambda = self.variable

    def value_at(self, step: int) -> float:
        """λ at optimizer step ``step``."""
        return min(1.0, self.start + (1.0 - self.start) * step / self.total_steps)

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy()) if self.model is not None else batch
        self.variable.assign(self.value_at(step))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["teacher_lambda"] = float(self.variable.numpy())


class GoldMetric(keras.metrics.Metric):
    """A training metric that reads the gold labels of ``{"gold", "teacher"}`` targets.

    Args:
        metric: the task's own metric (its name is kept, so logs read ``<task>_accuracy``).
    """

    def __init__(self, metric):
        super().__init__(name=metric.name, dtype=metric.dtype)
        self.metric = metric

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
