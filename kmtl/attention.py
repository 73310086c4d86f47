"""Self-attention in plain matrix products: fewer, cheaper TensorFlow ops than Keras' MultiHeadAttention.

keras-hub 0.32's ``TransformerEncoder`` (BERT, MiniLM) attends with ``keras.layers.MultiHeadAttention``
itself (keras-hub's ``CachedMultiHeadAttention`` subclass is only in its decoders): three
``EinsumDense`` projections to [B, T, heads, head_dim], the query scaled, ``einsum`` for the scores
and for the context, a ``Softmax`` layer that masks with two ``tf.where`` (before, and after to zero
rows with no key allowed), the attention dropout, an ``EinsumDense`` output projection. TensorFlow
runs each einsum as reshapes and transposes around a ``BatchMatMulV2`` (17 of them in a layer's
forward + backward, against 6 here). `self_attention` computes the same function as:

* each projection a 2-D ``MatMul`` + ``BiasAdd`` (one oneDNN op, ``_MklNativeFusedMatMul``) and one
  reshape + transpose to [B, N, T, H]; the bias gradients as GEMVs (`_bias_add`);
* scores ``BatchMatMul(q, kᵀ) · scale + mask`` (0 or -1e9: the same exp() = 0 as Keras' where),
  which Grappler's remapper fuses into one oneDNN op (``_MklFusedBatchMatMulV2``); the zeroing of
  rows with no key allowed behind a ``tf.cond`` (no real batch has one);
* the softmax in the compute dtype and the layer's own attention dropout (`kmtl.dropout` when the
  model has it), the context ``BatchMatMul(probs, v)``, one transpose and a 2-D output ``MatMul``.

With dropout 0, Keras calls ``ops.dot_product_attention`` instead (float32 softmax, ``tf.where``
masking, an empty row uniform): `self_attention` follows that one then.

Measured 2026-12-02 on an Intel Xeon with AMX (lscpu: Intel(R) Xeon(R) Processor, 2 vCPUs, shared
with a test suite and a training run), forward + backward of one layer, [32, 64, 384], 12 heads,
padding mask (``python benchmarks/attention.py``, load 1.1 -> 1.4, ahead in 12 of 12 rounds): float32
26.88 ms against 31.68 for Keras, bfloat16 13.36 against 15.69 (-15 % both). MiniLM-L6 training,
batch 32 x 64 (``python benchmarks/levers.py attention --rounds 4 --steps 8``): bfloat16 44.17
against 41.99 examples/s (+5.2 %, ahead in 4 of 4 rounds), float32 25.90 against 25.05 (+3.4 %),
load 6.4 -> 4.1; again, load 3.5 -> 4.2: bfloat16 42.02 against 41.12 (+2.2 %, 3 of 4, one tie),
float32 25.32 against 24.13 (+4.9 %); the bfloat16 pair alone (``--variants
data=fixed,precision=mixed_bfloat16,attention=1 data=fixed,precision=mixed_bfloat16,attention=0
--rounds 8 --steps 8``, load 3.8 -> 3.8): 41.19 against 38.96 (+5.7 %, 7 of 8); the preset once more
with the other jobs paused (load 1.8 -> 1.8): bfloat16 75.39 against 73.87 (+2.1 %, 3 of 4, one tie),
float32 50.86 against 48.48 (+4.9 %, 4 of 4). Inference of the whole
model, batch 32 x 64, ``training=False`` (``python benchmarks/attention.py --model minilm-l6``, load
1.4 -> 2.0, 11 of 12 rounds each): float32 179.3 ms against 192.4 (-6.8 %), bfloat16 116.6 against 120.1
(-2.9 %).

The softmax's gradient (`softmax`): on a CPU where kmtl's kernel builds (`kmtl.kernels.softmax`),
``(dy - Σ dy·y)·y`` in one pass, float32 inside, instead of TensorFlow's Mul, Sum, Sub and Mul over
the [B, N, T, S] probabilities (training only; inference graphs keep the plain op). Measured
2026-12-03 (Intel(R) Xeon(R) Processor, 2 vCPUs, idle), softmax + dropout forward + backward of
[32, 12, 64, 64] (``python benchmarks/softmax_dropout.py``, 16:02, load 1.4-1.6): float32 3.03 ms
against 4.01, bfloat16 3.89 against 4.64; MiniLM-L6 training, 32 x 64 (``python
benchmarks/levers.py softmaxkernel --rounds 8 --steps 8``, 15:56-16:06, load 1.2-2.4, a noisy
hour): bfloat16 101.4 against 95.6 examples/s (+6.1 %, ahead in 7 of 8 rounds), float32 47.2
against 41.8 (ahead in 5 of 8; the four quiet rounds alone +0.9 %).

Measured and dropped (same machine, load 4.5-5.5): one [d, 3d] query/key/value GEMM on the three
kernels concatenated inside the step, split after one transpose (the issue's idea): no faster than
three [d, d] GEMMs, on this CPU a [2048, 384] x [384, 1152] bfloat16 GEMM takes as long as three
[384, 384] ones (2.01 against 2.13 ms forward, 2.07 / 2.12 for dX, 3.30 / 3.29 for dW; float32
9.9 / 9.5), and the whole layer 25.52 against 25.36 ms bfloat16 (24 rounds), so the projections stay
three (no concatenation of kernels, nor split of their gradients); the scale folded into the query
kernel and bias (within the noise, ±3 %: the scale stays on the scores, where it fuses); the mask by
``tf.where`` like Keras (2-4 % slower); TensorFlow's ``BiasAddGrad`` (about 2 % slower); empty rows
zeroed by a multiply in every call (one more full-size op each way, about 3 % slower).
"""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf

