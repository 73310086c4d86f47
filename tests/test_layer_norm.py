"""kmtl.layer_norm: the function, the gradients and the model's layers, against Keras' LayerNormalization."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from kernel_skip import kernel_or_skip

import kmtl
from kmtl.layer_norm import fast_layer_norm, layer_norm

D = 16


def inputs(seed=0, constant_row=True):
    """[3, 5, D] and a cotangent: random rows with an offset, a zero row, a row whose variance (1e-4)
    is below epsilon = 1e-3 (there the epsilon decides the result) and a constant row of 5s (where
    Keras' own float32 formula, ``x·s + (beta - mean·s)`` with s about 1e6 at epsilon 1e-12, loses
    its digits: it is compared with the float64 reference only)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 3.0, (3, 5, D)).astype(np.float32)
    x[0, 4] = 0.0
    x[2, 3] = rng.permutation([-1e-2, 1e-2] * (D // 2))
    if constant_row:
        x[1, 0] = 5.0
    return tf.constant(x), tf.constant(rng.normal(0.0, 1.0, (3, 5, D)).astype(np.float32))


def reference(x, w, gamma, beta, epsilon):
    """Output and gradients (x, gamma, beta) of ``sum(layer_norm(x) · w)`` in float64, by the closed form."""
    x, w, gamma = (np.asarray(t, np.float64) for t in (x, w, gamma))
    rstd = 1.0 / np.sqrt(x.var(-1, keepdims=True) + epsilon)
    xhat = (x - x.mean(-1, keepdims=True)) * rstd
    g = w * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    return [xhat * gamma + np.asarray(beta, np.float64), dx, (w * xhat).sum((0, 1)), w.sum((0, 1))]


def twin(dtype, epsilon, seed=1):
    """A built LayerNormalization of ``dtype`` with random gamma and beta."""
    layer = keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype)
    layer.build((None, None, D))
    rng = np.random.default_rng(seed)
    layer.gamma.assign(rng.normal(1.0, 0.5, D).astype(np.float32))
    layer.beta.assign(rng.normal(0.0, 0.5, D).astype(np.float32))
    return layer


def forward_backward(layer, x, w, mode):
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
        return [tf.cast(y, tf.float32), *tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])]

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    return [t.numpy() for t in step(x, w)]


