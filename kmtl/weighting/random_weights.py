"""Random Loss Weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

import tensorflow as tf

from kmtl.weighting.step import StepWeighting


class RandomLossWeighting(StepWeighting):
    """New random loss weights at every step: ``T * softmax(z)``, ``z ~ N(0, I)``.

    Implements RLW from Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning" (TMLR 2022). The paper's weights sum to 1; here they are
    scaled by the number of tasks ``T`` so that their mean is 1, like static weights, and the
    learning rate means the same thing under both. The draw is seeded by ``seed`` and the
    optimizer's step, so it is reproducible and identical on every replica.

    Args:
        seed: random seed.

    Example:
        >>> model.fit(train, epochs=2, callbacks=[RandomLossWeighting(seed=0)])
    """

    name = "rlw"
    choice_order = 6  # position in lists of choices (`kmtl.registry`)
    overrides_task_weights = True

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    def before_loss(self, model):
        names = list(model.task_weights)
        step = tf.cast(model.optimizer.iterations, tf.int32)
        z = tf.random.stateless_normal([len(names)], seed=tf.stack([tf.constant(self.seed, tf.int32), step]))
        weights = len(names) * tf.nn.softmax(z)
        for i, name in enumerate(names):
            model.task_weights[name].assign(weights[i])
