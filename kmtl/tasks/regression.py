"""Regression on one sentence or a sentence pair (e.g. STS-B similarity)."""

from __future__ import annotations

import math
from typing import Dict, Sequence

import keras
import numpy as np
from scipy.stats import pearsonr, spearmanr

from kmtl.errors import DataError
from kmtl.tasks.base import Task


class Regression(Task):
    """Single-sentence regression: one real-valued score per example.

    Head: dropout and a dense layer with one unit; output shape ``[batch, 1]``; trained with
    squared error. Dev metrics: Pearson and Spearman correlation, and MSE. `fit_labels` on the
    train split sets the layer's initial bias to the mean score, so that a short fine-tuning
    run does not spend its first steps learning the offset (STS-B scores average 2.7).

    Args:
        name: task name.
        dropout: dropout rate before the output layer.

    Example:
        >>> task = Regression("readability")
    """

    kind = "regression"
    input_fields = ("text",)
    has_labels = False

    def __init__(self, name, labels=None, dropout: float = 0.1):
        if labels is not None:
            raise ValueError(f"task {name!r}: regression tasks take no labels")
        super().__init__(name, None, dropout)
        self.initial_bias = 0.0

    def fit_labels(self, examples: Sequence) -> None:
        """Start the head's bias at the mean score of ``examples`` (the train split)."""
        if examples:
            self.initial_bias = float(np.mean(self.encode_labels(examples)))

    @property
    def num_outputs(self) -> int:
        return 1

    def encode_labels(self, examples: Sequence) -> np.ndarray:
        values = np.empty((len(examples), 1), dtype=np.float32)
        for row, ex in enumerate(examples):
            try:
                value = float(ex.label)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise DataError(ex.where, f"score {ex.label!r} is not a finite number (task {self.name!r} is a regression)")
            values[row, 0] = value
        return values

    def build_head(self, features: Dict):
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(features["pooled"])
        return keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(self.initial_bias),
                                  name=self.name)(x)

    def per_example_loss(self, y_true, y_pred):
        if isinstance(y_true, dict):  # {"gold", "teacher"}: kmtl.distill
            return self.distillation_loss(y_true, y_pred)
        return keras.ops.mean(keras.ops.square(y_pred - y_true), axis=-1)

    def metrics(self) -> list:
        return [keras.metrics.MeanSquaredError(name="mse")]

    def decode(self, outputs, examples=None, **info) -> list:
        """Each prediction: ``{"score": float}``."""
        return [{"score": float(v)} for v in np.asarray(outputs).reshape(-1)]

    def evaluate(self, examples, predictions) -> Dict[str, float]:
        gold = self.encode_labels(examples)[:, 0].astype(np.float64)
        pred = np.array([p["score"] for p in predictions], dtype=np.float64)
        constant = np.ptp(pred) == 0 or np.ptp(gold) == 0
        return {
            "pearson": float("nan") if constant else float(pearsonr(gold, pred)[0]),
            "spearman": float("nan") if constant else float(spearmanr(gold, pred)[0]),
            "mse": float(np.mean((gold - pred) ** 2)),
        }

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("labels")
        return config


class PairRegression(Regression):
    """Sentence-pair regression (semantic similarity such as STS-B, scored 0-5).

    Example:
        >>> task = PairRegression("similarity")
    """

    kind = "pair_regression"
    input_fields = ("text", "text_pair")
