"""`TaskWeighting`: the base callback that sets the model's per-task loss weights."""

from __future__ import annotations

from typing import Dict, Optional

import keras
import numpy as np

from kmtl.model.step_hook import StepHook


class TaskWeighting(keras.callbacks.Callback, StepHook):
    """Base class of loss-weighting strategies: assigns ``model.task_weights`` between steps.

    The weights are non-trainable variables read by the compiled train step, so assigning
    them takes effect at the next step without retracing. Subclasses implement
    `weights_for_epoch` (and may override other hooks for per-step strategies). The model's
    train step writes the current weights into the logs as ``loss_weight_<task>``, so
    `History` and `keras.callbacks.TensorBoard` record them whatever the callbacks' order.

    A strategy with state (learned variances, a loss history) declares it in
    `initial_state`; the state then lives in the model (`kmtl.model.WeightingState`), so
    ``.keras`` files, ``save_weights`` and `keras.callbacks.BackupAndRestore` keep it, and
    a second ``fit`` (or a resumed run) continues from it. Read it as ``self.state[name]``.
    One ``fit`` takes one weighting strategy.

    Example:
        >>> class Halve(TaskWeighting):
        ...     def weights_for_epoch(self, epoch, logs):
        ...         return {name: 0.5 ** epoch for name in self.task_names}
    """

    #: the name in `kmtl.weighting.STRATEGIES` (and the state's owner tag)
    name = "custom"

    def __init__(self):
        super().__init__()
        self.state = None

    @property
    def task_names(self):
        return list(self.model.task_weights)

    def initial_state(self, num_tasks: int) -> Dict[str, np.ndarray]:
        """``{variable name: initial value}`` of the strategy's state (none by default)."""
        return {}

    def weights_for_epoch(self, epoch: int, logs: Optional[dict]) -> Dict[str, float]:
        """The weights to use during ``epoch`` (``logs``: the previous epoch's, or ``None``)."""
        raise NotImplementedError

    def assign(self, weights: Dict[str, float]) -> None:
        unknown = set(weights) - set(self.model.task_weights)
        if unknown:
            raise ValueError(f"weights for unknown tasks {sorted(unknown)}; tasks: {self.task_names}")
        for name, value in weights.items():
            self.model.task_weights[name].assign(float(value))

    def set_model(self, model):
        super().set_model(model)
        if not hasattr(model, "task_weights") or not hasattr(model, "weighting_state_for"):
            raise TypeError(f"{type(self).__name__} works with a kmtl MultiTaskModel (kmtl.build_model), "
                            f"not {type(model).__name__}")
        initial = self.initial_state(len(model.task_weights))
        if initial:
            self.state = model.weighting_state_for(self.name, initial)

    def on_train_begin(self, logs=None):
        self._last_logs = None

    def on_epoch_begin(self, epoch, logs=None):
        self.assign(self.weights_for_epoch(epoch, self._last_logs))

    def on_epoch_end(self, epoch, logs=None):
        self._last_logs = dict(logs or {})
