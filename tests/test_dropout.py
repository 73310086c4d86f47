"""kmtl.dropout: 16 random bits per element; the rate, the expectation, noise shapes and the model's layers."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from kernel_skip import kernel_or_skip

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.dropout import LEVELS, dropout, fast_dropout, keep_mask, threshold
from kmtl.model.precision import cpu_flags


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


def _bits(t):
    return tf.bitcast(t, tf.int32 if t.dtype == tf.float32 else tf.int16).numpy()


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
@pytest.mark.parametrize("shape", [[1], [9], [3, 5, 7], [4, 3, 16, 16]])
def test_the_kernel_gives_the_ops_mask_and_figures_to_the_bit(dtype, shape):
    kernel_or_skip("dropout")
    for seed in (tf.constant([1, 2]), tf.constant([-7, 123456789]), tf.constant([5, -3], tf.int64)):
        x = tf.cast(tf.random.stateless_normal(shape, seed=[7, 8]), dtype)
        dy = tf.cast(tf.random.stateless_normal(shape, seed=[9, 8]), dtype)
        results = []
        for kernel in (True, False):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = dropout(x, 0.3, seed, kernel=kernel)
            results.append((y, tape.gradient(y, x, dy)))
        (y, dx), (y_ops, dx_ops) = results
        np.testing.assert_array_equal(_bits(y), _bits(y_ops))
        np.testing.assert_array_equal(_bits(dx), _bits(dx_ops))
        np.testing.assert_array_equal(y.numpy() != 0, keep_mask(shape, 0.3, seed).numpy() & (x.numpy() != 0))


LOOP_NEEDS = {"auto": None, "portable": None, "avx2": "avx2", "avx512": "avx512f"}


@pytest.mark.parametrize("philox", list(LOOP_NEEDS))
def test_every_philox_loop_gives_tensorflows_words(philox):
    """Each Philox loop the CPU can run, forced by name: on an AVX-512 CPU "auto" takes the AVX-512
    loop, so the AVX2 one is checked only because it is asked for."""
    ops = kernel_or_skip("dropout")
    needs = LOOP_NEEDS[philox]
    if needs and needs not in cpu_flags():
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"philox='{philox}' needs instructions.*'auto'"):
            ops.kmtl_dropout(tf.ones([8]), tf.constant([1, 2]), tf.constant(2.0), threshold=threshold(0.5),
                             philox=philox)
        pytest.skip(f"this CPU lacks {needs} (asking for the loop gives the error checked above)")
    for shape, seed in (([5000], [1, 2]), ([3, 4099], [-5, 2 ** 31 - 1]), ([17], [0, 0])):
        x = tf.ones(shape)
        y, keep = ops.kmtl_dropout(x, tf.constant(seed), tf.constant(2.0), threshold=threshold(0.5), philox=philox)
        np.testing.assert_array_equal(keep.numpy(), keep_mask(shape, 0.5, tf.constant(seed)).numpy())
        np.testing.assert_array_equal(y.numpy(), np.where(keep.numpy(), 2.0, 0.0))


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
def test_the_kernel_drops_nan_and_inf_and_keeps_them_where_kept(dtype):
    kernel_or_skip("dropout")
    largest = float(dtype.max)  # times the scale: overflows to inf, as the ops' Mul does
    x = tf.cast(tf.constant([np.nan, np.inf, -np.inf, 1.0, largest, -0.0, 1e-40, -np.nan] * 64, tf.float32), dtype)
    y, y_ops = dropout(x, 0.5, tf.constant([1, 1])), dropout(x, 0.5, tf.constant([1, 1]), kernel=False)
    np.testing.assert_array_equal(_bits(y), _bits(y_ops))  # NaN where kept, +0 where dropped, in both
    assert np.isinf(tf.cast(y, tf.float32).numpy()).any() and np.isnan(tf.cast(y, tf.float32).numpy()).any()


def test_the_kernel_inside_a_compiled_training_step_matches_the_ops():
    kernel_or_skip("dropout")
    layer = keras.layers.Dropout(0.2, seed=11)
    x = tf.random.stateless_normal([8, 33], seed=[1, 2])
    outs = {}
    for kernel in (True, False):
        layer.__dict__.pop("call", None)
        fast_dropout(keras.Sequential([layer]), kernel=kernel)
        layer.seed_generator.state.assign([11, 0])

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * y)
            return y, tape.gradient(loss, x)

        outs[kernel] = [t.numpy() for t in step(x)]
    for a, b in zip(outs[True], outs[False]):
        np.testing.assert_array_equal(a, b)
    assert 0 < (outs[True][0] == 0).mean() < 0.5
