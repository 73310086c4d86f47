"""Multi-label classification: any subset of the label set per example."""

from __future__ import annotations

import math
from typing import Annotated, Dict, Sequence

import keras
import numpy as np
import tensorflow as tf
from pydantic import Field
from sklearn.metrics import f1_score

from kmtl.errors import DataError
from kmtl.tasks.base import Task


@keras.saving.register_keras_serializable(package="kmtl")
class MultiLabelClassification(Task):
    """Multi-label classification (tags, aspects, toxicity types...).

    Head: dense logits, one per label, trained with sigmoid binary cross-entropy (mean over
    labels). A label is predicted when its probability reaches ``threshold``. Raw labels are
    tuples of label strings (sources split a cell on ``label_separator``). Dev metrics:
    micro-F1, macro-F1 and exact-match (subset) accuracy.

    Args:
        name: task name.
        labels: label vocabulary; inferred from the training split when ``None``.
        threshold: decision threshold on each label's probability.
        dropout: dropout rate before the output layer.

    Example:
        >>> task = MultiLabelClassification("topics", labels=["sports", "politics", "tech"])
    """

    kind = "multilabel"
    primary_metric = "micro_f1"
    logged_metrics = ("accuracy", "micro_f1", "macro_f1")
    input_fields = ("text",)

    def __init__(self, name, labels=None, threshold: float = 0.5, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1):
        super().__init__(name, labels, dropout)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"task {name!r}: threshold must be between 0 and 1, got {threshold}")
        self.threshold = threshold

    def _raw_label_values(self, ex):
        return list(_as_tuple(ex.label, ex.where))

    def encode_labels(self, examples: Sequence) -> np.ndarray:
        self._require_labels()
        out = np.zeros((len(examples), len(self.labels)), dtype=np.float32)
        for row, ex in enumerate(examples):
            for value in _as_tuple(ex.label, ex.where):
                out[row, self._label_index(value, ex.where)] = 1.0
        return out

    def build_head(self, features: Dict):
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(features["pooled"])
        return keras.layers.Dense(self.num_outputs, name=self.name)(x)

    def per_example_loss(self, y_true, y_pred):
        return keras.losses.binary_crossentropy(y_true, y_pred, from_logits=True)

    def placeholder_label(self, y_pred):
        return keras.ops.zeros_like(y_pred)

    def label_spec(self, length):
        return [self.num_outputs], "float32", []

    def serving_outputs(self, output, text=None, words_info=None) -> dict:
        """``<task>_labels`` [B, C] strings (active labels first, padded with ""),
        ``<task>_probabilities`` [B, C]."""
        probs = tf.sigmoid(output)
        names = tf.broadcast_to(tf.constant(self.labels)[None, :], tf.shape(probs))
        active = tf.ragged.boolean_mask(names, probs >= self.threshold)
        return {f"{self.name}_labels": active.to_tensor("", shape=[None, len(self.labels)]),
                f"{self.name}_probabilities": probs}

    def conform_label(self, y_true, y_pred):
        return keras.ops.cast(y_true, y_pred.dtype)

    def teacher_targets(self, outputs):
        return (1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))).astype(np.float32)

    def metrics(self) -> list:
        """Label accuracy, micro- and macro-F1 (`kmtl.metrics.MultiLabelF1`): ``<task>_accuracy``,
        ``<task>_micro_f1``, ``<task>_macro_f1``."""
        from kmtl.metrics import MultiLabelF1

        # the head gives logits: the probability threshold t is the logit log(t / (1 - t))
        return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=math.log(self.threshold / (1 - self.threshold))),
                MultiLabelF1(self.num_outputs, self.threshold, average="micro"),
                MultiLabelF1(self.num_outputs, self.threshold, average="macro")]

    def decode(self, outputs, examples=None, **info) -> list:
        """Each prediction: ``{"labels": [str...], "probabilities": {label: p}}``."""
        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))
        return [
            {"labels": [l for l, p in zip(self.labels, row) if p >= self.threshold],
             "probabilities": {l: float(p) for l, p in zip(self.labels, row)}}
            for row in probs
        ]

    def evaluate(self, examples, predictions) -> Dict[str, float]:
        gold = self.encode_labels(examples).astype(int)
        index = {l: i for i, l in enumerate(self.labels)}
        pred = np.zeros_like(gold)
        for row, p in enumerate(predictions):
            for label in p["labels"]:
                pred[row, index[label]] = 1
        return {
            "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
            "subset_accuracy": float(np.mean(np.all(gold == pred, axis=1))),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold}


def _as_tuple(label, where):
    if label is None:
        raise DataError(where, "missing label; every training/dev example needs one")
    if isinstance(label, str):
        return (label.strip(),) if label.strip() else ()
    return tuple(str(value).strip() for value in label)
