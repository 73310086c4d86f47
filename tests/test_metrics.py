"""kmtl.metrics: streamed task metrics agree with `Task.evaluate`, carry a direction, and let
EarlyStopping / ModelCheckpoint monitor any logged figure without ``mode``."""

import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from seqeval.metrics import f1_score as seqeval_f1

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.metrics import EntityF1, LossMean, MacroF1, MultiLabelF1, PearsonR, TaskLossTrackers, TaskMetric
from kmtl.tasks import (
    Classification,
    MultiLabelClassification,
    PairClassification,
    PairRegression,
    Regression,
    Tagging,
    bio_labels,
)
from kmtl.training import trainer


def _stream(metric, *arrays, batches=3):
    """Feed ``arrays`` (y_true, y_pred, sample_weight) to ``metric`` in ``batches`` slices."""
    for part in zip(*(np.array_split(a, batches) for a in arrays)):
        metric.update_state(*part)
    return float(metric.result())


# ------------------------------------------------------------------ agreement with evaluate
def test_macro_f1_matches_classification_evaluate():
    rng = np.random.default_rng(0)
    task = Classification("t", ["a", "b", "c", "never"])  # "never": in no label nor prediction
    logits = rng.normal(size=(60, 4)).astype("float32")
    logits[:, 3] -= 10.0
    gold = rng.integers(0, 3, 60)
    owned = (rng.random(60) < 0.7).astype("float32")  # weight 0: another task's example
    keep = owned > 0
    examples = [Example(text="x", label=task.labels[g]) for g in gold[keep]]
    expected = task.evaluate(examples, task.decode(logits[keep]))["macro_f1"]
    assert 0.1 < expected < 0.9
    assert _stream(MacroF1(4), gold, logits, owned) == pytest.approx(expected, abs=1e-6)


def test_multilabel_f1_matches_evaluate_micro_and_macro():
    rng = np.random.default_rng(1)
    task = MultiLabelClassification("t", ["a", "b", "c", "d"], threshold=0.3)
    logits = rng.normal(size=(50, 4)).astype("float32")
    gold = (rng.random((50, 4)) < 0.4).astype("float32")
    owned = (rng.random(50) < 0.8).astype("float32")
    keep = owned > 0
    examples = [Example(text="x", label=tuple(l for l, g in zip(task.labels, row) if g)) for row in gold[keep]]
    expected = task.evaluate(examples, task.decode(logits[keep]))
    for average in ("micro", "macro"):
        got = _stream(MultiLabelF1(4, threshold=0.3, average=average), gold, logits, owned)
        assert got == pytest.approx(expected[f"{average}_f1"], abs=1e-6)


def test_pearson_matches_regression_evaluate_over_owned_examples():
    rng = np.random.default_rng(2)
    task = Regression("t")
    gold = rng.uniform(0, 5, (70, 1)).astype("float32")
    pred = (gold + rng.normal(0, 1.5, (70, 1))).astype("float32")
    owned = (rng.random(70) < 0.6).astype("float32")
    keep = owned > 0
    examples = [Example(text="x", label=float(g)) for g in gold[keep, 0]]
    expected = task.evaluate(examples, task.decode(pred[keep]))["pearson"]
    assert _stream(PearsonR(), gold, pred, owned) == pytest.approx(expected, abs=1e-5)


def test_pearson_is_weighted_exact_far_from_zero_and_nan_when_constant():
    rng = np.random.default_rng(3)
    x = 1000.0 + rng.normal(0, 0.01, (200, 1))  # float32 sums would lose these digits
    y = x + rng.normal(0, 0.01, (200, 1))
    w = rng.uniform(0.1, 2.0, 200)
    mx, my = np.average(x[:, 0], weights=w), np.average(y[:, 0], weights=w)
    cov = np.average((x[:, 0] - mx) * (y[:, 0] - my), weights=w)
    expected = cov / math.sqrt(np.average((x[:, 0] - mx) ** 2, weights=w) * np.average((y[:, 0] - my) ** 2, weights=w))
    assert _stream(PearsonR(), x.astype("float32"), y.astype("float32"), w) == pytest.approx(expected, abs=1e-3)
    constant = PearsonR()
    constant.update_state([[1.0], [2.0], [3.0]], [[0.5], [0.5], [0.5]])
    assert math.isnan(float(constant.result()))  # as Regression.evaluate: no correlation defined
    assert math.isnan(float(PearsonR().result()))  # nothing seen yet