from kmtl import kernels
from kmtl.tape import training_tensor

PROJECTION = "abc,cde->abde"   # EinsumDense equations of MultiHeadAttention on [batch, length, hidden] inputs
OUTPUT = "abcd,cde->abe"


def _plain(dense, equation: str) -> bool:
    """An ``EinsumDense`` that computes ``equation`` with its ``kernel`` (+ bias): no quantization,
    activation or activity regularizer, which Keras' own call would apply. LoRA is fine: the
    ``kernel`` property is the merged kernel ``W + alpha/rank · A·B``, what Keras' call uses too."""
    return (type(dense) is keras.layers.EinsumDense and dense.built and dense.equation == equation
            and dense.activation in (None, keras.activations.linear)
            and getattr(dense, "quantization_mode", None) is None and dense.activity_regularizer is None)


def _supported(layer) -> bool:
    """The configuration of BERT's self-attention, as keras-hub's ``TransformerEncoder`` builds it."""
    if type(layer) is not keras.layers.MultiHeadAttention or not layer.built:
        return False
    # private attributes of keras/src/layers/attention/multi_head_attention.py (Keras 3.15): the
    # projections and the settings have no public accessors (query_dense etc. are read-only aliases)
    projections = (layer._query_dense, layer._key_dense, layer._value_dense)
    return (tuple(layer._attention_axes or ()) == (1,) and not getattr(layer, "_use_gate", False)
            and not layer._output_shape and getattr(layer, "_sliding_window", None) is None
            and not layer._flash_attention and layer.activity_regularizer is None
            and all(_plain(dense, PROJECTION) for dense in projections) and _plain(layer._output_dense, OUTPUT)
            and len({dense.bias is None for dense in (*projections, layer._output_dense)}) == 1
            and layer._key_dim == layer._value_dim)


def _bias_add(x, bias):
    """``x + bias`` over the last axis of a matrix ``x``, the bias gradient as ``ones @ dy``: oneDNN's
    GEMV is faster than TensorFlow's ``BiasAddGrad`` reduction (0.78 against 1.8 ms float32, 0.86
    against 1.17 bfloat16, for [2048, 1152])."""

    @tf.custom_gradient
    def _add(x, bias):
        def grad(dy):
            return dy, tf.reshape(tf.matmul(tf.ones([1, tf.shape(dy)[0]], dy.dtype), dy), tf.shape(bias))

        return tf.nn.bias_add(x, bias), grad

    return _add(x, bias)


