"""Single-sentence and sentence-pair classification."""

from __future__ import annotations

from typing import Dict, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import f1_score

from kmtl.tasks.base import Task


@keras.saving.register_keras_serializable(package="kmtl")
class Classification(Task):
    """Single-sentence classification (sentiment, topic, intent...).

    Head: dropout and a dense layer on the pooled sentence vector, producing logits; trained
    with sparse softmax cross-entropy. Dev metrics: accuracy and macro-F1.

    Args:
        name: task name (Keras output name).
        labels: label vocabulary; inferred from the training split when ``None``.
        dropout: dropout rate before the output layer.

    Example:
        >>> task = Classification("sentiment", labels=["negative", "positive"])
    """

    kind = "classification"
    input_fields = ("text",)
    primary_metric = "accuracy"
    logged_metrics = ("accuracy", "macro_f1")

    def encode_labels(self, examples: Sequence) -> np.ndarray:
        self._require_labels()
        return np.array([self._label_index(ex.label, ex.where) for ex in examples], dtype=np.int32)

    def build_head(self, features: Dict):
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(features["pooled"])
        return keras.layers.Dense(self.num_outputs, name=self.name)(x)

    def per_example_loss(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    def teacher_targets(self, outputs):
        return _softmax(np.asarray(outputs, dtype=np.float64)).astype(np.float32)

    def soft_target(self, gold, teacher, lam):
        gold = keras.ops.one_hot(keras.ops.cast(gold, "int32"), self.num_outputs)
        return lam * gold + (1.0 - lam) * keras.ops.cast(teacher, "float32")

    def soft_loss(self, target, y_pred):
        return keras.losses.categorical_crossentropy(target, y_pred, from_logits=True)

    def metrics(self) -> list:
        """Accuracy and macro-F1 (`kmtl.metrics.MacroF1`): ``<task>_accuracy``, ``<task>_macro_f1``."""
        from kmtl.metrics import MacroF1

        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), MacroF1(self.num_outputs)]

    def serving_outputs(self, output, text=None, words_info=None) -> dict:
        """``<task>_label`` [B] string, ``<task>_probabilities`` [B, C]."""
        probs = tf.nn.softmax(output, axis=-1)
        return {f"{self.name}_label": tf.gather(tf.constant(self.labels), tf.argmax(probs, axis=-1)),
                f"{self.name}_probabilities": probs}

    def decode(self, outputs, examples=None, **info) -> list:
        """Each prediction: ``{"label": str, "probabilities": {label: p}}``."""
        probs = _softmax(np.asarray(outputs, dtype=np.float64))
        return [
            {"label": self.labels[int(row.argmax())],
             "probabilities": {label: float(p) for label, p in zip(self.labels, row)}}
            for row in probs
        ]

    def evaluate(self, examples, predictions) -> Dict[str, float]:
        gold = [str(ex.label).strip() for ex in examples]
        pred = [p["label"] for p in predictions]
        return {
            "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])),
            "macro_f1": float(f1_score(gold, pred, labels=self.labels, average="macro", zero_division=0)),
        }


@keras.saving.register_keras_serializable(package="kmtl")
class PairClassification(Classification):
    """Sentence-pair classification (paraphrase, entailment, NLI).

    Both sentences are packed into one sequence (``[CLS] a [SEP] b [SEP]``, segment ids 0/1,
    round-robin truncation); otherwise identical to `Classification`.

    Example:
        >>> task = PairClassification("nli", labels=["entailment", "neutral", "contradiction"])
    """

    kind = "pair_classification"
    input_fields = ("text", "text_pair")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
