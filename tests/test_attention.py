"""kmtl.attention: outputs, gradients, masks, dropout and precision against Keras' MultiHeadAttention;
which layers and calls it takes; a kmtl model and its SavedModel and ONNX exports."""

import functools

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from kernel_skip import kernel_or_skip

import kmtl
from kmtl import attention as attention_lib
from kmtl.attention import fast_attention
from kmtl.backbone import Encoder, tiny_encoder
from kmtl.dropout import LEVELS, fast_dropout, threshold

B, T, D, HEADS = 4, 6, 24, 3


def twins(policy="float32", dropout=0.1, seed=0, **kwargs):
    """A Keras layer and a patched one with the same random weights (biases too) and dropout seed."""
    layers = []
    for _ in range(2):
        layer = keras.layers.MultiHeadAttention(HEADS, D // HEADS, dropout=dropout, dtype=policy, seed=7, **kwargs)
        layer.build(query_shape=(None, T, D), value_shape=(None, T, D))
        layers.append(layer)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.4, w.shape).astype(np.float32) for w in layers[0].get_weights()]
    for layer in layers:
        layer.set_weights(weights)
    assert fast_attention(keras.Sequential([layers[1]])) == 1
    return layers


def inputs(seed=0, dtype=tf.float32):
    rng = np.random.default_rng(seed)
    x = tf.cast(tf.constant(rng.normal(0.0, 1.0, (B, T, D)).astype(np.float32)), dtype)
    cotangent = tf.constant(rng.normal(0.0, 1.0, (B, T, D)).astype(np.float32))
    return x, cotangent


def masks(seed=0):
    """No mask; a padding mask [B, 1, S] (as TransformerEncoder passes: int32) with padded rows and one
    example all padding; a [B, T, S] boolean mask with an empty row."""
    padding = np.ones((B, 1, T), np.int32)
    padding[1, :, 3:] = 0
    padding[2, :, 1:] = 0
    padding[3] = 0
    full = np.random.default_rng(seed).random((B, T, T)) < 0.6
    full[:, :, 0] = True
    full[0, 2] = False
    return {"none": None, "padding": tf.constant(padding), "full": tf.constant(full)}


def forward_backward(layer, x, cotangent, mask, training=False, mode="function"):
    """[output, d/dx, d/d every weight] of ``sum(layer(x, x) · cotangent)`` as float32 NumPy."""
    def step(x, cotangent):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, x, attention_mask=mask, training=training), tf.float32)
            loss = tf.reduce_sum(y * cotangent)
        return [y, *tape.gradient(loss, [x, *(w.value for w in layer.trainable_weights)])]

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    return [tf.cast(t, tf.float32).numpy() for t in step(x, cotangent)]


def errors(got, want):
    """Per tensor, the largest difference relative to the largest value of that tensor; the key bias
    has no gradient (it shifts each row of scores by a constant: rounding noise only), so a tensor
    under 1e-3 of the largest gradient is measured against that one."""
    scale = max(np.abs(w).max() for w in want[1:])
    return [np.abs(g - w).max() / (np.abs(w).max() if np.abs(w).max() > 1e-3 * scale else scale)
            for g, w in zip(got, want)]


@pytest.fixture
def fast_calls(monkeypatch):
    """A list that gets an entry whenever a call (or a trace) takes kmtl.attention's path."""
    calls, original = [], attention_lib.self_attention

    def spy(*args, **kwargs):
        calls.append(args[0].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_lib, "self_attention", spy)
    return calls


@pytest.mark.parametrize("dropout", [0.1, 0.0])  # Keras' explicit softmax path; its dot_product_attention path
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_float32_outputs_and_gradients_are_keras(dropout, mode, fast_calls):
    keras_layer, fast = twins(dropout=dropout)
    x, cotangent = inputs()
    for name, mask in masks().items():
        want = forward_backward(keras_layer, x, cotangent, mask, mode=mode)
        got = forward_backward(fast, x, cotangent, mask, mode=mode)
        assert [g.shape for g in got] == [w.shape for w in want]
        assert max(errors(got, want)) < 1e-5, (name, errors(got, want))
    assert set(fast_calls) == {fast.name}  # the fast path ran, for the patched layer only


