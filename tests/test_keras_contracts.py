"""Keras habits that must work on a kmtl model, written the way a Keras user writes them.

`fit` on plain ``(x, y)`` data, weighting callbacks in any order, one strategy per fit, no
hook left behind by an interrupted fit, strategy state kept by the model, teacher λ always a
variable of the model.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.weighting import PCGrad, StaticWeighting, UncertaintyWeighting


def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0),
            kmtl.tasks.Regression("score", dropout=0.0)]


def _model(tasks=None, lr=1e-2):
    model = kmtl.build_model(tiny_encoder(seed=0), tasks or _tasks())
    model.compile(optimizer=keras.optimizers.Adam(lr))
    return model


def _plain_xy(batch=8, length=12, seed=0):
    """Token ids and labels as a Keras user would make them: no task_id, no kmtl pipeline."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 90, size=(batch, length)).astype("int32")
    ids[:, 0] = 2
    mask = np.ones((batch, length), "int32")
    mask[: batch // 2, length - 3:] = 0
    ids[mask == 0] = 0
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    y = {"sent": rng.integers(0, 2, size=batch).astype("int32"),
         "ner": rng.integers(0, 3, size=(batch, length)).astype("int32"),
         "score": rng.normal(size=batch).astype("float32")}
    return x, y


def _data():
    words = "the a good bad film john paris story".split()
    rng = np.random.default_rng(0)
    sent = [Example(text=" ".join(rng.choice(words, 3)), label=["neg", "pos"][i % 2]) for i in range(16)]
    ner = [Example(tokens=tuple(t), label=tuple("B-PER" if w == "john" else "O" for w in t))
           for t in (rng.choice(words, 2 + i % 4) for i in range(16))]
    score = [Example(text=" ".join(rng.choice(words, 3)), label=float(i % 5)) for i in range(16)]
    pre = tiny_encoder(seed=0).preprocessor(16)
    return kmtl.data.mixture(_tasks(), {"sent": sent, "ner": ner, "score": score}, pre, batch_size=8, seed=1)


@pytest.fixture(scope="module")
def data():
    return _data()


# ------------------------------------------------------------------ fit on (x, y)
def test_fit_on_a_subset_of_the_heads_without_sample_weights_trains_only_those():
    model = _model()
    x, y = _plain_xy()
    head_before = {n: [w.numpy().copy() for w in model.get_layer(n).weights] for n in ("sent", "ner", "score")}
    history = model.fit(x, {"sent": y["sent"]}, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["sent_loss"][-1] > 0
    assert history["ner_loss"] == [0.0, 0.0]  # a head missing from y has weight 0
    moved = {n: any(not np.allclose(a, w.numpy()) for a, w in zip(head_before[n], model.get_layer(n).weights))
             for n in head_before}
    assert moved == {"sent": True, "ner": False, "score": False}


def test_fit_with_tf_data_tuples_and_sample_weights_for_some_heads():
    model = _model()
    x, y = _plain_xy()
    weights = {"sent": np.r_[np.ones(4), np.zeros(4)].astype("float32")}
    ds = tf.data.Dataset.from_tensor_slices((x, {"sent": y["sent"], "score": y["score"]}, weights)).batch(4)
    history = model.fit(ds, epochs=1, verbose=0).history
    # the sentiment loss is the mean over the 4 examples with weight 1 (the first batch) only
    assert history["sent_loss"][0] > 0 and np.isfinite(history["score_loss"][0])


def test_regression_scores_given_as_a_vector_are_not_broadcast():
    model = _model()
    x, y = _plain_xy()
    pred = np.asarray(model.predict(x, verbose=0)["score"])[:, 0]
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = model.evaluate(x, {"score": y["score"]}, batch_size=8, verbose=0, return_dict=True)
    assert logs["score_loss"] == pytest.approx(float(np.mean((pred - y["score"]) ** 2)), rel=1e-4)


def test_a_one_task_model_fits_a_plain_x_y():
    model = _model([kmtl.tasks.Classification("sent", ["neg", "pos"])])
    x, y = _plain_xy()
    history = model.fit(x, y["sent"], batch_size=4, epochs=2, verbose=0).history
    assert history["sent_loss"][1] < history["sent_loss"][0]


def test_y_for_an_unknown_task_or_a_bare_y_for_several_heads_is_a_clear_error():
    model = _model()
    x, y = _plain_xy()
    with pytest.raises(ValueError, match="unknown tasks \\['sentiment'\\]"):
        model.fit(x, {"sentiment": y["sent"]}, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="give y as a dict keyed by task name"):
        model.fit(x, y["sent"], batch_size=8, verbose=0)


# -------------------------------------------------------------- weighting in fit
class _Recorder(keras.callbacks.Callback):
    """Listed *before* the weighting callback: sees what TensorBoard would see there."""

    def on_epoch_end(self, epoch, logs=None):
        self.logs = dict(logs)


def test_loss_weights_reach_the_logs_whatever_the_callbacks_order(data):
    model = _model()
    recorder = _Recorder()
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0,
              callbacks=[recorder, UncertaintyWeighting(learning_rate=0.5)])
    for task in ("sent", "ner", "score"):
        assert f"loss_weight_{task}" in recorder.logs and f"log_variance_{task}" in recorder.logs
    s = model.weighting_state["log_variances"].numpy()
    assert [recorder.logs[f"log_variance_{t}"] for t in ("sent", "ner", "score")] == pytest.approx(s, abs=1e-6)
    assert recorder.logs["loss_weight_sent"] != pytest.approx(0.5, abs=1e-4)  # moved by the learned variance


def test_two_weighting_strategies_in_one_fit_are_refused(data):
    model = _model()
    with pytest.raises(ValueError, match="2 loss-weighting strategies.*pass one"):
        model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[UncertaintyWeighting(), StaticWeighting()])