def softmax(scores, kernel: bool = True):
    """``tf.nn.softmax(scores, axis=-1)``; while a gradient tape records (training), on a CPU where
    kmtl's kernel builds (`kmtl.kernels.softmax`), its gradient ``(dy - Σ dy·y)·y`` in one pass
    instead of TensorFlow's Mul, Sum, Sub, Mul (the same figures within float rounding). Inference
    graphs (SavedModel, ONNX) keep the plain op. ``kernel=False``: TensorFlow's gradient (an A/B).

    Example:
        >>> softmax(tf.constant([[0.0, 0.0]])).numpy()
        array([[0.5, 0.5]], dtype=float32)
    """
    ops = kernels.for_dtype("softmax", scores.dtype) if kernel and training_tensor(scores) else None
    if ops is None:
        return tf.nn.softmax(scores, axis=-1)

    @tf.custom_gradient
    def forward(x):
        y = tf.nn.softmax(x, axis=-1)
        return y, lambda dy: ops.kmtl_softmax_grad(y, tf.cast(dy, y.dtype))

    return forward(scores)


def _heads(layer, rows, dense, batch, length):
    """``rows`` [B·T, D] projected by ``dense`` (kernel [D, N, H]) as [B, N, T, H]."""
    kernel = dense.kernel  # (a property: with LoRA, the merged kernel is computed on each access)
    d, n, h = kernel.shape
    out = tf.matmul(rows, tf.reshape(tf.cast(kernel, rows.dtype), [d, n * h]))
    if dense.bias is not None:
        out = _bias_add(out, tf.reshape(tf.cast(dense.bias, rows.dtype), [n * h]))
    return tf.transpose(tf.reshape(out, [batch, length, n, h]), [0, 2, 1, 3])


def self_attention(layer, x, attention_mask=None, training=None, softmax_kernel: bool = True):
    """What ``layer(x, x, attention_mask=attention_mask, training=training)`` computes, for a
    ``keras.layers.MultiHeadAttention`` that `fast_attention` supports, with its weights.

    Args:
        layer: a built, supported ``MultiHeadAttention``.
        x: [batch, length, hidden], in the layer's compute dtype.
        attention_mask: True (or non-zero) where a query may attend to a key: [B, T, S], or any shape
            that Keras expands to [B, N, T, S] by inserting axes before the last two ([B, 1, S] for a
            padding mask, as keras-hub's ``TransformerEncoder`` passes).
        training: whether the attention dropout drops.
        softmax_kernel: False: TensorFlow's softmax gradient, not kmtl's kernel (an A/B lever).
    """
    dtype = layer.compute_dtype
    x = tf.cast(x, dtype)
    shape = tf.shape(x)
    batch, length = shape[0], shape[1]
    rows = tf.reshape(x, [-1, x.shape[-1] if x.shape[-1] is not None else shape[2]])
    q, k, v = (_heads(layer, rows, dense, batch, length)
               for dense in (layer._query_dense, layer._key_dense, layer._value_dense))
    scale = 1.0 / math.sqrt(float(layer._key_dim))
    scores = tf.matmul(q, k, transpose_b=True)  # [B, N, T, S]
    mask = None
    if attention_mask is not None:
        mask = tf.cast(attention_mask, tf.bool)
        while mask.shape.rank < 4:  # Keras' MultiHeadAttention._masked_softmax: new axes before [T, S]
            mask = tf.expand_dims(mask, -3)
    if layer._dropout > 0.0:
        # Keras' explicit path: scores scaled in the compute dtype, Softmax layer (masked positions set
        # to -1e9, -3e4 in float16) in the compute dtype, rows with no key allowed zeroed, dropout.
        # Here the mask is added: BatchMatMul, Mul by a constant and AddV2 are one oneDNN op
        # (_MklFusedBatchMatMulV2, Grappler's remapper); masked positions get the same exp() = 0.
        scores = scores * tf.constant(scale, dtype)
        if mask is not None:
            negative = -3e4 if scores.dtype == tf.float16 else -1e9
            scores = scores + tf.where(mask, tf.zeros([], dtype), tf.constant(negative, dtype))
        probs = layer._dropout_layer(softmax(scores, kernel=softmax_kernel), training=training)
        context = tf.matmul(probs, v)  # [B, N, T, H]
        if mask is not None:
            # Keras zeroes the probabilities of a row with no key allowed (there the softmax is uniform);
            # zeroing its context is the same, and skipped when no row is empty (any real batch)
            keep = tf.reduce_any(mask, axis=-1, keepdims=True)
            context = tf.cond(tf.reduce_all(keep), lambda: context, lambda: context * tf.cast(keep, dtype))
    else:
        # Keras' ops.dot_product_attention (no dropout): the logits cast to float32, then scaled, masked
        # with tf.where (an empty row: uniform) and normalized in float32
        scores = tf.cast(scores, tf.float32) * scale
        if mask is not None:
            scores = tf.where(mask, scores, tf.constant(-1e9, tf.float32))
        context = tf.matmul(tf.cast(softmax(scores, kernel=softmax_kernel), dtype), v)
    n, h = layer._num_heads, layer._value_dim
    context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, n * h])
    dense = layer._output_dense
    kernel = dense.kernel
    hidden = kernel.shape[-1]
    out = tf.matmul(context, tf.reshape(tf.cast(kernel, dtype), [n * h, hidden]))
    if dense.bias is not None:
        out = _bias_add(out, tf.cast(dense.bias, dtype))
    return tf.reshape(out, [batch, length, hidden])  # (not -1: an empty batch cannot infer it)


