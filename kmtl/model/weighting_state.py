"""`WeightingState`: a loss-weighting strategy's variables, owned by the model."""

from __future__ import annotations

from typing import Dict, Sequence

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="kmtl")
class WeightingState(keras.layers.Layer):
    """The state of the model's loss-weighting strategy, as non-trainable variables.

    A strategy's state (uncertainty log-variances, GradNorm's first losses, DWA's loss
    history) lives here, on the model, rather than on the callback, so that everything that
    saves a model saves it too: ``.keras`` files, ``save_weights``, ModelCheckpoint and
    `keras.callbacks.BackupAndRestore` (a resumed run continues with the learned state).
    The model makes it with `MultiTaskModel.weighting_state_for`; a strategy reads and
    assigns ``state[name]``. Variables are summed over nothing: every replica computes the
    same update (``aggregation="only_first_replica"``).

    Args:
        strategy: the strategy's registry name (``uncertainty``, ``gradnorm``...).
        shapes: ``{variable name: shape}``.

    Example:
        >>> state = WeightingState("uncertainty", {"log_variances": [3]})
        >>> state["log_variances"].assign([0.0, 0.1, 0.2])
    """

    def __init__(self, strategy: str, shapes: Dict[str, Sequence[int]], **kwargs):
        kwargs.setdefault("name", "weighting_state")
        kwargs.pop("trainable", None)
        super().__init__(trainable=False, **kwargs)
        self.strategy = str(strategy)
        self.shapes = {name: [int(n) for n in shape] for name, shape in sorted(shapes.items())}
        self.state = {
            name: self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name,
                                  aggregation="only_first_replica")
            for name, shape in self.shapes.items()
        }
        self.built = True

    def __getitem__(self, name: str):
        return self.state[name]

    def matches(self, strategy: str, initial: Dict[str, np.ndarray]) -> bool:
        """Whether this state is ``strategy``'s with the shapes of ``initial``."""
        shapes = {name: list(np.shape(value)) for name, value in initial.items()}
        return self.strategy == strategy and self.shapes == dict(sorted(shapes.items()))

    def call(self, inputs=None):  # never called: a holder of variables
        return inputs

    def get_config(self):
        return {**super().get_config(), "strategy": self.strategy, "shapes": self.shapes}
