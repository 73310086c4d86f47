"""Task sampling rates for the mixture: each sampler is one small class with one method.

Modelled on TF Model Garden's ``task_sampler.py``: ``weights(sizes, epoch, epochs)`` returns the
probability of drawing each task, and `get_sampler` maps config names to classes.
"""

from __future__ import annotations

import numpy as np
from pydantic import PositiveFloat

from kmtl import registry


class Sampler:
    """Base class: a distribution over tasks, possibly changing with the epoch."""

    name = ""

    def weights(self, sizes, epoch: int = 0, epochs: int = 1) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _normalise(values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values / values.sum()


class ProportionalSampler(Sampler):
    """Draw tasks in proportion to their number of training examples (``p_i ∝ n_i``).

    Example:
        >>> ProportionalSampler().weights([300, 100])
        array([0.75, 0.25])
    """

    name = "proportional"

    def weights(self, sizes, epoch=0, epochs=1):
        return self._normalise(sizes)


class TemperatureSampler(Sampler):
    """Temperature sampling, ``p_i ∝ n_i ** (1 / T)`` (T5, Raffel et al. 2020; mT5).

    ``T = 1`` is proportional; larger ``T`` flattens towards uniform, so small tasks are seen
    more often without being repeated endlessly.

    Args:
        temperature: ``T > 0``.

    Example:
        >>> TemperatureSampler(2.0).weights([400, 100])
        array([0.66666667, 0.33333333])
    """

    name = "temperature"

    def __init__(self, temperature: PositiveFloat = 2.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def weights(self, sizes, epoch=0, epochs=1):
        return self._normalise(np.asarray(sizes, dtype=np.float64) ** (1.0 / self.temperature))


class UniformSampler(Sampler):
    """Every task equally often, whatever its size.

    Example:
        >>> UniformSampler().weights([400, 100])
        array([0.5, 0.5])
    """

    name = "uniform"

    def weights(self, sizes, epoch=0, epochs=1):
        return self._normalise(np.ones(len(sizes)))


class AnnealedSampler(Sampler):
    """Annealed sampling (Stickland & Murray, "BERT and PALs", ICML 2019).

    ``p_i ∝ n_i ** alpha`` with ``alpha = 1 - 0.8 * epoch / (epochs - 1)``: proportional in the
    first epoch, moving towards uniform in the last, so that small tasks catch up late.

    Example:
        >>> AnnealedSampler().weights([400, 100], epoch=0, epochs=3)
        array([0.8, 0.2])
    """

    name = "annealed"

    def weights(self, sizes, epoch=0, epochs=1):
        alpha = 1.0 - 0.8 * (epoch / (epochs - 1) if epochs > 1 else 0.0)
        return self._normalise(np.asarray(sizes, dtype=np.float64) ** alpha)


def get_sampler(name: str, temperature: float = 2.0, **options) -> Sampler:
    """The sampler called ``name`` (``proportional``, ``temperature``, ``uniform``, ``annealed``),
    built with the options its ``__init__`` reads (``temperature`` and ``options``; the
    others, such as ``temperature`` for a sampler without one, are ignored); a `Sampler`
    object is returned as it is.

    Names come from `kmtl.registry.SAMPLERS`, which finds every `Sampler` subclass of this module
    that sets ``name`` (the config schema reads it too).

    Example:
        >>> get_sampler("temperature", temperature=4.0).temperature
        4.0
    """
    if isinstance(name, Sampler):
        return name
    entry = registry.SAMPLERS.get(name)  # ValueError listing the samplers
    own = {o.key for o in entry.options}
    picked = {k: v for k, v in {"temperature": temperature, **options}.items() if k in own}
    return globals()[entry.class_name](**entry.validate_options(picked, values=False))


SAMPLERS = {name: globals()[entry.class_name] for name, entry in registry.SAMPLERS.entries().items()}
"""``{name: class}``: the samplers of `kmtl.registry.SAMPLERS`."""