def test_the_comparison_catches_a_wrong_attention(monkeypatch):
    """The tolerance above is meaningful: query and key projections swapped fail it by far."""
    keras_layer, fast = twins()
    x, cotangent = inputs()
    mask = masks()["padding"]
    want = forward_backward(keras_layer, x, cotangent, mask, mode="eager")
    heads = attention_lib._heads
    swap = {id(fast._query_dense): fast._key_dense, id(fast._key_dense): fast._query_dense}
    monkeypatch.setattr(attention_lib, "_heads", lambda layer, rows, dense, b, t: heads(
        layer, rows, swap.get(id(dense), dense), b, t))
    got = forward_backward(fast, x, cotangent, mask, mode="eager")
    assert errors(got, want)[0] > 1e-2


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_mixed_bfloat16_is_as_close_to_float32_as_keras_bfloat16(dropout, fast_calls):
    keras_bf16, fast = twins("mixed_bfloat16", dropout=dropout)
    reference, _ = twins("float32", dropout=dropout)
    x, cotangent = inputs(seed=3, dtype=tf.bfloat16)  # bfloat16 in: the same tensor as query and value
    mask = masks()["padding"]
    want = forward_backward(reference, tf.cast(x, tf.float32), cotangent, mask)
    theirs = forward_backward(keras_bf16, x, cotangent, mask)
    got = forward_backward(fast, x, cotangent, mask)
    for name, g, k in zip(["y", "dx"] + [w.path for w in fast.trainable_weights], errors(got, want), errors(theirs, want)):
        assert g < 2 ** -4 and g <= 2 * k + 2 ** -7, (name, g, k)  # bfloat16: 8 significant bits
    assert fast(x, x, attention_mask=mask).dtype == keras_bf16(x, x, attention_mask=mask).dtype == tf.bfloat16
    assert fast_calls and set(fast_calls) == {fast.name}


def probe(rate, length=16, batch=256):
    """A patched layer whose output shows the dropped attention probabilities: one head, zero query and
    key projections (uniform probabilities 1/S), identity value and output projections; input
    token s is the unit vector e_s, so ``out[b, t, s]`` is the probability of key s for query t."""
    layer = keras.layers.MultiHeadAttention(1, length, dropout=rate, seed=3)
    layer.build(query_shape=(None, length, length), value_shape=(None, length, length))
    eye = np.eye(length, dtype=np.float32)
    for dense in (layer._query_dense, layer._key_dense):
        dense.kernel.assign(np.zeros((length, 1, length), np.float32))
    layer._value_dense.kernel.assign(eye[:, None, :])
    layer._output_dense.kernel.assign(eye[None])
    fast_dropout(layer)
    assert fast_attention(keras.Sequential([layer])) == 1
    return layer, tf.constant(np.broadcast_to(eye, (batch, length, length)))


