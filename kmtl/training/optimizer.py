"""AdamW with linear warm-up and linear decay, the usual BERT fine-tuning optimizer."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kmtl")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0.

    Args:
        peak: the learning rate reached at the end of warm-up.
        total_steps: steps of the whole run (the rate reaches 0 there).
        warmup_steps: steps of the warm-up.

    Example:
        >>> schedule = WarmupLinearDecay(5e-5, total_steps=1000, warmup_steps=100)
        >>> float(schedule(100))
        5e-05
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        factor = ops.where(step < self.warmup_steps, warm, decay)
        return self.peak * ops.clip(factor, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def make_optimizer(learning_rate: float = 5e-5, total_steps: int = 1000, warmup_ratio: float = 0.1,
                   weight_decay: float = 0.01, clipnorm: float = 1.0) -> keras.optimizers.AdamW:
    """AdamW with `WarmupLinearDecay`; no weight decay on biases and LayerNorm parameters.

    Example:
        >>> model.compile(optimizer=make_optimizer(5e-5, total_steps=steps * epochs))
    """
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(warmup_ratio * total_steps)))
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, clipnorm=clipnorm, epsilon=1e-6
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
