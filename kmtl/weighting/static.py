"""Static and scheduled loss weights: the reference strategies."""

from __future__ import annotations

from typing import Dict

from pydantic import NonNegativeFloat

from kmtl.weighting.base import TaskWeighting


class StaticWeighting(TaskWeighting):
    """Fixed loss weights (tasks not named keep their current weight, 1.0 by default).

    Args:
        weights: ``{task: weight}``.

    Example:
        >>> model.fit(train, callbacks=[StaticWeighting({"sentiment": 1.0, "ner": 0.5})])
    """

    name = "static"
    choice_order = 0  # position in lists of choices (`kmtl.registry`)

    def __init__(self, weights: Dict[str, NonNegativeFloat] = None):
        super().__init__()
        self.weights = dict(weights or {})

    def weights_for_epoch(self, epoch, logs):
        return self.weights


class LinearWeighting(TaskWeighting):
    """Loss weights moving linearly from ``start`` (first epoch) to ``end`` (last epoch).

    A simple curriculum: e.g. start a hard token task at full weight and fade an auxiliary
    task out. Tasks missing from ``start``/``end`` keep weight 1.0.

    Args:
        start: ``{task: weight}`` at epoch 0.
        end: ``{task: weight}`` at epoch ``epochs - 1``.
        epochs: the length of the schedule (usually the ``epochs`` passed to ``fit``).

    Example:
        >>> LinearWeighting(start={"aux": 1.0}, end={"aux": 0.0}, epochs=3)
    """

    name = "linear"
    choice_order = 1
    config_keys = {"epochs": None}  # kmtl train passes training.epochs

    def __init__(self, start: Dict[str, NonNegativeFloat], end: Dict[str, NonNegativeFloat], epochs: int):
        super().__init__()
        self.start, self.end, self.epochs = dict(start), dict(end), int(epochs)

    def weights_for_epoch(self, epoch, logs):
        frac = min(epoch / (self.epochs - 1), 1.0) if self.epochs > 1 else 1.0
        names = set(self.start) | set(self.end)
        return {n: (1 - frac) * self.start.get(n, 1.0) + frac * self.end.get(n, 1.0) for n in names}
