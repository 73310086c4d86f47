"""`StepWeighting`: strategies that act inside every training step, within `model.fit`.

Loss-ratio strategies (DWA) only need a callback between epochs; uncertainty weighting,
random weights, GradNorm and PCGrad need the step itself: per-step weights, per-task
gradients, gradient surgery. A `StepWeighting` callback installs itself on the
`kmtl.MultiTaskModel` as ``model.step_hook`` for the length of ``fit``; the model's
``train_step`` then runs `hooked_train_step`, which calls the hook's methods at fixed points.

Everything the hooks compute from the batch is first summed over replicas, and random draws
are seeded by the optimizer's step counter, so every replica takes the same decision and
1 and N replicas give the same update.
"""

from __future__ import annotations

from typing import Dict, List

import keras
import tensorflow as tf

from kmtl.weighting.base import TaskWeighting


def replicas_in_sync() -> int:
    replica = tf.distribute.get_replica_context()
    return replica.num_replicas_in_sync if replica is not None else 1


def sum_over_replicas(value):
    """``value`` summed over the replicas (itself on one replica); call in replica context."""
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return value
    return replica.all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_losses(losses) -> tf.Tensor:
    """``[tasks]`` mean loss of each task over the global batch (0 for absent tasks)."""
    return sum_over_replicas(tf.stack([loss.share for loss in losses.values()]))


def present_mask(losses) -> tf.Tensor:
    """``[tasks]`` 1.0 where the task owns examples in the global batch, else 0.0."""
    return tf.cast(tf.stack([loss.count for loss in losses.values()]) > 0, tf.float32)


def shared_variables(model) -> List:
    """Trainable variables shared by all tasks: not in a task's head, not a per-task adapter."""
    own = {id(v) for task in model.tasks for v in model.get_layer(task.name).trainable_weights}
    return [v for v in model.trainable_weights if id(v) not in own and "adapter" not in v.path]


def dense(gradient, variable):
    """A dense gradient tensor (zeros where the loss does not reach ``variable``)."""
    if gradient is None:
        return tf.zeros(variable.shape, variable.dtype)
    return tf.convert_to_tensor(gradient)


class StepWeighting(TaskWeighting):
    """Base of weighting strategies that run inside each training step.

    Subclasses override any of:

    * `build` (once, under the model's distribution strategy): create state variables;
    * `before_loss`: assign ``model.task_weights`` for this step (in the graph);
    * `gradients`: turn the tape into the gradients the optimizer applies;
    * `after_step`: update the strategy's state from the step's global task losses;
    * `step_logs`: scalars to add to the logs (and so to `keras.callbacks.TensorBoard`).

    State that is updated inside the step must be a `keras.Variable` with
    ``aggregation="only_first_replica"``, updated from values that are the same on every
    replica (use `sum_over_replicas`).

    Example:
        >>> class Halved(StepWeighting):
        ...     def before_loss(self, model):
        ...         for variable in model.task_weights.values():
        ...             variable.assign(0.5)
        >>> model.fit(train, callbacks=[Halved()])
    """

    #: whether `gradients` takes several gradients from the tape
    persistent_tape = False

    def __init__(self):
        super().__init__()
        self._built_for = None
        self.trackers: Dict[str, keras.metrics.Mean] = {}

    # ------------------------------------------------------------------ hooks
    def build(self, model) -> None:
        """Create variables and trackers (runs under ``model.distribute_strategy.scope()``)."""

    def before_loss(self, model) -> None:
        """Set ``model.task_weights`` for this step (runs in the compiled step)."""

    def gradients(self, model, tape, total, losses, weighted, variables) -> list:
        """Gradients for ``variables``; default: of the weighted total loss.

        ``losses``: `TaskLoss` per task; ``weighted``: each task's weighted share, recorded
        on ``tape`` (take task gradients of these, not of products formed afterwards).
        """
        return tape.gradient(total, variables)

    def after_step(self, model, losses) -> None:
        """Update the strategy's state after the optimizer step (runs in the compiled step)."""

    def step_logs(self) -> dict:
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def add_tracker(self, name: str) -> keras.metrics.Mean:
        self.trackers[name] = keras.metrics.Mean(name=name)
        return self.trackers[name]

    # ------------------------------------------------------- callback protocol
    def weights_for_epoch(self, epoch, logs):
        return {}

    def set_model(self, model):
        super().set_model(model)
        if not hasattr(model, "step_hook"):
            raise TypeError(f"{type(self).__name__} works with a kmtl MultiTaskModel (kmtl.build_model), "
                            f"not {type(model).__name__}")
        if isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer):
            raise ValueError(f"{type(self).__name__} does not support loss scaling (mixed_float16) yet; "
                             "train in float32 or bfloat16, or use a static/linear/dwa weighting")
        if self._built_for is not model:
            with model.distribute_strategy.scope():
                self.build(model)
            self._built_for = model
        if model.step_hook is not self:
            model.step_hook = self
            model.train_function = None  # retrace fit's step with the hook

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        for tracker in self.trackers.values():
            tracker.reset_state()

    def on_train_end(self, logs=None):
        if getattr(self.model, "step_hook", None) is self:
            self.model.step_hook = None
            self.model.train_function = None


def hooked_train_step(model, hook: StepWeighting, data):
    """Keras's train step with `StepWeighting` hooks; `MultiTaskModel.train_step` calls it."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape(persistent=hook.persistent_tape) as tape:
        y_pred = model(x, training=True)
        hook.before_loss(model)
        losses = model.task_losses(y, y_pred, sample_weight)
        weighted = {name: tf.cast(model.task_weights[name], tf.float32) * loss.share
                    for name, loss in losses.items()}
        total = tf.add_n(list(weighted.values())) + model.regularization_loss()
    batch = tf.shape(next(v for v in tf.nest.flatten(x) if v is not None))[0]
    model._loss_tracker.update_state(total * replicas_in_sync(), sample_weight=batch)
    variables = model.trainable_weights
    gradients = hook.gradients(model, tape, total, losses, weighted, variables)
    del tape
    model.optimizer.apply_gradients(zip(gradients, variables))
    hook.after_step(model, losses)
    logs = dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
    logs.update(hook.step_logs())
    return logs