# Hand-picked BIO cases where chunking rules differ: an I- opening a chunk, B- right after an I-
# of another type, I-X after B-Y, chunks running to the sentence's end, adjacent B-B.
_TRICKY = [
    (["I-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),
    (["B-PER", "I-PER", "B-LOC"], ["B-PER", "I-LOC", "I-LOC"]),
    (["B-LOC", "I-PER", "I-PER"], ["B-LOC", "B-PER", "I-PER"]),
    (["O", "B-PER", "I-PER"], ["O", "B-PER", "I-PER"]),
    (["B-PER", "B-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "I-LOC"]),
    (["O", "O", "O"], ["I-LOC", "O", "B-PER"]),
]


def _entity_f1_of(labels, gold_rows, pred_rows, weights):
    index = {l: i for i, l in enumerate(labels)}
    gold = np.array([[index[t] for t in row] for row in gold_rows])
    logits = tf.one_hot([[index[t] for t in row] for row in pred_rows], len(labels))
    metric = EntityF1(labels)
    metric.update_state(gold, logits, weights)
    return float(metric.result())


def test_entity_f1_matches_seqeval_on_tricky_bio_cases():
    labels = bio_labels(["PER", "LOC"])
    for gold, pred in _TRICKY:
        got = _entity_f1_of(labels, [gold], [pred], np.ones([1, len(gold)]))
        assert got == pytest.approx(seqeval_f1([gold], [pred], zero_division=0), abs=1e-6), (gold, pred)
    # all at once, padded with weight-0 positions between and after the words
    width = 6
    gold_rows = [g + ["O"] * (width - len(g)) for g, _ in _TRICKY]
    pred_rows = [p + ["B-PER"] * (width - len(p)) for _, p in _TRICKY]  # padding predictions must not count
    weights = np.array([[1.0] * len(g) + [0.0] * (width - len(g)) for g, _ in _TRICKY])
    expected = seqeval_f1([g for g, _ in _TRICKY], [p for _, p in _TRICKY], zero_division=0)
    assert _entity_f1_of(labels, gold_rows, pred_rows, weights) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("labels", [bio_labels(["PER", "LOC", "ORG"]),
                                    ["O"] + [f"{p}-{t}" for t in ("A", "B") for p in "BIES"]])  # BIOES too
def test_entity_f1_matches_seqeval_on_random_tags_with_skipped_pieces(labels):
    rng = np.random.default_rng(4)
    for _ in range(10):
        gold = rng.integers(0, len(labels), (8, 10))
        pred = np.where(rng.random((8, 10)) < 0.5, gold, rng.integers(0, len(labels), (8, 10)))
        words = (rng.random((8, 10)) < 0.7).astype("float32")  # 0: a continuation piece or padding
        words[rng.integers(0, 8)] = 0.0  # an example of another task
        metric = EntityF1(labels)
        _stream(metric, gold, tf.one_hot(pred, len(labels)).numpy(), words, batches=2)
        gold_seqs = [[labels[t] for t, w in zip(g, m) if w] for g, m in zip(gold, words)]
        pred_seqs = [[labels[t] for t, w in zip(p, m) if w] for p, m in zip(pred, words)]
        pairs = [(g, p) for g, p in zip(gold_seqs, pred_seqs) if g]
        expected = seqeval_f1([g for g, _ in pairs], [p for _, p in pairs], zero_division=0)
        assert float(metric.result()) == pytest.approx(expected, abs=1e-6)


def test_entity_f1_matches_tagging_evaluate_on_first_pieces():
    rng = np.random.default_rng(5)
    task = Tagging("ner", bio_labels(["PER", "LOC"]))
    batch, pieces = 6, 14
    examples, first_piece = [], np.full([batch, 8], -1)
    gold = np.zeros([batch, pieces], np.int32)
    weight = np.zeros([batch, pieces], np.float32)
    for row in range(batch):
        n_words = int(rng.integers(2, 7))
        tags = [task.labels[i] for i in rng.integers(0, 5, n_words)]
        examples.append(Example(tokens=tuple(f"w{i}" for i in range(n_words)), label=tuple(tags)))
        position = 1  # [CLS]; each word has 1 or 2 pieces
        for w, tag in enumerate(tags):
            first_piece[row, w] = position
            gold[row, position], weight[row, position] = task.labels.index(tag), 1.0
            position += int(rng.integers(1, 3))
    logits = rng.normal(size=(batch, pieces, 5)).astype("float32")
    expected = task.evaluate(examples, task.decode(logits, examples, first_piece=first_piece))["entity_f1"]
    assert expected > 0
    assert _stream(EntityF1(task.labels), gold, logits, weight, batches=2) == pytest.approx(expected, abs=1e-6)


def test_metrics_compile_with_xla():
    metric = EntityF1(bio_labels(["PER"]))

    @tf.function(jit_compile=True)
    def update(gold, logits, weight):
        metric.update_state(gold, logits, weight)
        return metric.result()

    gold = np.array([[1, 2, 0, 1]])
    assert float(update(gold, tf.one_hot([[1, 2, 0, 0]], 3), np.ones([1, 4]))) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ directions, configs
def _tasks_of_every_kind():
    return [Classification("c", ["a", "b"]), PairClassification("p", ["a", "b"]),
            MultiLabelClassification("m", ["a", "b"]), Regression("r"), PairRegression("q"),
            Tagging("t", bio_labels(["PER"]))]


def test_every_task_metric_has_a_direction_and_survives_serialization():
    for task in _tasks_of_every_kind():
        for metric in task.metrics():
            assert getattr(metric, "_direction", None) in ("up", "down"), (task.kind, metric.name)
            again = keras.metrics.deserialize(keras.metrics.serialize(metric))
            assert type(again) is type(metric) and again.get_config() == metric.get_config()
    wrapped = TaskMetric(MacroF1(3), "sent")
    assert (wrapped.name, wrapped._direction) == ("sent_macro_f1", "up")
    again = keras.metrics.deserialize(keras.metrics.serialize(wrapped))
    assert again.name == "sent_macro_f1" and again.metric.num_classes == 3
    assert LossMean(name="x_loss")._direction == "down"


def test_task_loss_trackers_read_like_a_dict():
    trackers = TaskLossTrackers(["sent", "ner"])
    trackers["ner"].update_state(0.5, sample_weight=4.0)
    assert [name for name, _ in trackers.items()] == ["sent", "ner"] and "ner" in trackers
    assert {k: float(v) for k, v in trackers.result().items()} == {"sent_loss": 0.0, "ner_loss": 0.5}
    assert all(m._direction == "down" for m in trackers.metrics)
    with pytest.raises(KeyError, match="no loss tracker for task 'pos'"):
        trackers["pos"]
    with pytest.raises(TypeError, match=r"trackers\[task\]"):
        trackers.update_state(1.0)


def test_metric_arguments_are_checked():
    with pytest.raises(ValueError, match="average='weighted'"):
        MultiLabelF1(3, average="weighted")
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        MultiLabelF1(3, threshold=1.5)
    with pytest.raises(ValueError, match="num_classes >= 1"):
        MacroF1(0)
    with pytest.raises(ValueError, match="tag set"):
        EntityF1([])


# ------------------------------------------------------------------ callbacks without mode
def test_keras_alone_cannot_tell_the_direction_of_a_per_output_metric(tmp_path):
    """Why `kmtl.metrics.TaskMetrics` and `TaskLossTrackers` exist: a plain two-output Keras
    model logs metric `accuracy` as `a_accuracy` and the loss of output b as `b_loss`, and
    EarlyStopping / ModelCheckpoint without mode raise for both (keras 3.15.1). If this starts
    failing, Keras finds them itself and the two containers can go."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(inputs),
                                 "b": keras.layers.Dense(2, name="b")(inputs)})
    model.compile("sgd", loss={"a": "sparse_categorical_crossentropy", "b": "sparse_categorical_crossentropy"},
                  metrics={"a": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]})
    x, y = np.zeros((4, 3), "float32"), {"a": np.zeros(4, "int32"), "b": np.zeros(4, "int32")}
    with pytest.raises(ValueError, match="isn't able to automatically determine"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.EarlyStopping(monitor="a_accuracy")])
    # nor of a per-output loss tracker (kmtl's <task>_loss: `kmtl.metrics.TaskLossTrackers`)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"), monitor="b_loss", save_weights_only=True)
    with pytest.raises(ValueError, match="isn't able to automatically determine"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])


def _data():
    rng = np.random.default_rng(6)
    words = "the a good bad film john paris new york story acting plot".split()
    sent = [Example(text=" ".join(rng.choice(words, 3 + i % 3)), label=["neg", "pos"][i % 2]) for i in range(12)]
    ner = []
    for i in range(12):
        tokens = tuple(rng.choice(words, 3 + i % 4))
        ner.append(Example(tokens=tokens, label=tuple("B-PER" if t == "john" else "B-LOC" if t == "paris"
                                                      else "I-LOC" if t == "york" else "O" for t in tokens)))
    return {"sent": sent, "ner": ner}


def test_callbacks_monitor_task_metrics_without_mode_and_val_figures_match_evaluate(tmp_path):
    tasks = [Classification("sent", ["neg", "pos"], dropout=0.0), Tagging("ner", bio_labels(["PER", "LOC"]), dropout=0.0)]
    encoder = tiny_encoder(seed=0)
    model = kmtl.build_model(encoder, tasks)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))  # predictions stay as they are
    ner_head = model.get_layer("ner")
    kernel = ner_head.kernel.numpy()
    ner_head.kernel.assign(kernel * 30.0)  # spread the untrained head's tags, so chunks are predicted
    pre = encoder.preprocessor(32)
    data = _data()
    val = kmtl.data.validation_dataset(tasks, data, pre, batch_size=32)  # one batch: one trace
    config = SimpleNamespace(training=SimpleNamespace(
        early_stopping=SimpleNamespace(monitor="ner_entity_f1", patience=1, mode="auto")))
    callbacks = {
        "accuracy": keras.callbacks.EarlyStopping(monitor="val_sent_accuracy"),
        "macro_f1": keras.callbacks.EarlyStopping(monitor="val_sent_macro_f1"),
        "ner_loss": keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"), monitor="val_ner_loss",
                                                    save_best_only=True, save_weights_only=True),
        "entity_f1": trainer._early_stopping(config, True, tasks),  # mode "auto" from the config
    }
    history = model.fit(val, epochs=1, validation_data=val, verbose=0,  # learning rate 0: trains on nothing
                        callbacks=list(callbacks.values())).history
    for name in ("accuracy", "macro_f1", "entity_f1"):
        assert callbacks[name].monitor_op is keras.ops.greater, name
    assert callbacks["ner_loss"].monitor_op is keras.ops.less
    assert (tmp_path / "best.weights.h5").is_file()
    for key in ("sent_macro_f1", "ner_entity_f1", "val_sent_macro_f1", "val_ner_entity_f1", "val_ner_loss"):
        assert key in history, key

    report = kmtl.evaluation.evaluate_tasks(model, data, pre)
    assert 0 < report["ner"]["entity_f1"] < 1  # a figure worth comparing
    assert history["val_ner_entity_f1"][0] == pytest.approx(report["ner"]["entity_f1"], abs=1e-6)
    assert history["val_sent_macro_f1"][0] == pytest.approx(report["sent"]["macro_f1"], abs=1e-6)
    assert history["val_sent_accuracy"][0] == pytest.approx(report["sent"]["accuracy"], abs=1e-6)


def test_one_task_model_logs_task_prefixed_metrics():
    model = kmtl.build_model(tiny_encoder(seed=0), [Regression("score")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    x = {"token_ids": np.array([[2, 5, 3], [2, 6, 3], [2, 7, 3]], "int32"),
         "segment_ids": np.zeros((3, 3), "int32"), "padding_mask": np.ones((3, 3), "int32")}
    logs = model.evaluate(x, {"score": np.array([[1.0], [2.0], [4.0]], "float32")}, verbose=0, return_dict=True)
    assert {"score_loss", "score_mse", "score_pearson"} <= set(logs)


def test_early_stopping_from_config_rejects_a_monitor_the_logs_lack():
    tasks = [Classification("sent", ["neg", "pos"])]
    config = SimpleNamespace(training=SimpleNamespace(
        early_stopping=SimpleNamespace(monitor="sent_f1", patience=1, mode="auto")))
    with pytest.raises(kmtl.ConfigError, match="'sent_f1' is not in the training logs; monitor one of: "
                                               "loss, sent_loss, sent_accuracy, sent_macro_f1"):
        trainer._early_stopping(config, True, tasks)
    config.training.early_stopping.monitor = "sent_macro_f1"
    stopper = trainer._early_stopping(config, True, tasks)
    assert (stopper.monitor, stopper.mode) == ("val_sent_macro_f1", "auto")
