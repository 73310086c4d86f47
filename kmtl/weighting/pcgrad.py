"""PCGrad gradient surgery (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

import math
import warnings

import tensorflow as tf

from kmtl.weighting.step import StepWeighting, dense, replicas_in_sync, shared_variables, sum_over_replicas


def project_conflicting(grads: tf.Tensor, orders: tf.Tensor):
    """PCGrad on stacked task gradients.

    Args:
        grads: ``[tasks, params]`` one flattened gradient per task.
        orders: ``[tasks, tasks]`` int32; row ``i`` is the order in which task ``i`` is
            projected against the others (its own index is skipped).

    Returns:
        ``(summed, conflicts)``: the sum of the projected gradients ``[params]`` and the
        number of conflicting pairs (``g_i . g_j < 0`` on the original gradients, i < j).
    """
    n = grads.shape[0]
    squared = tf.reduce_sum(grads * grads, axis=1)
    total = tf.zeros_like(grads[0])
    for i in range(n):
        g = grads[i]
        for k in range(n):
            j = orders[i, k]
            other = tf.gather(grads, j)
            dot = tf.reduce_sum(g * other)
            conflict = tf.logical_and(dot < 0.0, tf.not_equal(j, i))
            scale = tf.where(conflict, dot / tf.maximum(tf.gather(squared, j), 1e-20), 0.0)
            g = g - scale * other
        total = total + g
    gram = tf.matmul(grads, grads, transpose_b=True)
    upper = tf.linalg.band_part(tf.ones_like(gram), 0, -1) - tf.linalg.band_part(tf.ones_like(gram), 0, 0)
    conflicts = tf.reduce_sum(tf.cast(gram < 0.0, tf.float32) * upper)
    return total, conflicts


class PCGrad(StepWeighting):
    """Project each task's gradient off the gradients it conflicts with, then sum.

    Implements Yu et al., "Gradient Surgery for Multi-Task Learning" (NeurIPS 2020): for
    each task ``i`` and each other task ``j`` (in random order), if ``g_i . g_j < 0`` then
    ``g_i -= (g_i . g_j) / |g_j|^2 * g_j``. Applied to the parameters every task shares
    (`kmtl.sharing.counts.shared_variables`); heads and the sharing modes' per-task weights
    (adapters, copies, gates, prefixes, columns) get their own task's gradient as usual, and
    the layers' added losses (soft sharing's pull, the task-relation regulariser) add theirs
    unprojected. Task gradients are of the
    *weighted* task losses, so static ``loss_weights`` still apply. Per-task gradients are
    summed over replicas before the surgery. Costs one backward pass per task.

    Logged: ``pcgrad_conflicts`` (mean number of conflicting task pairs per step) and
    ``pcgrad_conflict_rate`` (that over the number of pairs).

    Args:
        seed: seeds the projection order (with the optimizer step; same on every replica).

    Example:
        >>> model.fit(train, epochs=2, callbacks=[PCGrad()])
    """

    name = "pcgrad"
    choice_order = 5  # position in lists of choices (`kmtl.registry`)
    persistent_tape = True

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    def build(self, model):
        shared = shared_variables(model)
        if not shared:
            warnings.warn(f"PCGrad: no trainable parameter is shared by every task (sharing {model.sharing!r}: "
                          "each task trains only its own weights), so no gradients can conflict and PCGrad "
                          "trains as the plain weighted sum", stacklevel=2)
        self.shared_ids = {id(v) for v in shared}
        self.trackers = {}
        self.add_tracker("pcgrad_conflicts")
        self.add_tracker("pcgrad_conflict_rate")

    def orders(self, model, n):
        step = tf.cast(model.optimizer.iterations, tf.int32)
        rows = [tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(self.seed + i, tf.int32), step])))
                for i in range(n)]
        return tf.cast(tf.stack(rows), tf.int32)

    def gradients(self, model, tape, total, losses, weighted, variables):
        shared = [v for v in variables if id(v) in self.shared_ids]
        if not shared:
            self.trackers["pcgrad_conflicts"].update_state(0.0)
            self.trackers["pcgrad_conflict_rate"].update_state(0.0)
            return tape.gradient(total, variables)
        own = [v for v in variables if id(v) not in self.shared_ids]
        names = list(losses)
        flat = []
        for name in names:
            grads = tape.gradient(weighted[name], shared)
            flat.append(tf.concat([tf.reshape(dense(g, v), [-1]) for g, v in zip(grads, shared)], axis=0))
        stacked = sum_over_replicas(tf.stack(flat))
        summed, conflicts = project_conflicting(stacked, self.orders(model, len(names)))
        summed = summed / replicas_in_sync()  # the optimizer sums over replicas again
        pairs = max(len(names) * (len(names) - 1) // 2, 1)
        self.trackers["pcgrad_conflicts"].update_state(conflicts)
        self.trackers["pcgrad_conflict_rate"].update_state(conflicts / pairs)

        # The layers' added losses (soft sharing's pull, the task-relation regulariser) are not a
        # task's: their gradient on the shared variables is added unprojected, this replica's share.
        extra = tape.gradient(list(model.losses), shared) if model.losses else [None] * len(shared)
        by_id = {}
        offset = 0
        for v, g in zip(shared, extra):
            size = math.prod(v.shape)
            by_id[id(v)] = tf.reshape(summed[offset:offset + size], v.shape)
            if g is not None:
                by_id[id(v)] += tf.convert_to_tensor(g) / replicas_in_sync()
            offset += size
        own_grads = tape.gradient(total, own) if own else []
        by_id.update({id(v): g for v, g in zip(own, own_grads)})
        return [by_id[id(v)] for v in variables]
