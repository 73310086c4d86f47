"""`MultiLabelF1`: micro- or macro-averaged F1 of multi-label classification, streamed."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from kmtl.metrics.macro_f1 import CountsF1, f1_from_counts

AVERAGES = ("macro", "micro")


@keras.saving.register_keras_serializable(package="kmtl")
class MultiLabelF1(CountsF1):
    """F1 of multi-label predictions (a label is predicted when its probability ≥ ``threshold``).

    Takes the head's logits and 0/1 label rows ``[batch, num_labels]``; accumulates per-label
    true positives, true and predicted counts over the epoch (each example weighted by its
    sample weight). ``macro``: the mean over all labels of each label's F1 (0 for a label
    absent from labels and predictions); ``micro``: F1 of the pooled counts. The same
    figures as scikit-learn's ``f1_score(..., average=..., zero_division=0)``, which
    `kmtl.tasks.MultiLabelClassification.evaluate` reports as ``macro_f1`` / ``micro_f1``.
    Direction: up.

    Args:
        num_labels: width of the head's output.
        threshold: decision threshold on each label's probability (compared as the logit
            ``log(t / (1 - t))``).
        average: ``"macro"`` or ``"micro"``.
        name: logged as ``<task>_<name>``; default ``<average>_f1``.

    Example:
        >>> f1 = MultiLabelF1(3, average="micro")
        >>> f1.update_state([[1, 0, 1]], [[2.0, -1.0, -3.0]])   # predicts label 0 only
        >>> float(f1.result())  # TP 1, FN 1, FP 0
        0.6666...
    """

    def __init__(self, num_labels: int, threshold: float = 0.5, average: str = "macro", name=None, dtype=None):
        if average not in AVERAGES:
            raise ValueError(f"MultiLabelF1 average={average!r}: choose one of {', '.join(AVERAGES)}")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"MultiLabelF1 threshold must be between 0 and 1, got {threshold}")
        super().__init__(num_labels, name=name or f"{average}_f1", dtype=dtype)
        self.num_labels, self.threshold, self.average = int(num_labels), float(threshold), average

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        logit = math.log(self.threshold / (1.0 - self.threshold))
        predicted = tf.cast(y_pred >= tf.cast(logit, y_pred.dtype), tf.float32)
        gold = tf.cast(tf.cast(y_true, tf.float32) > 0.5, tf.float32)
        if sample_weight is not None:
            weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1, 1])
            predicted, gold = predicted * weight, gold * weight
        self.add_counts(tf.minimum(gold, predicted), gold, predicted)

    def result(self):
        if self.average == "micro":
            return f1_from_counts(tf.reduce_sum(self.true_positives), tf.reduce_sum(self.true_count),
                                  tf.reduce_sum(self.predicted_count))
        return tf.reduce_mean(self.per_class())

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels, "threshold": self.threshold,
                "average": self.average}
