"""`PearsonR`: Pearson's correlation of regression scores, streamed over an epoch."""

from __future__ import annotations

import keras
import tensorflow as tf

_SUMS = ("n", "sum_x", "sum_y", "sum_xy", "sum_xx", "sum_yy")


@keras.saving.register_keras_serializable(package="kmtl")
class PearsonR(keras.metrics.Metric):
    """Pearson's r between gold scores and predictions over the whole epoch.

    Streams the weighted sums n = Σw, Σwx, Σwy, Σwxy, Σwx², Σwy² (in float64: the
    differences of large sums below lose digits in float32) and returns

        r = (n·Σxy − Σx·Σy) / sqrt((n·Σx² − (Σx)²) · (n·Σy² − (Σy)²)),

    NaN when either side is constant or no example was seen, as
    `kmtl.tasks.Regression.evaluate` reports it (``pearson``; ``scipy.stats.pearsonr``). The
    sums add up across replicas, so the figure is exact under `tf.distribute` too. Unlike
    ``keras.metrics.PearsonCorrelation`` (a mean of per-batch correlations) this is the
    correlation of the epoch. Direction: up.

    Spearman's ρ needs the ranks of the whole epoch, which no fixed set of sums gives: it
    is not streamed and stays in the dev metrics (``metrics.json``, `kmtl.evaluation`).

    Args:
        name: logged as ``<task>_<name>``.

    Example:
        >>> r = PearsonR()
        >>> r.update_state([[1.0], [2.0], [3.0]], [[1.1], [1.9], [3.2]])
        >>> round(float(r.result()), 3)
        0.991
    """

    def __init__(self, name: str = "pearson", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        self.sums = [self.add_variable((), "zeros", dtype="float64", name=s) for s in _SUMS]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = tf.cast(tf.convert_to_tensor(y_pred), tf.float64)
        x = tf.cast(tf.reshape(y_true, tf.shape(y)), tf.float64)
        if sample_weight is None:
            w = tf.ones_like(y)
        else:  # one weight per example: [batch] against outputs [batch, 1]
            w = tf.cast(sample_weight, tf.float64)
            if w.shape.rank != y.shape.rank:
                w = tf.reshape(w, [-1] + [1] * (y.shape.rank - 1))
            w = tf.broadcast_to(w, tf.shape(y))
        for variable, value in zip(self.sums, (w, w * x, w * y, w * x * y, w * x * x, w * y * y)):
            variable.assign_add(tf.reduce_sum(value))

    def result(self):
        n, sx, sy, sxy, sxx, syy = (tf.convert_to_tensor(v) for v in self.sums)
        cov = n * sxy - sx * sy
        var_x = n * sxx - sx * sx
        var_y = n * syy - sy * sy
        # a constant side has no correlation (NaN, as scipy says); "constant" allows the rounding
        # of n·Σx² − (Σx)², about 1e-16 of n·Σx²
        defined = (var_x > 1e-12 * tf.maximum(n * sxx, 1e-30)) & (var_y > 1e-12 * tf.maximum(n * syy, 1e-30))
        r = cov / tf.sqrt(tf.where(defined, var_x * var_y, 1.0))
        r = tf.where(defined, tf.clip_by_value(r, -1.0, 1.0), tf.constant(float("nan"), tf.float64))
        return tf.cast(r, self.dtype)