def error(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


NAMES = ("y", "dx", "dgamma", "dbeta")


@pytest.mark.parametrize("epsilon", [1e-12, 1e-3])
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_float32_outputs_and_gradients_are_keras(epsilon, mode):
    keras_layer, fast = twin("float32", epsilon), twin("float32", epsilon)
    assert fast_layer_norm(keras.Sequential([fast])) == 1
    x, w = inputs(constant_row=False)
    for name, g, k in zip(NAMES, forward_backward(fast, x, w, mode), forward_backward(keras_layer, x, w, mode)):
        assert g.dtype == np.float32 and g.shape == k.shape
        assert error(g, k) < 2e-6, (name, error(g, k))
    x, w = inputs()
    got = forward_backward(fast, x, w, mode)
    for name, g, r in zip(NAMES, got, reference(x, w, fast.gamma.numpy(), fast.beta.numpy(), epsilon)):
        assert error(g, r) < 2e-6, (name, error(g, r))
    np.testing.assert_allclose(got[0][0, 4], fast.beta.numpy(), atol=1e-6)  # a zero row: beta
    np.testing.assert_allclose(got[0][1, 0], fast.beta.numpy(), atol=1e-6)  # a constant row too
    # the small-variance row, scaled by 1 / sqrt(var + epsilon)
    np.testing.assert_allclose(np.abs(got[0][2, 3] - fast.beta.numpy()),
                               np.abs(fast.gamma.numpy()) * 1e-2 / (1e-4 + epsilon) ** 0.5, rtol=1e-4)


@pytest.mark.parametrize("epsilon", [1e-12, 1e-3])
def test_mixed_bfloat16_is_as_close_to_float32_as_keras_bfloat16(epsilon):
    keras_bf16, fast = twin("mixed_bfloat16", epsilon), twin("mixed_bfloat16", epsilon)
    assert fast_layer_norm(keras.Sequential([fast])) == 1
    for constant_row in (False, True):
        x, w = inputs(seed=2, constant_row=constant_row)
        x = tf.cast(tf.cast(x, tf.bfloat16), tf.float32)  # what a bfloat16 layer sees
        # the cotangent of a bfloat16 output is bfloat16
        want = reference(x, tf.cast(tf.cast(w, tf.bfloat16), tf.float32), fast.gamma.numpy(), fast.beta.numpy(), epsilon)
        got = forward_backward(fast, x, w, "function")
        theirs = forward_backward(keras_bf16, x, w, "function")
        for name, g, k, r in zip(NAMES, got, theirs, want):
            assert error(g, r) < 2 ** -8, (name, error(g, r))  # bfloat16: 8 significant bits
            if not constant_row:  # (there Keras is further off)
                assert error(g, r) <= 2 * error(k, r) + 1e-6, (name, error(g, r), error(k, r))
    assert fast(x).dtype == keras_bf16(x).dtype == tf.bfloat16


def test_layer_norm_of_other_ranks_and_dtypes():
    x = tf.constant([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = layer_norm(x, tf.ones([3]), tf.zeros([3]), 1e-12)
    np.testing.assert_allclose(y, [[-1.2247449, 0.0, 1.2247449], [0.0, 0.0, 0.0]], atol=1e-6)
    half = layer_norm(tf.cast(x, tf.float16), tf.ones([3]), tf.zeros([3]), 1e-12)
    assert half.dtype == tf.float16
    np.testing.assert_allclose(half.numpy().astype(np.float32), y, atol=2e-3)


def test_patching_is_idempotent_and_other_configurations_keep_keras_call():
    class Custom(keras.layers.LayerNormalization):
        pass

    plain = keras.layers.LayerNormalization()
    others = [keras.layers.LayerNormalization(axis=1), keras.layers.LayerNormalization(axis=[1, 2]),
              keras.layers.LayerNormalization(center=False), keras.layers.LayerNormalization(scale=False),
              Custom(), keras.layers.RMSNormalization()]
    model = keras.Sequential([keras.Input((4, D)), plain, *others])
    config = model.get_config()
    assert fast_layer_norm(model) == 1
    assert isinstance(plain.call, functools.partial)
    assert not any("call" in vars(layer) for layer in others)
    assert fast_layer_norm(model) == 0  # nothing replaced twice
    assert model.get_config() == config
    x = tf.random.normal([2, 4, D])
    np.testing.assert_allclose(model(x), tf.function(model)(x), atol=1e-5)


def test_a_kmtl_model_is_patched_and_computes_the_same():
    model = kmtl.build_model(kmtl.load_backbone("tiny"), [kmtl.tasks.Classification("s", ["a", "b"])])
    norms = [layer for layer in model._flatten_layers() if type(layer) is keras.layers.LayerNormalization]
    assert len(norms) == 5  # the embeddings' + 2 per transformer layer (tiny: 2 layers)
    for layer in norms:  # Keras' call, whether or not MultiTaskModel patches them itself
        vars(layer).pop("call", None)
    x = dict(model.preprocessor.encode_text(tf.constant(["a good film", "a bad plot and a very long ending"])))
    config, weights = model.get_config(), [w.numpy() for w in model.weights]

    def outputs_and_gradients():
        with tf.GradientTape() as tape:
            out = model(x)["s"]
            loss = tf.reduce_sum(out * tf.constant([[1.0, -2.0], [0.5, 3.0]]))
        return out.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]

    before, grads_before = outputs_and_gradients()
    assert fast_layer_norm(model) == 5 and fast_layer_norm(model) == 0
    assert all(isinstance(layer.call, functools.partial) for layer in norms)
    after, grads_after = outputs_and_gradients()
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert len(grads_after) == len(grads_before)
    for g, k in zip(grads_after, grads_before):
        np.testing.assert_allclose(g, k, atol=1e-5 * max(1.0, np.abs(k).max()))
    assert model.get_config() == config
    assert all(np.array_equal(w.numpy(), v) for w, v in zip(model.weights, weights))


def _forward_backward_of(x, gamma, beta, dy, kernel, epsilon=1e-12):
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        y = layer_norm(x, gamma, beta, epsilon, kernel=kernel)
    return [t.numpy().astype(np.float32) for t in (y, *tape.gradient(y, [x, gamma, beta], output_gradients=dy))]


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
@pytest.mark.parametrize("shape", [[4, 1], [3, 5, 37], [300, 384], [2, 70, 16]])
def test_the_kernel_gives_the_ops_figures_within_rounding(dtype, shape):
    kernel_or_skip("layer_norm")
    rng = np.random.default_rng(3)
    x = tf.cast(rng.normal(2.0, 3.0, shape).astype(np.float32), dtype)
    dy = tf.cast(rng.normal(0.0, 1.0, shape).astype(np.float32), dtype)
    gamma = tf.constant(rng.normal(1.0, 0.5, shape[-1]).astype(np.float32))
    beta = tf.constant(rng.normal(0.0, 0.5, shape[-1]).astype(np.float32))
    got = _forward_backward_of(x, gamma, beta, dy, kernel=True)
    want = _forward_backward_of(x, gamma, beta, dy, kernel=False)
    # float32 inside both: the results differ by the order of the sums, then by one rounding to x's dtype
    tolerance = {tf.float32: 1e-5, tf.bfloat16: 2 ** -7, tf.float16: 2 ** -10}[dtype]
    for name, g, w in zip(NAMES, got, want):
        assert g.shape == w.shape, name
        scale = max(np.abs(w).max(), 1e-6)
        assert np.abs(g - w).max() <= tolerance * scale, (name, np.abs(g - w).max() / scale)
    # the same figures run after run (the row blocks' partial sums are added in block order)
    again = _forward_backward_of(x, gamma, beta, dy, kernel=True)
    for g, a in zip(got, again):
        np.testing.assert_array_equal(g, a)


def test_the_kernel_runs_in_a_compiled_step_and_xla_takes_the_ops():
    kernel_or_skip("layer_norm")
    layer = twin("float32", 1e-12)
    fast_layer_norm(keras.Sequential([layer]))
    x, w = inputs(constant_row=False)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * w)
        return tape.gradient(loss, x)

    graph = tf.function(step).get_concrete_function(x).graph  # a tape records: kmtl's training path
    kinds = {op.type for op in graph.get_operations()}
    assert {"KmtlLayerNorm", "KmtlLayerNormGrad"} <= kinds
    xla = tf.function(step, jit_compile=True).get_concrete_function(x).graph
    assert not {op.type for op in xla.get_operations()} & {"KmtlLayerNorm", "KmtlLayerNormGrad"}
    np.testing.assert_allclose(tf.function(step, jit_compile=True)(x), tf.function(step)(x), rtol=2e-5, atol=1e-5)


def test_the_kernel_says_what_is_wrong_with_its_inputs():
    ops = kernel_or_skip("layer_norm")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"gamma must be \[4\]"):
        ops.kmtl_layer_norm(tf.ones([2, 4]), tf.ones([3]), tf.zeros([3]), epsilon=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="beta must be shaped as gamma"):
        ops.kmtl_layer_norm(tf.ones([2, 4]), tf.ones([4]), tf.zeros([5]), epsilon=1e-5)
    y, mean, rstd = ops.kmtl_layer_norm(tf.ones([2, 4]), tf.ones([4]), tf.zeros([4]), epsilon=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="dy and x differ in shape"):
        ops.kmtl_layer_norm_grad(tf.ones([2, 3]), tf.ones([2, 4]), tf.ones([4]), mean, rstd)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per row"):
        ops.kmtl_layer_norm_grad(tf.ones([3, 4]), tf.ones([3, 4]), tf.ones([4]), mean, rstd)
    empty = ops.kmtl_layer_norm(tf.ones([0, 4]), tf.ones([4]), tf.zeros([4]), epsilon=1e-5)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)
    dx, dgamma, dbeta = ops.kmtl_layer_norm_grad(tf.ones([0, 4]), tf.ones([0, 4]), tf.ones([4]), empty[1], empty[2])
    assert dx.shape == (0, 4) and not dgamma.numpy().any() and not dbeta.numpy().any()