def test_an_interrupted_fit_leaves_no_step_hook_behind(data):
    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(data, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[PCGrad(), Boom()])
    assert model._fit_hook is None
    logs = model.fit(data, epochs=1, steps_per_epoch=1, verbose=0).history
    assert "pcgrad_conflicts" not in logs and "loss_weight_sent" in logs


def test_the_strategy_state_is_the_models_and_save_weights_keeps_it(data, tmp_path):
    model = _model()
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[UncertaintyWeighting(learning_rate=0.5)])
    learned = model.weighting_state["log_variances"].numpy().copy()
    assert np.abs(learned).max() > 1e-3
    # a second fit continues from the learned state (as the optimizer's moments do)
    callback = UncertaintyWeighting(learning_rate=0.5)
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[callback])
    assert callback.log_variances is model.weighting_state["log_variances"]
    assert not np.allclose(model.weighting_state["log_variances"].numpy(), [0, 0, 0])

    model.save_weights(tmp_path / "m.weights.h5")
    saved = model.weighting_state["log_variances"].numpy().copy()
    fresh = _model()
    UncertaintyWeighting().set_model(fresh)  # what fit does first: the state exists, at its initial value
    np.testing.assert_array_equal(fresh.weighting_state["log_variances"].numpy(), [0.0, 0.0, 0.0])
    fresh.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(fresh.weighting_state["log_variances"].numpy(), saved)


def test_teacher_annealing_made_after_a_first_fit_moves_the_loss():
    from kmtl.distill import TeacherAnnealing

    model = _model([kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0)], lr=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _plain_xy()
    teacher = np.tile([[0.1, 0.9]], (8, 1)).astype("float32")
    targets = {"sent": {"gold": y["sent"], "teacher": teacher}}
    ds = tf.data.Dataset.from_tensors((x, targets)).repeat()
    gold = model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0).history["sent_loss"][0]  # λ = 1: gold only
    assert float(model.teacher_lambda.numpy()) == 1.0

    logits = np.asarray(model.predict(x, verbose=0)["sent"], np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    soft = float(-(teacher * log_p).sum(-1).mean())
    # the optimizer is at step 1 already: λ = 1/4, then 2/4
    history = model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0,
                        callbacks=[TeacherAnnealing(total_steps=4)]).history
    assert history["teacher_lambda"] == [pytest.approx(0.5)]
    assert not np.isclose(soft, gold, rtol=1e-2)
    expected = ((0.25 * gold + 0.75 * soft) + (0.5 * gold + 0.5 * soft)) / 2  # cross-entropy is linear in λ
    assert history["sent_loss"][0] == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------ predict on raw text
