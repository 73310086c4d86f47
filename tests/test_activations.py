"""kmtl.activations: the encoder's GELU computes in float32 inside a half-precision model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.activations import Float32Activation, activations_in_float32
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


@pytest.mark.parametrize("precision, wrapped", [("mixed_bfloat16", True), ("float32", False)])
def test_a_half_precision_backbone_computes_its_gelu_in_float32(precision, wrapped):
    with precision_scope(precision):
        model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    found = _ffn_activations(model)
    assert len(found) == 2  # tiny_encoder's two layers
    assert [isinstance(a, Float32Activation) for a in found] == [wrapped, wrapped]
    # the model's config (what keras.saving writes) is the backbone's own; a rebuilt model wraps again
    rebuilt = type(model).from_config(model.get_config())
    assert [isinstance(a, Float32Activation) for a in _ffn_activations(rebuilt)] == [wrapped, wrapped]
    assert activations_in_float32(model) == 0  # already done: nothing wrapped twice


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
