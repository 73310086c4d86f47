"""`StepHook`: the documented override point of `MultiTaskModel`'s training step.

A loss-weighting strategy is a Keras callback (the way users adjust ``loss_weights``), but
some strategies must act *inside* each step: per-step weights (uncertainty, random
weights), per-task gradients (GradNorm) or gradient surgery (PCGrad). Such a callback is a
`StepHook`. `MultiTaskModel.fit` finds it among the ``callbacks`` it is given, traces its
step with it, and forgets it when that ``fit`` returns or raises, so nothing of it outlives
the ``fit`` that used it. One `fit` takes at most one hook: two weighting strategies would
fight over the same loss weights.

The model's step then is Keras' own (forward pass, loss, gradients, optimizer) with the
hook's methods called at fixed points; with no hook, or a hook whose ``acts_in_step`` is
False (epoch-level strategies), it *is* Keras' own ``train_step`` — except with a loss-scaling
optimizer (``mixed_float16``), where the model runs `hooked_train_step` with a plain `StepHook`
(`kmtl.model.precision` says why).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kmtl.model.precision import ScaledTape, agree_on_finite, all_finite, is_loss_scaled, loss_scale, rescale


class StepHook:
    """What a strategy may do inside `MultiTaskModel.train_step`; all methods optional.

    * `before_loss`: assign ``model.task_weights`` for this step (in the compiled graph);
    * `gradients`: turn the tape into the gradients the optimizer applies;
    * `after_step`: update the strategy's state from the step's `TaskLoss` per task;
    * `step_logs`: scalars for the step's logs (and so History and TensorBoard).

    Subclasses set ``acts_in_step = True`` to be called inside the step (the model then
    runs `hooked_train_step`); ``persistent_tape = True`` when `gradients` takes several
    gradients from the tape.

    Example:
        >>> class Halved(kmtl.weighting.StepWeighting):   # a StepHook and a Keras callback
        ...     def before_loss(self, model):
        ...         for variable in model.task_weights.values():
        ...             variable.assign(0.5)
        >>> model.fit(train, callbacks=[Halved()])
    """

    acts_in_step = False
    persistent_tape = False

    def before_loss(self, model) -> None:
        """Set ``model.task_weights`` for this step."""

    def gradients(self, model, tape, total, losses, weighted, variables) -> list:
        """Gradients for ``variables``; default: of the weighted total loss.

        ``losses``: `TaskLoss` per task; ``weighted``: each task's weighted share, recorded
        on ``tape`` (take task gradients of these, not of products formed afterwards).
        """
        return tape.gradient(total, variables)

    def after_step(self, model, losses) -> None:
        """Update state after the optimizer step."""

    def step_logs(self) -> dict:
        """Scalars to add to the step's logs."""
        return {}


def replicas_in_sync() -> int:
    """Replicas of the current distribution strategy (1 outside one)."""
    replica = tf.distribute.get_replica_context()
    return replica.num_replicas_in_sync if replica is not None else 1


def hooked_train_step(model, hook: StepHook, data) -> dict:
    """Keras' train step with `StepHook` calls; `MultiTaskModel.train_step` runs it.

    With a loss-scaling optimizer (``mixed_float16``: Keras' `LossScaleOptimizer`) the hook
    takes its gradients through a `kmtl.model.precision.ScaledTape`: every gradient it asks for
    comes from a loss-scaled backward pass and reaches it unscaled. They go back to the
    optimizer scaled, so that it skips the update (and lowers the scale) when they are not
    finite, as in Keras' own step; the loss weights and the strategy's state that
    ``hook.gradients`` changed from such gradients are restored too.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape(persistent=hook.persistent_tape) as tape:
        y_pred = model(x, training=True)
        y, sample_weight = model.complete_targets(x, y, y_pred, sample_weight)
        hook.before_loss(model)
        losses = model.task_losses(y, y_pred, sample_weight)
        weighted = {name: tf.cast(model.task_weights[name], tf.float32) * loss.share
                    for name, loss in losses.items()}
        total = tf.add_n(list(weighted.values())) + model.regularization_loss()
    batch = tf.shape(next(v for v in tf.nest.flatten(x) if v is not None))[0]
    model._loss_tracker.update_state(total * replicas_in_sync(), sample_weight=batch)
    variables = model.trainable_weights
    if is_loss_scaled(model.optimizer):
        gradients = _loss_scaled_gradients(model, hook, tape, total, losses, weighted, variables)
    else:
        gradients = hook.gradients(model, tape, total, losses, weighted, variables)
    del tape
    model.optimizer.apply_gradients(zip(gradients, variables))
    hook.after_step(model, losses)
    return dict(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))


def _loss_scaled_gradients(model, hook, tape, total, losses, weighted, variables) -> list:
    """``hook.gradients`` through a `ScaledTape`, returned scaled for the loss-scaling optimizer;
    on non-finite gradients the hook's variables are put back as they were before."""
    scale = loss_scale(model.optimizer)
    state = list(model.task_weights.values())
    if model.weighting_state is not None:
        state += list(model.weighting_state.weights)
    before = [tf.identity(v.value) for v in state]
    gradients = hook.gradients(model, ScaledTape(tape, scale), total, losses, weighted, variables)
    finite = all_finite(gradients)  # over all replicas
    for variable, old in zip(state, before):
        variable.assign(tf.where(finite, variable.value, old))
    if replicas_in_sync() > 1:  # every replica's optimizer must skip, or none (its update all-reduces)
        gradients = agree_on_finite(gradients, finite)
    return rescale(gradients, scale)
