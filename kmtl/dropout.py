"""Dropout with 16 random bits per element: half the random-number work of Keras' dropout.

Keras' TensorFlow backend drops through ``tf.nn.experimental.stateless_dropout``: one uniform
random number per element, drawn in the input's dtype, compared with the rate. A MiniLM
training step draws about 20 million of them (attention probabilities and hidden states of
six layers); on a 2-vCPU CPU that was a tenth of a bfloat16 step (`benchmarks/profile_step.py`:
``StatelessRandomUniformV2``). Here one 32-bit Philox draw gives two elements their 16-bit
keep/drop decision, compared as integers, so no uniform floats are made at all. Measured
2026-12-02 on an Intel Xeon with AMX (2 vCPUs), forward + backward of a [32, 12, 64, 64]
bfloat16 tensor: 4.0 ms against 7.3 ms (float32: 4.1 vs 5.8).

Measured and dropped (2026-12-03, Intel(R) Xeon(R) Processor, 2 vCPUs, load 2.5-3.3, forward +
backward of [32, 12, 64, 64] / [32, 64, 384], bfloat16, ms): the mask, the select and the scale
in one XLA-compiled loop, forward and backward regenerating the mask from the seed, with XLA's
Philox 12.8 / 5.8 against 3.6 / 2.2 for this module, with ThreeFry 3.3 / 2.1 (no gain). Only a
home-made integer hash (murmur3's finaliser twice over the element index) was faster, 2.3 / 1.5:
not worth a dropout mask from an untested generator for about 5 % of a training step.

On a CPU, where kmtl's kernel builds (`kmtl.kernels.dropout`, C++ next to it), the words, the
compare and the scaled select are one pass over memory instead of four TensorFlow ops, and the
gradient one pass instead of two (``Mul`` + ``SelectV2``); its Philox rounds run 16 draws at a
time in AVX-512 registers where the CPU has them, else 8 in AVX2 registers. The same mask and
the same figures to the bit (tests/test_dropout.py). Measured 2026-12-03 (Intel(R) Xeon(R)
Processor, 2 vCPUs, idle, load 1.0-1.1; ``python benchmarks/dropout.py``), forward + backward
at rate 0.1: [32, 12, 64, 64] 1.56 ms against 2.77 in float32, 1.59 against 2.85 in bfloat16;
[32, 64, 384] 1.02 against 1.65 and 1.01 against 1.66. Where it does not build, where a GPU is visible (it has no GPU kernel),
inside an XLA-compiled step (``jit_compile``) or with a ``noise_shape``, the TensorFlow ops below run.

The rate is rounded to a multiple of 2^-16 (0.1 becomes 0.100006) and the kept elements are
scaled by the exact inverse of the rounded keep probability, so the expectation is unchanged.
Keras' bfloat16 dropout is further off: its uniform numbers have 8 significant bits, and at rate
0.1 it drops 10.17 % of the elements.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from kmtl import kernels

LEVELS = 1 << 16


def threshold(rate: float) -> int:
    """The 16-bit level under which an element is dropped: ``round(rate · 2^16)``, at least 1."""
    return min(max(int(round(float(rate) * LEVELS)), 1), LEVELS - 1)


def keep_mask(shape, rate: float, seed):
    """A boolean tensor of ``shape``: True where an element is kept (probability ``1 - threshold/2^16``).

    Args:
        shape: a shape (list or 1-D int tensor).
        rate: the drop probability, in (0, 1).
        seed: a stateless seed, int32 or int64 tensor of shape [2].
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    count = tf.reduce_prod(shape)
    words = tf.random.stateless_uniform(tf.reshape((count + 1) // 2, [1]), seed=seed, minval=None, maxval=None,
                                        dtype=tf.uint32)
    levels = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:count]
    return tf.reshape(levels >= tf.constant(threshold(rate), tf.uint16), shape)


def dropout(inputs, rate: float, seed, noise_shape=None, kernel: bool = True):
    """``inputs`` with each element (or each slice of ``noise_shape``) zeroed with probability
    ``rate``, the rest scaled to keep the expectation; the drop pattern comes from `keep_mask`.
    ``kernel``: kmtl's one-pass kernel where it can run (False: TensorFlow's ops, for an A/B)."""
    ops = kernels.for_dtype("dropout", inputs.dtype) if kernel and noise_shape is None else None
    if ops is not None:
        return _kernel_dropout(ops, inputs, rate, seed)
    shape = tf.shape(inputs)
    if noise_shape is not None:  # Keras' convention: None entries take the input's size
        shape = tf.stack([shape[i] if size is None else tf.constant(size, tf.int32)
                          for i, size in enumerate(noise_shape)])
    keep = keep_mask(shape, rate, seed)
    scale = LEVELS / (LEVELS - threshold(rate))
    return tf.where(keep, inputs * tf.cast(scale, inputs.dtype), tf.zeros([], inputs.dtype))


def _kernel_dropout(ops, inputs, rate, seed):
    """`dropout` by kmtl's kernel: forward and gradient one pass each, the mask kept between them."""
    level = threshold(rate)
    scale = tf.cast(LEVELS / (LEVELS - level), inputs.dtype)
    seed = tf.convert_to_tensor(seed)

    @tf.custom_gradient
    def forward(x):
        y, keep = ops.kmtl_dropout(x, seed, scale, threshold=level)
        return y, lambda dy: ops.kmtl_dropout_grad(dy, keep, scale)

    return forward(inputs)


def _call(layer, inputs, training=False, kernel=True):
    if training and layer.rate > 0:
        # the seed as Keras' own dropout draws it (keras/src/backend/tensorflow/random.py::dropout;
        # private: Keras has no public int32 stateless seed)
        from keras.src.backend.tensorflow.random import _cast_seed, draw_seed

        return dropout(inputs, layer.rate, _cast_seed(draw_seed(layer.seed_generator)), layer.noise_shape,
                       kernel=kernel)
    return inputs


def fast_dropout(model, kernel: bool = True) -> int:
    """Make every ``keras.layers.Dropout`` inside ``model`` (its own class, not subclasses) drop
    with `dropout`; returns how many were changed. `kmtl.model.MultiTaskModel` calls it on
    itself. Layers keep their config (rate, noise shape, seed): a model rebuilt from its config
    calls this again. ``kernel=False``: TensorFlow's ops even where kmtl's kernel runs (for an
    A/B: ``python benchmarks/levers.py dropoutkernel``).

    Example:
        >>> layer = keras.layers.Dropout(0.1)
        >>> fast_dropout(keras.Sequential([layer]))
        1
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False):
        if type(layer) is keras.layers.Dropout and not isinstance(layer.call, functools.partial):
            layer.call = functools.partial(_call, layer, kernel=kernel)
            changed += 1
    return changed
