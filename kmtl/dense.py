"""Dense layers with a GELU in inference: one oneDNN matmul with the bias and the GELU fused in.

Keras' ``Dense`` on a [batch, length, d] input runs a 2-D ``MatMul`` between two ``Reshape`` ops,
then the bias (``BiasAdd`` on the 3-D result) and the activation's element-wise ops
(`kmtl.activations`: the GELU's power, tanh and multiplies, in float32 under mixed precision).
TensorFlow's Grappler remapper rewrites ``MatMul → BiasAdd → Gelu`` into one ``_MklFusedMatMul``
whose bias and GELU are oneDNN post-ops on the accumulators, but only when the ``BiasAdd`` reads
the ``MatMul`` itself and the GELU is ``tf.nn.gelu``'s. In inference (no gradient tape recording:
``predict``, the SavedModel's signatures, the ONNX graph) `fast_dense` gives the encoder's
feed-forward dense exactly that form: the input reshaped to 2-D, ``MatMul``, ``BiasAdd``,
``tf.nn.gelu``, reshaped back. Training keeps Keras' call and `kmtl.activations`' fused loops
(the backward needs the pre-activation, which the fused op does not give).

Measured 2026-12-03 05:20 (Intel(R) Xeon(R) Processor, 2 vCPUs, machine otherwise idle, load 1.7;
``python benchmarks/dense.py``): the feed-forward dense of MiniLM at batch 32 × 22 word pieces,
[704, 384] × [384, 1536] + GELU, bfloat16 1.5 ms against 3.3 for Keras' form with a float32 GELU,
float32 3.5 against 4.6; the whole MiniLM-L6 forward pass on ids 47.9 vs 58.7 ms (bfloat16) and
62.3 vs 72.1 ms (float32). `kmtl.sharing.SoftSharing`'s per-task copies use the same form when
served (`inference_dense`). A dense without activation was not faster in the 2-D form (1.9 vs 1.6 ms
bfloat16), so it keeps Keras' call. The GELU of the fused op is computed by oneDNN in float32 on
the accumulators and rounded once to the compute dtype.

Measured and dropped for training (2026-12-03 15:38-15:48, Intel(R) Xeon(R) Processor, 2 vCPUs,
idle, load 0.7-1.9; MiniLM-L6 32 × 64, ``levers.py`` with every plain ``Dense`` patched, 4
interleaved rounds of 8 steps), though a bfloat16 profile shows the feed-forward ``BiasAdd`` and
``BiasAddGrad`` at 15 + 20 ms of a 345 ms step: a 2-D ``MatMul`` + ``BiasAdd`` (which the remapper
fuses into ``_MklNativeFusedMatMul``) with the bias gradient as a GEMV (as `kmtl.attention`'s
projections), bfloat16 96.8 against 98.4 examples/s for Keras' call, float32 49.1 against 49.7
(behind in 7 of 8 rounds: the fused matmuls took 42 ms more than the plain ones and the bias ops
they replaced); Keras' forward with only the bias gradient as a GEMV, 97.4 against 97.2 and 49.4
against 49.2 (a tie).
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kmtl.activations import Float32Activation
from kmtl.tape import training_tensor

# activation function name -> the TensorFlow op the remapper fuses into the matmul
FUSED = {"gelu_approximate": functools.partial(tf.nn.gelu, approximate=True),
         "gelu": functools.partial(tf.nn.gelu, approximate=False),
         "relu": tf.nn.relu}


def fused_name(activation):
    """The name under which ``activation`` (a Keras activation, possibly wrapped in a
    `kmtl.activations.Float32Activation`) is in `FUSED`, else None."""
    if isinstance(activation, Float32Activation):
        activation = activation.activation
    name = getattr(activation, "__name__", None)  # Keras' "gelu" is the exact (erf) form by default
    return name if name in FUSED else None


def inference_dense(inputs, kernel, bias, activation):
    """``activation(inputs @ kernel + bias)`` over the last axis of ``inputs`` as a 2-D ``MatMul``,
    ``BiasAdd`` and `FUSED` activation that Grappler fuses into one oneDNN op, in ``inputs``'
    dtype; None where that form does not apply (a gradient tape may record, the activation is
    not in `FUSED`, the rank is unknown or below 2): the caller then computes it its own way.

    Example:
        >>> x, kernel, bias = tf.ones([2, 3, 4]), tf.ones([4, 5]), tf.zeros([5])
        >>> inference_dense(x, kernel, bias, keras.activations.relu).shape
        TensorShape([2, 3, 5])
    """
    name = fused_name(activation)
    if (name is None or not tf.is_tensor(inputs) or training_tensor(inputs) or inputs.shape.rank is None
            or inputs.shape.rank < 2):
        return None
    dtype = inputs.dtype
    kernel = tf.cast(kernel, dtype)
    rows = tf.matmul(tf.reshape(inputs, [-1, kernel.shape[0]]), kernel)
    if bias is not None:
        rows = tf.nn.bias_add(rows, tf.cast(bias, dtype))
    rows = FUSED[name](rows)
    return tf.reshape(rows, tf.concat([tf.shape(inputs)[:-1], tf.shape(kernel)[-1:]], 0))


def _call(layer, inputs, training=None):
    # training keeps Keras' call, whose activation is kmtl.activations' fused loops
    out = None
    if tf.is_tensor(inputs):
        out = inference_dense(tf.cast(inputs, layer.compute_dtype), layer.kernel, layer.bias, layer.activation)
    return keras.layers.Dense.call(layer, inputs, training=training) if out is None else out


def fast_dense(model) -> int:
    """Make every ``keras.layers.Dense`` inside ``model`` (its own class, not subclasses; not
    quantized) whose activation is a GELU or ReLU (`FUSED`) compute, in inference, as a 2-D
    ``MatMul`` + ``BiasAdd`` + ``tf.nn.gelu`` that Grappler fuses into one oneDNN matmul; returns
    how many were changed. Training, config and weights are unchanged: a model rebuilt from its
    config calls this again.

    Example:
        >>> dense = keras.layers.Dense(8, activation="gelu")
        >>> fast_dense(keras.Sequential([dense]))
        1
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False):
        if (type(layer) is keras.layers.Dense and getattr(layer, "quantization_mode", None) is None
                and fused_name(layer.activation) and not isinstance(layer.call, functools.partial)):
            layer.call = functools.partial(_call, layer)
            changed += 1
    return changed
