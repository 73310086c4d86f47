"""kmtl.dropout: 16 random bits per element; the rate, the expectation, noise shapes and the model's layers."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.dropout import LEVELS, dropout, fast_dropout, keep_mask, threshold


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_the_drop_rate_and_the_expectation_hold(rate, dtype):
    n = 1 << 20
    out = dropout(tf.ones([n], dtype), rate, seed=tf.constant([3, 4]))
    dropped = float(tf.reduce_mean(tf.cast(tf.equal(out, 0), tf.float32)))
    want = threshold(rate) / LEVELS
    assert abs(want - rate) <= 0.5 / LEVELS
    sd = (want * (1 - want) / n) ** 0.5
    assert abs(dropped - want) < 5 * sd, (dropped, want)  # Keras' bfloat16 dropout at 0.1: 0.1017, 25 sd off
    kept = out.numpy()[out.numpy() != 0].astype(np.float64)
    np.testing.assert_allclose(kept, LEVELS / (LEVELS - threshold(rate)), rtol=1e-2 if dtype == tf.bfloat16 else 1e-6)
    rounding = 2.0 ** -8 if dtype == tf.bfloat16 else 0.0  # the scale itself in bfloat16 (as in Keras)
    assert abs(float(tf.reduce_mean(tf.cast(out, tf.float32))) - 1.0) < 6 * (want / (1 - want) / n) ** 0.5 + rounding


def test_seeds_odd_sizes_and_noise_shapes():
    a, b = keep_mask([7, 3], 0.5, tf.constant([1, 2])), keep_mask([7, 3], 0.5, tf.constant([1, 2]))
    assert a.shape == (7, 3) and np.array_equal(a, b)  # stateless: the seed decides (21 elements: an odd count)
    assert not np.array_equal(keep_mask([64, 64], 0.5, tf.constant([1, 2])), keep_mask([64, 64], 0.5, tf.constant([1, 3])))
    x = tf.ones([4, 5, 6])
    out = dropout(x, 0.5, tf.constant([5, 6]), noise_shape=(None, 1, 6)).numpy()
    assert (out == out[:, :1, :]).all()  # one decision per (row, feature), shared along axis 1
    assert 0 < (out == 0).mean() < 1


def test_the_models_dropout_layers_use_it_and_training_is_random_inference_is_not():
    model = kmtl.build_model(tiny_encoder(seed=0), [kmtl.tasks.Classification("s", ["a", "b"])])
    layers = [layer for layer in model._flatten_layers() if type(layer) is keras.layers.Dropout]
    assert len(layers) >= 7  # embeddings + 3 per transformer layer (tiny_encoder: 2) + the head's
    assert all(isinstance(layer.call, functools.partial) for layer in layers)
    assert fast_dropout(model) == 0  # nothing replaced twice
    x = dict(model.preprocessor.encode_text(tf.constant(["a good film", "a bad plot"])))
    assert np.abs(model(x, training=True)["s"] - model(x, training=True)["s"]).max() > 1e-4
    np.testing.assert_array_equal(model(x)["s"], model(x)["s"])
    rebuilt = type(model).from_config(model.get_config())
    assert all(isinstance(layer.call, functools.partial)
               for layer in rebuilt._flatten_layers() if type(layer) is keras.layers.Dropout)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True)["s"] ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads[:3])
