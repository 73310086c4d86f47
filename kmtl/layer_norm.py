"""Layer normalization with a hand-written backward: fewer, larger TensorFlow ops in training.

Keras' ``LayerNormalization`` (``keras.ops.layer_normalization``, TensorFlow backend) builds its
forward from ``tf.nn.moments`` and five more ops on full-size tensors (one of them only to fold
gamma into the scale, ``rsqrt(var) · gamma``, a [rows, d] tensor), and TensorFlow differentiates
each of them one by one, with ``Tile`` and ``AddN`` between: counted in TensorFlow's optimized
graph of a forward and backward, 29 kernels (33 under ``mixed_bfloat16``, with the casts)
where this module runs 19 (24). A MiniLM step runs 13 normalizations (the embeddings' and two
per transformer layer).

`layer_norm` computes the same function in float32 (the input cast once, the result cast back)
and supplies the gradient by the usual closed form, with ``g = dy · gamma``::

    dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)),   dgamma = Σ_rows dy · x̂,   dbeta = Σ_rows dy

The row means of the backward are matrix-vector products, ``mean(g) = dy @ gamma / d`` and
``mean(g · x̂) = (dy · x̂) @ gamma / d`` (``dy · x̂`` is needed for dgamma anyway), and the sums
over the rows are ``ones @ dy``: oneDNN's GEMV kernels run them faster than TensorFlow's
reductions, and save the products they would reduce.

Measured 2026-12-02 on an Intel Xeon with AMX (lscpu: Intel(R) Xeon(R) Processor, 2 vCPUs, shared
with another job), forward + backward of a [32, 64, 384] tensor (`python benchmarks/layer_norm.py`,
load 3.8): float32 3.70 ms against 5.90 for Keras, bfloat16 4.65 against 6.48. In MiniLM-L6
training, batch 32 x 64 (`python benchmarks/levers.py --variants
data=fixed,precision=mixed_bfloat16,layernorm=1 data=fixed,precision=mixed_bfloat16,layernorm=0
--rounds 8 --steps 8`, load 3.3 -> 3.7): bfloat16 40.80 against 39.26 examples/s (+3.9 %, ahead
in 7 of 8 rounds); the same in float32 (load 3.5 -> 4.1): 23.63 against 23.07 (+2.4 %).

Alternatives measured on the micro-benchmark and dropped (ms float32 / bfloat16 against Keras'
3.48 / 3.95, load 0.5): the same closed form with TensorFlow reductions instead of matrix
products, 2.67 / 3.08 (the matrix products took another 10-20 % off, at load 2);
Keras 2's formulation on ``FusedBatchNormV3`` (rows as channels, NCHW, oneDNN's kernel and its
gradient), 3.39 / 3.82-4.27, and its forward with this module's backward, 11-15 % slower than this module;
the forward and the backward each compiled with XLA, 2.88 / 3.41. oneDNN's ``_MklLayerNorm``
does not help: Grappler's remapper (``FindMklLayerNorm``) rewrote none of the formulations tried
in TF 2.21, not even Keras 2's ``FusedBatchNormV3`` one in inference, and its patterns need the
forward's intermediate tensors to have no other consumer, which a gradient always is.

On a CPU, where kmtl's kernel builds (`kmtl.kernels.layer_norm`, C++ next to it), the forward is
one pass (the row's sums in float32, the output rounded to the input's dtype; only the row's mean
and rstd are kept, not a float32 x̂) and the backward another (x̂ recomputed, ``dx`` and the
row blocks' ``dgamma``/``dbeta`` sums in the same pass, the blocks added in a fixed order: the same
figures on any number of threads). Its sums add in another order than the ops above: the same
figures within float rounding (tests/test_layer_norm.py). Measured 2026-12-03 (Intel(R) Xeon(R)
Processor, 2 vCPUs, idle but a slow hour: a 2048² float32 matmul at 222-238 GFLOP/s against
325-332 in the morning), forward + backward of [32, 64, 384] (``python benchmarks/layer_norm.py``,
load 0.9-1.0): float32 2.16 ms against 4.31 for the ops, bfloat16 2.44 against 5.96. Where it
does not build, where a GPU is visible (it has no GPU kernel) or inside an XLA-compiled step, the
TensorFlow ops above run.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kmtl import kernels
from kmtl.tape import training_tensor


def layer_norm(x, gamma, beta, epsilon: float, kernel: bool = True):
    """``(x - mean) / sqrt(var + epsilon) · gamma + beta`` over the last axis of ``x``, in float32,
    in ``x``'s dtype; differentiable in ``x``, ``gamma`` and ``beta`` (float32, shape ``[d]``).
    ``kernel``: kmtl's one-pass kernel where it can run (False: TensorFlow's ops, for an A/B).

    Example:
        >>> layer_norm(tf.constant([[1.0, 2.0, 3.0]]), tf.ones([3]), tf.zeros([3]), 1e-3).numpy().round(3)
        array([[-1.224,  0.   ,  1.224]], dtype=float32)
    """
    gamma = tf.convert_to_tensor(gamma, tf.float32)
    beta = tf.convert_to_tensor(beta, tf.float32)
    epsilon = float(epsilon)
    x = tf.convert_to_tensor(x)
    ops = kernels.for_dtype("layer_norm", x.dtype) if kernel else None
    if ops is not None:
        return _kernel_layer_norm(ops, x, gamma, beta, epsilon)

    @tf.custom_gradient
    def _ln(x, gamma, beta):
        d = gamma.shape[0] if gamma.shape[0] is not None else tf.shape(x)[-1]
        x32 = tf.cast(x, tf.float32)
        # two passes (mean, then the mean of the centred squares): as exact as tf.nn.moments, and
        # no more full-size ops than E[x²] - E[x]², since the centred x is needed anyway
        mean = tf.reduce_mean(x32, -1, keepdims=True)
        centred = x32 - mean
        rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), -1, keepdims=True) + epsilon)
        xhat = centred * rstd
        y = tf.cast(xhat * gamma + beta, x.dtype)

        def grad(dy):
            dy32 = tf.cast(dy, tf.float32)
            dy_xhat = dy32 * xhat
            rows_dy, rows_dy_xhat = tf.reshape(dy32, [-1, d]), tf.reshape(dy_xhat, [-1, d])
            g = tf.reshape(gamma, [d, 1]) / tf.cast(d, tf.float32)
            mean_g = tf.reshape(tf.matmul(rows_dy, g), tf.shape(rstd))            # mean(dy · gamma)
            mean_g_xhat = tf.reshape(tf.matmul(rows_dy_xhat, g), tf.shape(rstd))  # mean(dy · gamma · x̂)
            dx = rstd * (dy32 * gamma - mean_g - xhat * mean_g_xhat)
            ones = tf.ones([1, tf.shape(rows_dy)[0]], tf.float32)
            dgamma = tf.reshape(tf.matmul(ones, rows_dy_xhat), [d])
            dbeta = tf.reshape(tf.matmul(ones, rows_dy), [d])
            return tf.cast(dx, x.dtype), dgamma, dbeta

        return y, grad

    return _ln(x, gamma, beta)


def _kernel_layer_norm(ops, x, gamma, beta, epsilon):
    """`layer_norm` by kmtl's kernel: one pass forward, one backward (x̂ recomputed from the
    row's mean and rstd, the only float32 tensors kept between them)."""

    @tf.custom_gradient
    def _ln(x, gamma, beta):
        y, mean, rstd = ops.kmtl_layer_norm(x, gamma, beta, epsilon=epsilon)
        return y, lambda dy: ops.kmtl_layer_norm_grad(tf.cast(dy, x.dtype), x, gamma, mean, rstd)

    return _ln(x, gamma, beta)


