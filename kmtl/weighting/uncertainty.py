"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018)."""

from __future__ import annotations

import tensorflow as tf
from pydantic import PositiveFloat

from kmtl.weighting.step import StepWeighting, global_losses, present_mask


class UncertaintyWeighting(StepWeighting):
    """Loss weights from learned per-task log-variances ``s_t = log sigma_t^2``.

    Implements Kendall et al., "Multi-Task Learning Using Uncertainty to Weigh Losses for
    Scene Geometry and Semantics" (CVPR 2018). The objective is
    ``sum_t 0.5 * exp(-s_t) * L_t + 0.5 * s_t`` (the paper's regression form, used for every
    task as in most implementations). The model trains on ``sum_t w_t L_t`` with
    ``w_t = 0.5 * exp(-s_t)``; after each step ``s_t`` takes a gradient-descent step on the
    objective, ``ds_t = 0.5 - 0.5 * exp(-s_t) * L_t``, with its own learning rate (the
    backbone's 1e-5..1e-4 would leave ``s`` where it started). At the optimum
    ``exp(s_t) = L_t``: a task with a larger loss gets a smaller weight. Tasks absent from a
    batch keep their ``s_t``. The log-variances are logged as ``log_variance_<task>``.

    Args:
        learning_rate: step size for the log-variances.
        initial_log_variance: starting ``s_t`` (0.0: weight 0.5).

    Example:
        >>> model.fit(train, epochs=2, callbacks=[UncertaintyWeighting()])
    """

    name = "uncertainty"
    choice_order = 3  # position in lists of choices (`kmtl.registry`)
    overrides_task_weights = True

    def __init__(self, learning_rate: PositiveFloat = 0.05, initial_log_variance: float = 0.0):
        super().__init__()
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.initial_log_variance = float(initial_log_variance)

    def initial_state(self, num_tasks):
        return {"log_variances": [self.initial_log_variance] * num_tasks}

    @property
    def log_variances(self):
        """The learned ``s_t``, one per task (a variable of the model's `WeightingState`)."""
        return self.state["log_variances"]

    def before_loss(self, model):
        weights = 0.5 * tf.exp(-self.log_variances)
        for i, name in enumerate(model.task_weights):
            model.task_weights[name].assign(weights[i])

    def after_step(self, model, losses):
        s = tf.convert_to_tensor(self.log_variances)
        grad = 0.5 - 0.5 * tf.exp(-s) * global_losses(losses)
        self.log_variances.assign(s - self.learning_rate * grad * present_mask(losses))

    def step_logs(self):
        names = list(self.model.task_weights)
        return {f"log_variance_{name}": self.log_variances[i] for i, name in enumerate(names)}
