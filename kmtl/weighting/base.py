"""`TaskWeighting`: the base callback that sets the model's per-task loss weights."""

from __future__ import annotations

from typing import Dict, Optional

import keras


class TaskWeighting(keras.callbacks.Callback):
    """Base class of loss-weighting strategies: assigns ``model.task_weights`` between steps.

    The weights are non-trainable variables read by the compiled train step, so assigning
    them takes effect at the next step without retracing. Subclasses implement
    `weights_for_epoch` (and may override other hooks for per-step strategies). The current
    weights are written into the epoch's ``logs`` as ``loss_weight_<task>``, so `History` and
    `keras.callbacks.TensorBoard` record them: put weighting callbacks *before* TensorBoard.

    Example:
        >>> class Halve(TaskWeighting):
        ...     def weights_for_epoch(self, epoch, logs):
        ...         return {name: 0.5 ** epoch for name in self.task_names}
    """

    @property
    def task_names(self):
        return list(self.model.task_weights)

    def weights_for_epoch(self, epoch: int, logs: Optional[dict]) -> Dict[str, float]:
        """The weights to use during ``epoch`` (``logs``: the previous epoch's, or ``None``)."""
        raise NotImplementedError

    def assign(self, weights: Dict[str, float]) -> None:
        unknown = set(weights) - set(self.model.task_weights)
        if unknown:
            raise ValueError(f"weights for unknown tasks {sorted(unknown)}; tasks: {self.task_names}")
        for name, value in weights.items():
            self.model.task_weights[name].assign(float(value))

    def on_train_begin(self, logs=None):
        self._last_logs = None

    def on_epoch_begin(self, epoch, logs=None):
        self.assign(self.weights_for_epoch(epoch, self._last_logs))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, variable in self.model.task_weights.items():
                logs[f"loss_weight_{name}"] = float(keras.ops.convert_to_numpy(variable))
        self._last_logs = dict(logs or {})
