"""kmtl.kernels with XLA: XLA-compiled steps take TensorFlow's ops (XLA cannot compile kmtl's)."""

import keras
import numpy as np
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
