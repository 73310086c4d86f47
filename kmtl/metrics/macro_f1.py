"""`MacroF1`: macro-averaged F1 of single-label classification, streamed over an epoch."""

from __future__ import annotations

import keras
import tensorflow as tf


def f1_from_counts(true_positives, true_count, predicted_count):
    """F1 = 2·TP / (#true + #predicted), element-wise; 0 where both counts are 0.

    The same value as ``2·P·R / (P + R)`` with scikit-learn's / seqeval's ``zero_division=0``.
    """
    return tf.math.divide_no_nan(2.0 * true_positives, true_count + predicted_count)


class CountsF1(keras.metrics.Metric):
    """Base of the F1 metrics that stream per-class counts: true positives, true and predicted
    counts, ``width`` of each, summed over the epoch (`add_counts`); direction up."""

    def __init__(self, width: int, name: str, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        shape = (int(width),)
        self.true_positives = self.add_variable(shape, "zeros", dtype="float32", name="true_positives")
        self.true_count = self.add_variable(shape, "zeros", dtype="float32", name="true_count")
        self.predicted_count = self.add_variable(shape, "zeros", dtype="float32", name="predicted_count")

    def add_counts(self, true_positives, true_count, predicted_count):
        """Add one batch's per-class (sample-weighted) counts, each ``[batch, width]``."""
        self.true_positives.assign_add(tf.reduce_sum(true_positives, axis=0))
        self.true_count.assign_add(tf.reduce_sum(true_count, axis=0))
        self.predicted_count.assign_add(tf.reduce_sum(predicted_count, axis=0))

    def per_class(self):
        """F1 of each class over the counts so far."""
        return f1_from_counts(self.true_positives, self.true_count, self.predicted_count)


@keras.saving.register_keras_serializable(package="kmtl")
class MacroF1(CountsF1):
    """Macro-averaged F1 over all classes, from logits and integer labels.

    Accumulates, per class, the (sample-weighted) true positives, true and predicted counts
    over the epoch, so the result is the F1 of the whole epoch, not a mean of per-batch F1s.
    The prediction is the arg-max of ``y_pred``. Every class counts in the average, also
    classes absent from both labels and predictions (their F1 is 0): the same figure as
    ``sklearn.metrics.f1_score(y, p, labels=all_labels, average="macro", zero_division=0)``,
    which `kmtl.tasks.Classification.evaluate` reports as ``macro_f1``. Direction: up.

    Args:
        num_classes: width of the head's output (the number of labels).
        name: logged as ``<task>_<name>``.
        exclude: class indices counted in no average (a relation task's no-relation class);
            ``sklearn``'s ``labels=`` with the other classes.

    Example:
        >>> f1 = MacroF1(3)
        >>> f1.update_state([0, 1, 2], [[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0]])
        >>> float(f1.result())  # F1 per class: 0.667, 1.0, 0.0
        0.5555...
    """

    def __init__(self, num_classes: int, name: str = "macro_f1", dtype=None, exclude=()):
        if int(num_classes) < 1:
            raise ValueError(f"MacroF1 needs num_classes >= 1, got {num_classes}")
        exclude = tuple(sorted({int(i) for i in exclude}))
        if any(not 0 <= i < int(num_classes) for i in exclude) or len(exclude) >= int(num_classes):
            raise ValueError(f"MacroF1 exclude={list(exclude)} must name some, not all, of the {num_classes} classes")
        super().__init__(num_classes, name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.exclude = exclude

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        predicted = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), [-1])
        weight = (tf.ones_like(labels, tf.float32) if sample_weight is None
                  else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        true_hot = tf.one_hot(labels, self.num_classes) * weight[:, None]
        pred_hot = tf.one_hot(predicted, self.num_classes) * weight[:, None]
        self.add_counts(true_hot * tf.one_hot(predicted, self.num_classes), true_hot, pred_hot)

    def result(self):
        if not self.exclude:
            return tf.reduce_mean(self.per_class())
        kept = [i for i in range(self.num_classes) if i not in self.exclude]
        return tf.reduce_mean(tf.gather(self.per_class(), kept))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "exclude": list(self.exclude)}
