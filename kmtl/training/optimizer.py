"""AdamW with linear warm-up and linear decay, the usual BERT fine-tuning optimizer."""

from __future__ import annotations

from typing import Dict, Optional

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


@keras.saving.register_keras_serializable(package="kmtl")
class LayerRateAdamW(keras.optimizers.AdamW):
    """AdamW whose learning rate is multiplied, for the weights of some layers, by a factor.

    The usual use is a larger rate for freshly initialised task heads than for the pretrained
    encoder (short fine-tuning runs otherwise leave the heads under-trained). Every variable
    keeps the schedule's shape (warm-up, decay); only its peak changes. Weight decay stays
    at the base rate.

    Args:
        rate_multipliers: ``{layer name: factor}``; a variable belongs to a layer when its
            path starts with ``"<layer name>/"``.
        **kwargs: the arguments of `keras.optimizers.AdamW`.

    Example:
        >>> optimizer = LayerRateAdamW({"sentiment": 20.0}, learning_rate=5e-5)
        >>> model.compile(optimizer=optimizer, ...)  # the "sentiment" head trains at 1e-3
    """

    def __init__(self, rate_multipliers: Optional[Dict[str, float]] = None, **kwargs):
        super().__init__(**kwargs)
        self.rate_multipliers = {str(k): float(v) for k, v in (rate_multipliers or {}).items()}
        self._factors = []

    def multiplier_of(self, variable) -> float:
        """The factor on ``variable``'s learning rate (1.0 outside the named layers)."""
        path = getattr(variable, "path", variable.name)
        for layer, factor in self.rate_multipliers.items():
            if path.startswith(layer + "/"):
                return factor
        return 1.0

    def build(self, variables):
        super().build(variables)
        self._factors = [self.multiplier_of(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "rate_multipliers": dict(self.rate_multipliers)}


def make_optimizer(learning_rate: float = 5e-5, total_steps: int = 1000, warmup_ratio: float = 0.1,
                   weight_decay: float = 0.01, clipnorm: float = 1.0,
                   rate_multipliers: Optional[Dict[str, float]] = None) -> keras.optimizers.AdamW:
    """AdamW with `WarmupLinearDecay`; no weight decay on biases and LayerNorm parameters.

    ``rate_multipliers`` (``{layer name: factor}``, e.g. the task heads) gives those layers'
    weights a peak rate of ``factor * learning_rate`` (`LayerRateAdamW`).

    Example:
        >>> model.compile(optimizer=make_optimizer(5e-5, total_steps=steps * epochs))
    """
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(warmup_ratio * total_steps)))
    options = dict(learning_rate=schedule, weight_decay=weight_decay, clipnorm=clipnorm, epsilon=1e-6)
    if rate_multipliers and any(f != 1.0 for f in rate_multipliers.values()):
        optimizer = LayerRateAdamW(rate_multipliers, **options)
    else:
        optimizer = keras.optimizers.AdamW(**options)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
