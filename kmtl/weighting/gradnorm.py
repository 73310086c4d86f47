"""GradNorm (Chen et al., ICML 2018)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
from pydantic import NonNegativeFloat, PositiveFloat

from kmtl.sharing.counts import task_specific_variables
from kmtl.weighting.step import StepWeighting, dense, global_losses, present_mask, shared_variables, sum_over_replicas


def last_shared_kernel(model, layer: str = None):
    """The variable GradNorm measures gradients on: the last shared matrix of the encoder.

    ``layer`` picks instead the last shared variable whose path contains it. When no trainable
    matrix is shared by every task (sharing modes that freeze the encoder: adapters, prefix,
    progressive), the last matrix of the mode's per-task weights: each task's gradient norm is
    then taken on its own slice of it (its adapter, prefix or column), the nearest each task has
    to a common layer.
    """
    shared = shared_variables(model)
    if layer is not None:
        found = [v for v in shared if layer in v.path]
        if not found:
            raise ValueError(f"no shared trainable variable path contains {layer!r}; shared variables: "
                             f"{[v.path for v in shared][-6:]} (last six)")
        return found[-1]
    matrices = [v for v in shared if len(v.shape) == 2]
    if not matrices:  # per-task stacked matrices: [tasks, in, out]
        trainable = {id(v) for v in model.trainable_weights}
        matrices = [v for v in task_specific_variables(model, heads=False) if id(v) in trainable and len(v.shape) >= 3]
    if not matrices:
        raise ValueError("GradNorm needs a trainable layer before the heads; with sharing 'frozen' there is none: "
                         "use another sharing mode or another weighting strategy")
    return matrices[-1]


class GradNorm(StepWeighting):
    """Loss weights that balance the tasks' gradient norms on the last shared layer.

    Implements Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
    Deep Multitask Networks" (ICML 2018). At each step, with ``W`` the last shared layer,
    ``G_t = w_t * ||grad_W L_t||`` and ``r_t = (L_t / L_t(0)) / mean(L / L(0))`` (relative
    inverse training rate), the weights take a gradient step on
    ``sum_t |G_t - mean(G) * r_t ** alpha|`` (target held constant), are clipped at 0 and
    renormalised to sum to the number of tasks. The network itself trains on
    ``sum_t w_t L_t`` with the weights from before the update. ``L_t(0)`` is each task's
    loss the first time it appears. Gradient norms are logged as ``gradnorm_<task>``.

    Args:
        alpha: strength of the pull towards equal training rates (paper: 0.12 to 3; 1.5).
        learning_rate: step size for the weights.
        layer: a substring of the shared variable's path to use as ``W`` (default: the last
            shared matrix, e.g. the last transformer layer's feed-forward output).

    Example:
        >>> model.fit(train, epochs=2, callbacks=[GradNorm(alpha=1.5)])
    """

    name = "gradnorm"
    choice_order = 4  # position in lists of choices (`kmtl.registry`)
    overrides_task_weights = True
    persistent_tape = True

    def __init__(self, alpha: NonNegativeFloat = 1.5, learning_rate: PositiveFloat = 0.025,
                 layer: Optional[str] = None):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.alpha, self.learning_rate, self.layer = float(alpha), float(learning_rate), layer

    def initial_state(self, num_tasks):
        # L_t(0), each task's loss the first time it appeared; whether it has appeared
        return {"initial_losses": [0.0] * num_tasks, "seen": [0.0] * num_tasks}

    def build(self, model):
        names = list(model.task_weights)
        self.shared_kernel = last_shared_kernel(model, self.layer)
        self.trackers = {}
        for name in names:
            self.add_tracker(f"gradnorm_{name}")

    def gradients(self, model, tape, total, losses, weighted, variables):
        names = list(losses)
        weights = tf.stack([tf.cast(model.task_weights[n], tf.float32) for n in names])
        norms = tf.stack([
            tf.norm(sum_over_replicas(dense(tape.gradient(losses[n].share, self.shared_kernel), self.shared_kernel)))
            for n in names
        ])
        gradients = tape.gradient(total, variables)  # with the weights from before the update

        present = present_mask(losses)
        current = global_losses(losses)
        seen, initial_losses = self.state["seen"], self.state["initial_losses"]
        first = present * (1.0 - seen)
        initial = initial_losses * (1.0 - first) + current * first
        initial_losses.assign(initial)
        seen.assign(tf.maximum(seen, present))

        count = tf.maximum(tf.reduce_sum(present), 1.0)
        g = weights * norms
        ratio = tf.math.divide_no_nan(current, initial) * present
        relative = tf.math.divide_no_nan(ratio, tf.reduce_sum(ratio) / count)
        target = tf.reduce_sum(g * present) / count * tf.pow(relative, self.alpha)
        step = tf.sign(g - target) * norms * present
        new = tf.maximum(weights - self.learning_rate * step, 0.0)
        new = new * len(names) / tf.maximum(tf.reduce_sum(new), 1e-12)
        for i, name in enumerate(names):
            model.task_weights[name].assign(new[i])
            self.trackers[f"gradnorm_{name}"].update_state(g[i], sample_weight=present[i])
        return gradients