def _call(layer, query, value, key=None, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
          return_attention_scores=False, training=None, use_causal_mask=False, softmax_kernel=True):
    # keras.src.backend.get_keras_mask (private, no public equivalent): Keras masks attached to the inputs
    from keras.src.backend import get_keras_mask

    # self-attention: the same tensor as query and value (what TransformerEncoder passes; Keras'
    # autocast of a float32 input to a bfloat16 layer makes two tensors of one: then Keras' call runs)
    if (not tf.is_tensor(query) or isinstance(query, tf.SparseTensor) or query.shape.rank != 3
            or not _supported(layer)  # again: LoRA may have been enabled, the layer quantized, since patching
            or value is not query or (key is not None and key is not query)
            or return_attention_scores or use_causal_mask
            or any(m is not None for m in (query_mask, value_mask, key_mask, get_keras_mask(query)))):
        return keras.layers.MultiHeadAttention.call(
            layer, query, value, key=key, query_mask=query_mask, value_mask=value_mask, key_mask=key_mask,
            attention_mask=attention_mask, return_attention_scores=return_attention_scores, training=training,
            use_causal_mask=use_causal_mask)
    return self_attention(layer, query, attention_mask, training, softmax_kernel=softmax_kernel)


def fast_attention(model, softmax_kernel: bool = True) -> int:
    """Make every ``keras.layers.MultiHeadAttention`` inside ``model`` (its own class, not subclasses
    such as keras-hub's ``CachedMultiHeadAttention``) whose configuration is BERT's compute
    self-attention with `self_attention`; returns how many were changed.

    Supported: built, attention over axis 1 of [batch, length, hidden] inputs, ``EinsumDense``
    projections without quantization, activation or activity regularizer (LoRA is fine), no gate,
    output shape, sliding window or flash attention. Each call still falls back to Keras' own when it is not self-attention
    (``value`` or ``key`` another tensor), or asks for ``return_attention_scores``,
    ``use_causal_mask`` or Keras masks, or gets symbolic inputs. The weights, the attention dropout
    layer (and its seed) and the config are the layer's own: saving, loading and exports are unaffected;
    a model rebuilt from its config must call this again. ``softmax_kernel=False``: the softmax's
    gradient by TensorFlow's ops, not kmtl's kernel (an A/B: ``python benchmarks/levers.py softmaxkernel``).

    Example:
        >>> layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
        >>> layer.build(query_shape=(None, 5, 8), value_shape=(None, 5, 8))
        >>> fast_attention(keras.Sequential([layer]))
        1
        >>> x = tf.ones([1, 5, 8])
        >>> layer(x, x).shape   # the same tensor as query and value: self-attention, computed here
        TensorShape([1, 5, 8])
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False):
        if _supported(layer) and not isinstance(layer.call, functools.partial):
            layer.call = functools.partial(_call, layer, softmax_kernel=softmax_kernel)
            changed += 1
    return changed
