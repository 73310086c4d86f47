"""kmtl.activations: the encoder's GELU computes in float32 inside a half-precision model, and as
XLA-fused loops in training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.activations import Float32Activation, fast_activations, fused_activation
from kmtl.backbone import tiny_encoder
from kmtl.model.precision import precision_scope


def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0)]


def _ffn_activations(model):
    return [layer.activation for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.Dense) and layer.name == "feedforward_intermediate_dense"]


def test_float32_activation_rounds_once_and_passes_float32_through():
    x = tf.random.stateless_normal([4, 257], seed=[1, 2]) * 3
    gelu = Float32Activation("gelu")
    exact = tf.nn.gelu(x, approximate=False)
    assert gelu(x).dtype == tf.float32 and np.array_equal(gelu(x), exact)
    half = gelu(tf.cast(x, tf.bfloat16))
    assert half.dtype == tf.bfloat16
    # one rounding of the float32 result: within half a bfloat16 ulp of it (2^-9 relative)
    np.testing.assert_allclose(tf.cast(half, tf.float32), tf.cast(tf.cast(tf.nn.gelu(tf.cast(tf.cast(x, tf.bfloat16),
                                                                                          tf.float32), False),
                                                                          tf.bfloat16), tf.float32), rtol=0, atol=0)
    with tf.GradientTape() as tape:
        xb = tf.cast(x, tf.bfloat16)
        tape.watch(xb)
        y = gelu(xb)
    assert tape.gradient(y, xb).dtype == tf.bfloat16
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(gelu))
    assert isinstance(again, Float32Activation) and np.array_equal(again(x), gelu(x))


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "float32"])
def test_every_backbone_wraps_its_feedforward_activation(precision):
    with precision_scope(precision):
        model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    found = _ffn_activations(model)
    assert len(found) == 2  # tiny_encoder's two layers
    assert all(isinstance(a, Float32Activation) for a in found)
    # the model's config (what keras.saving writes) is the backbone's own; a rebuilt model wraps again
    rebuilt = type(model).from_config(model.get_config())
    assert all(isinstance(a, Float32Activation) for a in _ffn_activations(rebuilt))
    assert fast_activations(model) == 0  # already done: nothing wrapped twice


def test_bfloat16_model_with_float32_gelu_stays_close_to_float32():
    x = dict(tiny_encoder(seed=0).preprocessor(16).encode_text(tf.constant(["the good film", "a bad plot here"])))
    full = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    with precision_scope("mixed_bfloat16"):
        half = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    half.set_weights(full.get_weights())
    np.testing.assert_allclose(half(x)["sent"], full(x)["sent"], atol=0.05)


def test_soft_sharing_copies_compute_their_gelu_in_float32():
    with precision_scope("mixed_bfloat16"):
        model = kmtl.build_model(tiny_encoder(seed=0), _tasks() + [kmtl.tasks.Regression("score")],
                                 sharing="soft", soft_top_layers=1)
    copies = [layer for layer in model._flatten_layers() if type(layer).__name__ == "TaskTransformerLayer"]
    assert copies and all(isinstance(layer._activation, Float32Activation) for layer in copies)


@pytest.mark.parametrize("name", ["gelu", "relu", "silu", "tanh"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_activation_matches_the_plain_ops_and_their_gradient(name, dtype):
    activation = keras.activations.get(name)
    x = tf.cast(tf.random.stateless_normal([3, 5, 64], seed=[3, 4]) * 3, dtype)
    dy = tf.random.stateless_normal([3, 5, 64], seed=[5, 6])

    def value_and_grad(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
        return tf.cast(y, tf.float32), tf.cast(tape.gradient(loss, x), tf.float32)

    def plain(v):
        return tf.cast(activation(tf.cast(v, tf.float32)), v.dtype)

    y, g = value_and_grad(lambda v: fused_activation(activation, v))
    y_ref, g_ref = value_and_grad(plain)
    tol = 1e-5 if dtype == "float32" else 2e-2  # XLA's tanh/erf against Eigen's; one bfloat16 rounding
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(g, g_ref, rtol=tol, atol=tol)
    assert g.dtype == tf.float32 and not np.array_equal(g, np.zeros_like(g))


def test_float32_activation_fuses_only_while_a_tape_records():
    gelu = Float32Activation("gelu")
    x = tf.random.stateless_normal([2, 8], seed=[1, 1])

    @tf.function
    def inference(v):
        return gelu(v)

    @tf.function
    def training(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = gelu(v)
        return tape.gradient(y, v)

    def compiled_calls(fn):
        graph = fn.get_concrete_function(x).graph.as_graph_def()
        return [f for f in graph.library.function if f.attr["_XlaMustCompile"].b]

    assert not compiled_calls(inference)  # exported graphs keep the plain ops (SavedModel, ONNX)
    assert compiled_calls(training)
    gelu.fused = False  # the A/B lever: plain ops in training too
    assert not compiled_calls(tf.function(training.python_function))
