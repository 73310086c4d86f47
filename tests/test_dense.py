"""kmtl.dense: in inference a Dense with a GELU is a 2-D MatMul + BiasAdd + tf.nn.gelu (one fused
oneDNN op); training keeps Keras' call."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.dense import fast_dense
from kmtl.model.precision import precision_scope


def _bias_add_inputs(fn, *args):
    """The op types feeding each BiasAdd of ``fn``'s graph: Grappler's remapper fuses MatMul -> BiasAdd
    (-> activation) only when the BiasAdd reads the MatMul itself (Keras' 3-D form reshapes in between)."""
    ops = fn.get_concrete_function(*args).graph.get_operations()
    return {op.inputs[0].op.type for op in ops if op.type == "BiasAdd"}


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_inference_is_the_2d_fused_form_and_matches_keras(activation):
    dense = keras.layers.Dense(6, activation=activation)
    x = tf.random.stateless_normal([3, 5, 4], seed=[1, 2])
    want = dense(x)  # Keras' own call (built here)
    assert fast_dense(keras.Sequential([dense])) == 1
    got = dense(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (3, 5, 6)
    assert _bias_add_inputs(tf.function(lambda v: dense(v)), x) == {"MatMul"}  # the pattern the remapper fuses

    @tf.function
    def train(v):
        with tf.GradientTape() as tape:
            y = dense(v)
        return y, tape.gradient(tf.reduce_sum(y), dense.kernel)

    assert _bias_add_inputs(train, x) == {"Reshape"}  # training: Keras' call (matmul of the 3-D input, reshaped)
    np.testing.assert_allclose(train(x)[0], want, rtol=1e-5, atol=1e-6)


def test_linear_quantized_and_subclassed_dense_keep_keras_call():
    class Mine(keras.layers.Dense):
        pass

    layers = [keras.layers.Dense(4), Mine(4, activation="gelu"), keras.layers.Dense(4, activation="tanh")]
    assert fast_dense(keras.Sequential(layers)) == 0
    assert not any(isinstance(layer.call, functools.partial) for layer in layers)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_the_encoders_feedforward_uses_it_and_predictions_hold(precision):
    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0), kmtl.tasks.Tagging("ner", ["O", "B-X"])]
    with precision_scope(precision):
        model = kmtl.build_model(tiny_encoder(seed=0), tasks)
    patched = [layer for layer in model._flatten_layers() if isinstance(getattr(layer, "call", None), functools.partial)
               and type(layer) is keras.layers.Dense]
    assert len(patched) == 2  # tiny_encoder's two feed-forward denses
    x = dict(tiny_encoder(seed=0).preprocessor(16).encode_text(tf.constant(["the good film", "a bad plot here"])))
    fused = model(x, training=False)
    for layer in patched:
        layer.__dict__.pop("call")
    plain = model(x, training=False)
    tol = 1e-5 if precision == "float32" else 3e-2  # bfloat16: the GELU rounded once from float32 in both
    for name in ("sent", "ner"):
        np.testing.assert_allclose(np.asarray(fused[name], "float32"), np.asarray(plain[name], "float32"), atol=tol)


def test_soft_sharings_copies_use_it_in_serving_and_outputs_hold(monkeypatch):
    from kmtl.model.per_task import per_task_outputs

    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0), kmtl.tasks.Tagging("ner", ["O", "B-X"])]
    model = kmtl.build_model(tiny_encoder(seed=1), tasks, sharing="soft", soft_top_layers=1)
    x = dict(tiny_encoder(seed=1).preprocessor(16).encode_text(tf.constant(["the good film", "a bad plot here"])))
    calls = []
    real = kmtl.sharing.soft.inference_dense
    monkeypatch.setattr(kmtl.sharing.soft, "inference_dense", lambda *a: calls.append(1) or real(*a))
    fused = per_task_outputs(model, x, ["sent", "ner"])
    assert len(calls) == 2  # one copy's feed-forward per task
    monkeypatch.setattr(kmtl.sharing.soft, "inference_dense", lambda *a: None)
    plain = per_task_outputs(model, x, ["sent", "ner"])
    for name in ("sent", "ner"):
        np.testing.assert_allclose(fused[name], plain[name], atol=1e-5)
