"""`StepWeighting`: strategies that act inside every training step, within `model.fit`.

Loss-ratio strategies (DWA) only need a callback between epochs; uncertainty weighting,
random weights, GradNorm and PCGrad need the step itself: per-step weights, per-task
gradients, gradient surgery. A `StepWeighting` is a `kmtl.model.step_hook.StepHook`:
`MultiTaskModel.fit` finds it among its callbacks and its ``train_step`` calls the hook's
methods at fixed points, for that ``fit`` only.

Everything the hooks compute from the batch is first summed over replicas, and random draws
are seeded by the optimizer's step counter, so every replica takes the same decision and
1 and N replicas give the same update.
"""

from __future__ import annotations

from typing import Dict

import keras
import tensorflow as tf

from kmtl.model.step_hook import replicas_in_sync
from kmtl.sharing.counts import shared_variables
from kmtl.weighting.base import TaskWeighting

__all__ = ["StepWeighting", "replicas_in_sync", "sum_over_replicas", "global_losses", "present_mask",
           "shared_variables", "dense"]


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


def dense(gradient, variable):
    """A dense gradient tensor (zeros where the loss does not reach ``variable``)."""
    if gradient is None:
        return tf.zeros(variable.shape, variable.dtype)
    return tf.convert_to_tensor(gradient)


class StepWeighting(TaskWeighting):
    """Base of weighting strategies that run inside each training step.

    Subclasses override any of:

    * `initial_state`: the strategy's variables (kept by the model, see `TaskWeighting`);
    * `build` (once per model, under its distribution strategy): anything else to prepare;
    * `before_loss`: assign ``model.task_weights`` for this step (in the graph);
    * `gradients`: turn the tape into the gradients the optimizer applies;
    * `after_step`: update the strategy's state from the step's global task losses;
    * `step_logs`: scalars to add to the step's logs (and so to TensorBoard).

    State updated inside the step must be computed from values that are the same on every
    replica (use `sum_over_replicas`).

    Example:
        >>> class Halved(StepWeighting):
        ...     def before_loss(self, model):
        ...         for variable in model.task_weights.values():
        ...             variable.assign(0.5)
        >>> model.fit(train, callbacks=[Halved()])
    """

    acts_in_step = True

    def __init__(self):
        super().__init__()
        self._built_for = None
        self.trackers: Dict[str, keras.metrics.Mean] = {}

    # ------------------------------------------------------------------ hooks
    def build(self, model) -> None:
        """Prepare for ``model`` (runs under ``model.distribute_strategy.scope()``)."""

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
        if self._built_for is not model:
            with model.distribute_strategy.scope():
                self.build(model)
            self._built_for = model

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        for tracker in self.trackers.values():
            tracker.reset_state()
