"""Regression on one sentence or a sentence pair (e.g. STS-B similarity)."""

from __future__ import annotations

import math
from typing import Annotated, Dict, Sequence

import keras
import numpy as np
import tensorflow as tf
from pydantic import Field
from scipy.stats import pearsonr, spearmanr

from kmtl.errors import DataError
from kmtl.tasks.base import Task


@keras.saving.register_keras_serializable(package="kmtl")
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
    primary_metric = "pearson"
    logged_metrics = ("mse", "pearson")
    raw_output = "score"
    input_fields = ("text",)
    has_labels = False

    def __init__(self, name, labels=None, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1):
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
        return keras.ops.mean(keras.ops.square(y_pred - y_true), axis=-1)

    def placeholder_label(self, y_pred):
        return keras.ops.zeros_like(y_pred)

    def label_spec(self, length):
        return [1], "float32", []

    def serving_outputs(self, output, text=None, words_info=None) -> dict:
        """``<task>_score`` [B]."""
        return {f"{self.name}_score": tf.reshape(output, [-1])}

    def conform_label(self, y_true, y_pred):
        """Scores given as ``[batch]`` become ``[batch, 1]`` like the output (not a broadcast)."""
        return keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), keras.ops.shape(y_pred))

    def metrics(self) -> list:
        """MSE and Pearson's r over the epoch (`kmtl.metrics.PearsonR`): ``<task>_mse``,
        ``<task>_pearson``. Spearman's ρ cannot be streamed: it is in the dev metrics only."""
        from kmtl.metrics import PearsonR

        return [keras.metrics.MeanSquaredError(name="mse"), PearsonR()]

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
        config["initial_bias"] = self.initial_bias  # set by fit_labels; the head is built with it
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Regression":
        config = dict(config)
        initial_bias = float(config.pop("initial_bias", 0.0))
        task = super().from_config(config)
        task.initial_bias = initial_bias
        return task


@keras.saving.register_keras_serializable(package="kmtl")
class PairRegression(Regression):
    """Sentence-pair regression (semantic similarity such as STS-B, scored 0-5).

    Example:
        >>> task = PairRegression("similarity")
    """

    kind = "pair_regression"
    input_fields = ("text", "text_pair")
