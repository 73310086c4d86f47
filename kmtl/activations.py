"""Activations that compute in float32 inside a half-precision model.

Under ``mixed_bfloat16`` the encoder's feed-forward GELU runs in bfloat16, and TensorFlow's CPU
kernels for its element-wise ops (``tf.nn.gelu(approximate=True)``: a power, a tanh, five
multiplies, and the gradients of each) are slower in bfloat16 than in float32. Measured on
2026-12-02 (Intel Xeon with AMX-BF16, 2 vCPUs; `python benchmarks/levers.py gelu`, and a
[32, 64, 1536] micro-benchmark: forward + backward 23.2 ms in bfloat16, 15.9 ms cast to
float32 and back, 12.9 ms for a float32 input), the GELU was about a quarter of a MiniLM training
step in bfloat16. Computing it in float32 also rounds once instead of after every op.
"""

from __future__ import annotations

import keras
import tensorflow as tf

HALF_DTYPES = ("bfloat16", "float16")


@keras.saving.register_keras_serializable(package="kmtl")
class Float32Activation:
    """``activation`` computed in float32 on half-precision inputs, the result cast back.

    Float32 inputs pass through unchanged, so wrapping is harmless in a float32 model.

    Args:
        activation: a Keras activation (function, name or serialized config).

    Example:
        >>> gelu = Float32Activation("gelu")
        >>> gelu(tf.constant([1.0], tf.bfloat16)).dtype
        tf.bfloat16
    """

    def __init__(self, activation):
        self.activation = keras.activations.get(activation)

    def __call__(self, x):
        dtype = getattr(x, "dtype", None)
        if dtype is not None and tf.as_dtype(dtype).name in HALF_DTYPES:
            return tf.cast(self.activation(tf.cast(x, tf.float32)), dtype)
        return self.activation(x)

    def get_config(self):
        return {"activation": keras.activations.serialize(self.activation)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def activations_in_float32(layer) -> int:
    """Make every half-precision ``keras.layers.Dense`` inside ``layer`` (a backbone) compute
    its activation in float32 (`Float32Activation`); returns how many were changed.

    `kmtl.model.MultiTaskModel` calls it on its backbone. A float32 backbone is left as it is,
    and so is the backbone's own config (its constructor arguments): a model rebuilt from it
    calls this again.
    """
    changed = 0
    for sub in layer._flatten_layers(include_self=False):
        if (isinstance(sub, keras.layers.Dense) and sub.compute_dtype in HALF_DTYPES
                and sub.activation not in (None, keras.activations.linear)
                and not isinstance(sub.activation, Float32Activation)):
            sub.activation = Float32Activation(sub.activation)
            changed += 1
    return changed