def test_predict_on_raw_text_decodes_to_what_the_saved_model_serves(tmp_path):
    from kmtl.serving.predict import predict_lines

    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"]),
             kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER", "LOC"])),
             kmtl.tasks.PairRegression("sim")]
    encoder = tiny_encoder(seed=3)
    model = kmtl.build_model(encoder, tasks, max_length=16)
    texts = ["a good film", "john visited paris , then new york .", "ünïcode — text"]
    outputs = model.predict(texts, verbose=0)
    assert set(outputs) == {"sent", "ner"}  # the single-text tasks
    mine = kmtl.export.decode(model, outputs, texts)
    one = kmtl.export.decode(model, model.predict("a good film", verbose=0), "a good film")
    assert one[0]["sent_label"] == mine[0]["sent_label"]

    pairs = {"text": ["a good film", "the story"], "text_pair": ["a fine film", "john"]}
    pair_out = model.predict(pairs, verbose=0)
    assert set(pair_out) == {"sim"}
    mine_pairs = kmtl.export.decode(model, pair_out, pairs["text"], pairs["text_pair"])

    path = kmtl.export.saved_model(model, model.preprocessor, tmp_path, "m")
    served = predict_lines(path, texts)
    served_pairs = predict_lines(path, [dict(text=a, text_pair=b) for a, b in zip(*pairs.values())], signature="sim")
    for got, want in zip(mine + mine_pairs, served + served_pairs):
        assert set(got) == set(want)
        for key, value in want.items():
            if key.endswith(("_probabilities", "_score")):
                np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6)
            else:
                assert got[key] == value, key
    assert mine[1]["ner_words"][:3] == ["john", "visited", "paris"]


def test_predict_on_raw_text_routes_each_task_through_its_adapters():
    tasks = [kmtl.tasks.Classification("a", ["x", "y"]), kmtl.tasks.Classification("b", ["x", "y"])]
    model = kmtl.build_model(tiny_encoder(seed=0), tasks, sharing="adapters", adapter_size=4, max_length=16)
    for v in model.weights:  # make the two tasks' adapters differ
        if "adapter" in v.path:
            v.assign(np.random.default_rng(len(v.path)).normal(size=v.shape).astype("float32") * 0.5)
    texts = ["a good film", "the story"]
    raw = model.predict(texts, verbose=0)
    x = model.preprocessor.encode_text(tf.constant(texts))
    for index, name in enumerate(("a", "b")):
        routed = model({**x, "task_id": tf.fill([2], index)}, training=False)[name]
        np.testing.assert_allclose(raw[name], routed, rtol=1e-5, atol=1e-6)
    assert not np.allclose(raw["a"], model({**x, "task_id": tf.fill([2], 1)}, training=False)["a"])


def test_predict_on_raw_text_without_a_tokenizer_says_how_to_attach_one():
    model = kmtl.MultiTaskModel(tiny_encoder(seed=0).backbone, [kmtl.tasks.Classification("s", ["a", "b"])])
    with pytest.raises(ValueError, match="model.preprocessor = encoder.preprocessor"):
        model.predict(["a text"], verbose=0)


def test_a_keras_file_keeps_the_weighting_state(data, tmp_path):
    model = _model()
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[UncertaintyWeighting(learning_rate=0.5)])
    learned = model.weighting_state["log_variances"].numpy().copy()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.weighting_state["log_variances"].numpy(), learned)
    callback = UncertaintyWeighting()
    callback.set_model(loaded)  # a fit on the loaded model continues from the learned variances
    np.testing.assert_allclose(callback.log_variances.numpy(), learned)


def test_a_task_without_validation_examples_is_left_out_of_the_val_logs():
    model = _model()
    x, y = _plain_xy()
    val = (x, {"sent": y["sent"]})  # only the sentiment task has dev data
    history = model.fit(x, {"sent": y["sent"], "score": y["score"]}, batch_size=8, epochs=1, verbose=0,
                        validation_data=val).history
    assert "val_sent_accuracy" in history and "val_sent_loss" in history
    assert not [k for k in history if k.startswith(("val_ner_", "val_score_"))], sorted(history)
    assert "ner_loss" in history  # training logs keep every task (weight 0: no examples this epoch)
