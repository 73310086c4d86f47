"""kmtl.kernels: XLA-compiled steps take TensorFlow's ops (XLA cannot compile kmtl's), and so does a machine
without a compiler."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from kernel_skip import kernel_or_skip

import kmtl
from kmtl import kernels
from kmtl.backbone import tiny_encoder
from kmtl.training import make_optimizer


def test_in_xla_function_is_true_only_inside_a_jit_compiled_function():
    seen = {}

    @tf.function(jit_compile=True)
    def compiled(x):
        seen["xla"] = kernels.in_xla_function()
        return x + 1

    @tf.function
    def plain(x):
        seen["plain"] = kernels.in_xla_function()
        return x + 1

    compiled(tf.constant(1.0)), plain(tf.constant(1.0))
    assert seen == {"xla": True, "plain": False} and not kernels.in_xla_function()


def test_a_jit_compiled_fit_trains_where_the_kernels_build():
    kernel_or_skip("adamw"), kernel_or_skip("dropout")
    losses = {}
    for jit in (True, False):
        keras.utils.set_random_seed(7)
        model = kmtl.build_model(tiny_encoder(seed=0), [kmtl.tasks.Classification("s", ["a", "b"])])
        x = dict(model.preprocessor.encode_text(tf.constant(["a good film", "a bad plot"] * 4)))
        model.compile(optimizer=make_optimizer(1e-2, total_steps=10), jit_compile=jit)
        history = model.fit(x, {"s": np.array([0, 1] * 4)}, epochs=3, verbose=0)  # kmtl's ops failed under XLA
        losses[jit] = history.history["loss"]
    assert np.isfinite(losses[True]).all()
    np.testing.assert_allclose(losses[True][0], losses[False][0], rtol=1e-2)  # same model, same first batch


def _dropout(kernel):
    from kmtl.dropout import dropout

    return dropout(tf.ones([100]), 0.5, tf.constant([1, 2]), kernel=kernel)


def _layer_norm(kernel):
    from kmtl.layer_norm import layer_norm

    return layer_norm(tf.random.stateless_normal([3, 8], seed=[1, 2]), tf.ones([8]), tf.zeros([8]), 1e-5, kernel=kernel)


def _softmax_gradient(kernel):
    from kmtl.attention import softmax

    x = tf.random.stateless_normal([3, 8], seed=[1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = softmax(x, kernel=kernel)
    return tape.gradient(y, x, output_gradients=tf.reshape(tf.range(24.0), [3, 8]))


@pytest.mark.parametrize("name, compute", [("dropout", _dropout), ("layer_norm", _layer_norm),
                                           ("softmax", _softmax_gradient)])
def test_without_a_compiler_the_ops_run(name, compute, monkeypatch, tmp_path):
    """No compiler: one warning naming the kernel, then TensorFlow's ops (the same figures as asking for them)."""
    kernels._load.cache_clear()
    monkeypatch.setenv("KMTL_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-kmtl")
    try:
        with pytest.warns(RuntimeWarning, match=f"{name} kernel is not used"):
            assert getattr(kernels, name)() is None
        np.testing.assert_array_equal(compute(True), compute(False))
    finally:
        kernels._load.cache_clear()
