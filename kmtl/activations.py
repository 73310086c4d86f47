"""The encoder's feed-forward activation: computed in float32, and in training fused by XLA.

Two costs of the feed-forward GELU (``tf.nn.gelu(approximate=True)``: a power, a tanh, five
multiplies, and the gradient of each, every one a pass over a [tokens, 1536] tensor):

- Under ``mixed_bfloat16`` TensorFlow's CPU kernels for these element-wise ops are slower in
  bfloat16 than in float32. Measured on 2026-12-02 (Intel Xeon with AMX-BF16, 2 vCPUs;
  `python benchmarks/levers.py gelu`, and a [32, 64, 1536] micro-benchmark: forward + backward
  23.2 ms in bfloat16, 15.9 ms cast to float32 and back, 12.9 ms for a float32 input), the GELU
  was about a quarter of a MiniLM training step in bfloat16. `Float32Activation` computes it in
  float32, which also rounds once instead of after every op.
- Even in float32, a dozen separate passes over memory. In training (while a gradient tape
  records) `Float32Activation` runs the forward as one XLA-compiled function (cast, activation,
  cast back: one fused loop) and the backward as another that recomputes the activation's
  derivative from the saved input (``tf.GradientTape`` inside the compiled function: the exact
  derivative of the same formula, one fused loop). Everything else in the step stays on
  TensorFlow's oneDNN kernels; inference graphs (``predict``, the SavedModel, ONNX) keep the
  plain ops. Measured 2026-12-03 (Intel(R) Xeon(R) Processor, 2 vCPUs, idle), forward +
  backward of a [32, 64, 1536] tensor with the casts: bfloat16 2.3 ms against 10.9, float32 2.0
  against 8.1 (`python benchmarks/activation.py`).

XLA compiles each new input shape once (a few tens of milliseconds for a loop this small); with
the length buckets of `kmtl.data.buckets` that is a few dozen shapes per run.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kmtl.tape import training_tensor

HALF_DTYPES = ("bfloat16", "float16")
# element-wise activations (by function name) that XLA compiles into one loop: others keep plain ops
FUSABLE = frozenset({"gelu", "gelu_approximate", "relu", "relu6", "silu", "swish", "tanh", "sigmoid", "elu",
                     "selu", "softplus", "softsign", "mish", "hard_sigmoid", "hard_silu", "hard_swish",
                     "leaky_relu"})


@functools.lru_cache(maxsize=None)
def _compiled(activation):
    """The XLA-compiled forward and backward of ``activation`` (one pair per function, shared by
    every layer that uses it, so each shape is compiled once per run, not once per layer)."""

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(x):
        return tf.cast(activation(tf.cast(x, tf.float32)), x.dtype)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def backward(x, dy):
        x32 = tf.cast(x, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x32)
            y = activation(x32)
        return tf.cast(tape.gradient(y, x32, output_gradients=tf.cast(dy, tf.float32)), x.dtype)

    return forward, backward


def fused_activation(activation, x):
    """``activation(x)`` computed in float32 by one XLA-compiled loop, differentiable (the backward
    another compiled loop, from ``x`` alone), in ``x``'s dtype.

    Example:
        >>> fused_activation(tf.nn.relu, tf.constant([-1.0, 2.0])).numpy()
        array([0., 2.], dtype=float32)
    """
    forward, backward = _compiled(activation)

    @tf.custom_gradient
    def _fused(x):
        return forward(x), lambda dy: backward(x, dy)

    return _fused(x)


def _fusable(activation) -> bool:
    return getattr(activation, "__name__", None) in FUSABLE


@keras.saving.register_keras_serializable(package="kmtl")
class Float32Activation:
    """``activation`` computed in float32 on half-precision inputs, the result cast back; in
    training (while a gradient tape records) an element-wise activation runs as XLA-compiled
    forward and backward loops (`fused_activation`).

    Float32 inputs pass through unchanged outside training, so wrapping is harmless in a float32
    model and exported graphs keep the activation's plain ops.

    Args:
        activation: a Keras activation (function, name or serialized config).

    Attributes:
        fused: set to False to keep the plain ops in training too (an A/B lever:
            ``python benchmarks/levers.py fusedgelu``).

    Example:
        >>> gelu = Float32Activation("gelu")
        >>> gelu(tf.constant([1.0], tf.bfloat16)).dtype
        tf.bfloat16
    """

    fused = True

    def __init__(self, activation):
        self.activation = keras.activations.get(activation)

    def __call__(self, x):
        dtype = getattr(x, "dtype", None)
        if self.fused and _fusable(self.activation) and training_tensor(x):
            return fused_activation(self.activation, x)
        if dtype is not None and tf.as_dtype(dtype).name in HALF_DTYPES:
            return tf.cast(self.activation(tf.cast(x, tf.float32)), dtype)
        return self.activation(x)

    def get_config(self):
        return {"activation": keras.activations.serialize(self.activation)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def fast_activations(layer) -> int:
    """Wrap the activation of every ``keras.layers.Dense`` inside ``layer`` (a backbone) that has a
    non-linear one in `Float32Activation`: float32 compute under mixed precision, fused loops in
    training; returns how many were changed.

    `kmtl.model.MultiTaskModel` calls it on its backbone. The backbone's own config (its
    constructor arguments) is left as it is: a model rebuilt from it calls this again.

    Example:
        >>> dense = keras.layers.Dense(4, activation="gelu")
        >>> fast_activations(keras.Sequential([dense]))
        1
    """
    changed = 0
    for sub in layer._flatten_layers(include_self=False):
        if (isinstance(sub, keras.layers.Dense) and sub.activation not in (None, keras.activations.linear)
                and not isinstance(sub.activation, Float32Activation)):
            sub.activation = Float32Activation(sub.activation)
            changed += 1
    return changed