def _call(layer, inputs, kernel=True):
    # only while a gradient tape records (training, `kmtl.tape`): inference graphs (predict, SavedModel,
    # ONNX) keep Keras' forward: stock ops, which TF Serving and tf2onnx know
    if not training_tensor(inputs) or inputs.shape.rank is None or inputs.shape.rank < 1:
        return keras.layers.LayerNormalization.call(layer, inputs)
    out = layer_norm(inputs, layer.gamma.value, layer.beta.value, layer.epsilon, kernel=kernel)
    return tf.cast(out, layer.compute_dtype)


def _supported(layer) -> bool:
    """The configuration of BERT's normalizations: the last axis (``-1``, also once built), gamma and beta."""
    return layer.axis in (-1, [-1]) and layer.center and layer.scale and not getattr(layer, "rms_scaling", False)


def fast_layer_norm(model, kernel: bool = True) -> int:
    """Make every ``keras.layers.LayerNormalization`` inside ``model`` (its own class, not
    subclasses) that normalizes the last axis (``axis=-1``) with both gamma and beta compute with
    `layer_norm` in training (while a gradient tape records; inference keeps Keras' forward, so
    exported graphs do not change); returns how many were changed. Other configurations (other or several axes, no
    center or no scale, ``rms_scaling``) keep Keras' call. Layers keep their config and weights
    (saving is unaffected): a model rebuilt from its config calls this again. ``kernel=False``:
    TensorFlow's ops even where kmtl's kernel runs (for an A/B: ``python benchmarks/levers.py
    layernormkernel``).

    Example:
        >>> layer = keras.layers.LayerNormalization(epsilon=1e-12)
        >>> fast_layer_norm(keras.Sequential([layer]))
        1
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False):
        if (type(layer) is keras.layers.LayerNormalization and _supported(layer)
                and not isinstance(layer.call, functools.partial)):
            layer.call = functools.partial(_call, layer, kernel=kernel)
            changed += 1
    return changed