def test_dropout_drops_probabilities_at_the_rate_in_training_only():
    rate, length = 0.3, 16
    layer, x = probe(rate, length)
    out = tf.function(lambda x: layer(x, x, training=True))(x).numpy()
    n = out.size
    dropped, want = (out == 0).mean(), threshold(rate) / LEVELS  # kmtl.dropout's rate (rounded to 2^-16)
    assert abs(dropped - want) < 5 * (want * (1 - want) / n) ** 0.5, (dropped, want)
    np.testing.assert_allclose(out[out != 0], LEVELS / (LEVELS - threshold(rate)) / length, rtol=1e-6)
    assert not np.array_equal(out, layer(x, x, training=True).numpy())  # a new draw each call
    np.testing.assert_allclose(layer(x, x, training=False), np.full(out.shape, 1.0 / length), rtol=1e-6)
    mask = np.ones((x.shape[0], 1, length), np.int32)
    mask[:, :, length // 2:] = 0  # the second half of the keys padded
    masked = layer(x, x, attention_mask=tf.constant(mask), training=True).numpy()
    assert (masked[..., length // 2:] == 0).all()
    assert 0.6 < (masked[..., : length // 2] != 0).mean() < 0.8


def test_training_draws_the_same_dropout_as_keras():
    """Same seed, same attention dropout layer (kmtl.dropout): the same drops, outputs and gradients."""
    keras_layer, fast = twins(dropout=0.5)
    assert fast_dropout(keras_layer) == fast_dropout(fast) == 1
    x, cotangent = inputs(seed=5)
    mask = masks()["padding"]
    for _ in range(2):
        want = forward_backward(keras_layer, x, cotangent, mask, training=True, mode="eager")
        got = forward_backward(fast, x, cotangent, mask, training=True, mode="eager")
        assert max(errors(got, want)) < 1e-5, errors(got, want)
    assert np.abs(got[0] - forward_backward(fast, x, cotangent, mask, mode="eager")[0]).max() > 1e-3


def test_patching_is_idempotent_and_other_layers_and_calls_keep_keras(fast_calls):
    class Custom(keras.layers.MultiHeadAttention):
        pass

    def built(layer, shape=(None, T, D)):
        layer.build(query_shape=shape, value_shape=shape)
        return layer

    quantized = built(keras.layers.MultiHeadAttention(HEADS, 8))
    quantized._query_dense.quantize("int8")
    others = [built(keras.layers.MultiHeadAttention(HEADS, 8, use_gate=True)),
              built(keras.layers.MultiHeadAttention(HEADS, 8, output_shape=(7,))),
              built(keras.layers.MultiHeadAttention(HEADS, 8, attention_axes=(2,)), (None, 3, T, D)),
              built(keras.layers.MultiHeadAttention(HEADS, 8, sliding_window=2)),
              built(Custom(HEADS, 8)), built(keras_hub.layers.CachedMultiHeadAttention(HEADS, 8)), quantized,
              keras.layers.MultiHeadAttention(HEADS, 8)]  # not built
    keras_layer, fast = twins()
    model = keras.Sequential([fast, *others])
    config = fast.get_config()
    assert fast_attention(model) == 0  # fast: already patched by twins()
    assert isinstance(fast.call, functools.partial) and not any("call" in vars(layer) for layer in others)
    assert fast.get_config() == config
    # calls that are not self-attention, or ask for more, run Keras' call: the same results
    fast_calls.clear()
    x, _ = inputs()
    other, _ = inputs(seed=1)
    mask = masks()["padding"]
    for kwargs in ({"value": other}, {"value": x, "key": other}, {"value": x, "use_causal_mask": True},
                   {"value": x, "query_mask": tf.constant(np.repeat((np.arange(T) < 4)[None], B, 0))}):
        np.testing.assert_allclose(fast(x, attention_mask=mask, **kwargs), keras_layer(x, attention_mask=mask, **kwargs),
                                   atol=1e-6)
    got, got_scores = fast(x, x, attention_mask=mask, return_attention_scores=True)
    want, want_scores = keras_layer(x, x, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
    assert not fast_calls
    # symbolic inputs: a functional model through the patched layer
    inp = keras.Input((T, D))
    functional = keras.Model(inp, fast(inp, inp))
    np.testing.assert_allclose(functional(x), keras_layer(x, x), atol=1e-5)


def test_lora_projections_are_computed_with_the_merged_kernel(fast_calls):
    keras_layer, fast = twins()
    for layer in (keras_layer, fast):  # as kmtl.sharing.LoRA does (here after patching), random factors
        rng = np.random.default_rng(4)
        for dense in (layer._query_dense, layer._value_dense):
            dense.enable_lora(2, lora_alpha=4.0)
            for kernel in (dense.lora_kernel_a, dense.lora_kernel_b):
                kernel.assign(rng.normal(0.0, 0.5, kernel.shape))
    x, cotangent = inputs(seed=4)
    mask = masks()["padding"]
    want = forward_backward(keras_layer, x, cotangent, mask)
    got = forward_backward(fast, x, cotangent, mask)
    assert len(got) == 2 + 6 + 4  # LoRA freezes the two kernels; its four factors train
    assert max(errors(got, want)) < 1e-5, errors(got, want)
    assert fast_calls


def tiny_with_dropout():
    """The tiny test BERT with dropout 0.1 (tiny_encoder has none): Keras' explicit attention path."""
    tiny = tiny_encoder(seed=0)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=tiny.backbone.vocabulary_size, num_layers=2, num_heads=2,
                                             hidden_dim=32, intermediate_dim=64, max_sequence_length=512, dropout=0.1)
    return Encoder(backbone, tiny.tokenizer, "tiny")


TEXTS = ["a good film", "a bad plot and a very long ending that goes on", "fine"]


@pytest.mark.parametrize("encoder", [tiny_encoder, tiny_with_dropout])
def test_a_kmtl_model_computes_the_same(encoder, fast_calls):
    model = kmtl.build_model(encoder(), [kmtl.tasks.Classification("s", ["a", "b"]),
                                         kmtl.tasks.Tagging("t", ["O", "B-X", "I-X"])])
    attention = [layer for layer in model._flatten_layers() if type(layer) is keras.layers.MultiHeadAttention]
    assert len(attention) == 2
    for layer in attention:  # Keras' call, whether or not MultiTaskModel patches them itself
        vars(layer).pop("call", None)
    x = dict(model.preprocessor.encode_text(tf.constant(TEXTS)))  # padded rows
    assert not x["padding_mask"].numpy().all()
    config, weights = model.get_config(), [w.numpy() for w in model.weights]

    @tf.function
    def outputs_and_gradients(x):
        with tf.GradientTape() as tape:
            out = model(x)
            loss = tf.reduce_sum(out["s"] * tf.constant([1.0, -2.0])) + tf.reduce_sum(out["t"] * tf.constant([0.5, 3.0, -1.0]))
        return out, tape.gradient(loss, model.trainable_variables)

    before, grads_before = outputs_and_gradients(x)
    assert fast_attention(model) == 2 and fast_attention(model) == 0
    assert all(isinstance(layer.call, functools.partial) for layer in attention)
    fast_calls.clear()
    after, grads_after = tf.function(outputs_and_gradients.python_function)(x)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], atol=1e-5)
    for g, k in zip(grads_after, grads_before):
        g, k = tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(k).numpy()
        np.testing.assert_allclose(g, k, atol=1e-5 * max(1.0, np.abs(k).max()))
    assert sorted(fast_calls) == sorted(layer.name for layer in attention)  # traced once, through kmtl.attention
    assert model.get_config() == config
    assert all(np.array_equal(w.numpy(), v) for w, v in zip(model.weights, weights))


def test_saved_model_and_onnx_exports_of_a_patched_model(tmp_path, fast_calls):
    import onnxruntime as ort

    from kmtl.export import export_onnx, export_saved_model

    encoder = tiny_with_dropout()
    model = kmtl.build_model(encoder, [kmtl.tasks.Classification("s", ["a", "b"])])
    assert fast_attention(model) == 0  # MultiTaskModel patched its 2 attention layers itself
    pre = encoder.preprocessor(16)
    x = {k: v.numpy() for k, v in pre.encode_text(tf.constant(TEXTS)).items() if k != "task_id"}
    want = model(x, training=False)["s"].numpy()

    fast_calls.clear()
    loaded = tf.saved_model.load(str(export_saved_model(model, pre, tmp_path, "saved")))
    assert fast_calls  # the serving graph was traced through kmtl.attention
    ids = loaded.signatures["ids"]
    got = ids(**{k: tf.constant(v) for k, v in x.items() if k in ids.structured_input_signature[1]})["s"]
    np.testing.assert_allclose(got, want, atol=1e-5)

    fast_calls.clear()
    onnx_path = export_onnx(model, tmp_path, "onnx", max_length=16)
    assert fast_calls
    session = ort.InferenceSession(str(onnx_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: x[i.name] for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(["s"], feed)[0], want, atol=1e-4)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
@pytest.mark.parametrize("shape", [[3, 7], [2, 3, 5, 64], [4, 1, 37]])
def test_the_softmax_gradient_kernel_is_tensorflows_within_rounding(dtype, shape):
    kernel_or_skip("softmax")
    rng = np.random.default_rng(5)
    scores = tf.cast(rng.normal(0.0, 3.0, shape).astype(np.float32), dtype)
    dy = tf.cast(rng.normal(0.0, 1.0, shape).astype(np.float32), dtype)
    grads = {}
    for kernel in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(scores)
            y = attention_lib.softmax(scores, kernel=kernel)
        grads[kernel] = tf.cast(tape.gradient(y, scores, output_gradients=dy), tf.float32).numpy()
        np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(tf.nn.softmax(scores), tf.float32))
    # float64 from the same y and dy: the kernel rounds once to the dtype (float32 inside), TensorFlow's
    # ops at each step, so the kernel is as close as they are, or closer
    y64, dy64 = (tf.cast(t, tf.float64).numpy() for t in (tf.nn.softmax(scores), dy))
    want = (dy64 - (dy64 * y64).sum(-1, keepdims=True)) * y64
    scale = np.abs(want).max()
    errors = {kernel: np.abs(g - want).max() / scale for kernel, g in grads.items()}
    tolerance = {tf.float32: 1e-6, tf.bfloat16: 2 ** -8, tf.float16: 2 ** -11}[dtype]
    assert errors[True] <= tolerance, errors
    assert errors[True] <= errors[False] + tolerance / 4, errors


def test_the_softmax_kernel_is_in_training_graphs_only():
    ops = kernel_or_skip("softmax")
    scores = tf.random.stateless_normal([2, 3, 4], seed=[1, 2])

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = attention_lib.softmax(x)
        return tape.gradient(y, x, output_gradients=tf.ones_like(x) * tf.range(4.0))

    kinds = {op.type for op in tf.function(step).get_concrete_function(scores).graph.get_operations()}
    assert "KmtlSoftmaxGrad" in kinds
    inference = tf.function(attention_lib.softmax).get_concrete_function(scores).graph
    assert "KmtlSoftmaxGrad" not in {op.type for op in inference.get_operations()}  # no tape: the plain op
    xla = tf.function(step, jit_compile=True)
    np.testing.assert_allclose(xla(scores), tf.function(step)(scores), atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="y and dy differ in shape"):
        ops.kmtl_softmax_grad(tf.ones([2, 3]), tf.ones([2, 4]))
