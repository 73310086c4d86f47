"""`kmtl.training.tensorboard.TaskTensorBoard`: one TensorBoard section per task, read back from the event files."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.training.tensorboard import TaskTensorBoard, tensorboard_tag

TASKS = ("sent", "ner", "score")


def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0),
            kmtl.tasks.Regression("score", dropout=0.0)]


def _examples(n=16):
    words = "the a good bad film john paris story".split()
    rng = np.random.default_rng(0)
    sent = [Example(text=" ".join(rng.choice(words, 3)), label=["neg", "pos"][i % 2]) for i in range(n)]
    ner = []
    for i in range(n):
        toks = tuple(rng.choice(words, 2 + i % 4))
        ner.append(Example(tokens=toks, label=tuple("B-PER" if t == "john" else "O" for t in toks)))
    score = [Example(text=" ".join(rng.choice(words, 3)), label=float(i % 5)) for i in range(n)]
    return {"sent": sent, "ner": ner, "score": score}


def _read(folder):
    """{tag: [(step, value), ...]} of every tensor summary in one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    logs = tmp_path_factory.mktemp("tb") / "logs"
    encoder = tiny_encoder(seed=0)
    pre = encoder.preprocessor(16)
    tasks = _tasks()
    train = kmtl.data.mixture(tasks, _examples(), pre, batch_size=12, seed=1)
    dev = kmtl.data.validation_dataset(tasks, _examples(8), pre)
    model = kmtl.build_model(encoder, tasks)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    weighting = kmtl.weighting.LinearWeighting({t: 1.0 for t in TASKS}, {"sent": 0.0, "ner": 1.0, "score": 2.0}, 2)
    history = model.fit(train, validation_data=dev, epochs=2, steps_per_epoch=2, verbose=0,
                        callbacks=[weighting, TaskTensorBoard(str(logs))])
    return _read(logs / "train"), _read(logs / "validation"), history.history, logs


def test_each_task_has_its_own_section_in_train_and_validation(fitted):
    train, val, history, _ = fitted
    for run in (train, val):
        for task in TASKS:
            assert f"{task}/loss" in run
        assert "sent/accuracy" in run and "sent/macro_f1" in run
        assert "ner/entity_f1" in run and "score/pearson" in run
        assert "run/loss" in run
        assert not [t for t in run if t.startswith("epoch_")]  # nothing left in Keras' one flat group
    assert "run/learning_rate" in train
    assert {f"loss_weights/{t}" for t in TASKS} <= set(train)
    # the figures are History's, epoch by epoch
    for tag, key in [("sent/accuracy", "sent_accuracy"), ("run/loss", "loss"), ("loss_weights/score", "loss_weight_score")]:
        assert [s for s, _ in train[tag]] == [0, 1]
        np.testing.assert_allclose([float(v) for _, v in train[tag]], history[key], rtol=1e-6)
    np.testing.assert_allclose([float(v) for _, v in val["score/pearson"]], history["val_score_pearson"], rtol=1e-6)
    np.testing.assert_allclose([float(v) for _, v in train["loss_weights/sent"]], [1.0, 0.0])  # LinearWeighting
    # Keras' evaluation_<name>_vs_iterations (the validation curves again, against steps): off by default
    assert not [t for t in val if t.startswith("evaluation_")]


def test_custom_scalars_layout_puts_all_loss_weights_on_one_chart(fitted):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    train, _, _, _ = fitted
    (step, value), = train[metadata.CONFIG_SUMMARY_TAG]
    layout = layout_pb2.Layout.FromString(value.item())
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert set(charts) == {"loss weights", "task losses"}

    def matched(regexes):
        return {t for t in train if any(re.search(r, t) for r in regexes)}

    assert matched(charts["loss weights"]) == {f"loss_weights/{t}" for t in TASKS}
    assert matched(charts["task losses"]) == {f"{t}/loss" for t in TASKS}


@pytest.mark.parametrize("name,tasks,expected", [
    ("ner_loss", ["ner", "ner_extra"], "ner/loss"),
    ("ner_extra_loss", ["ner", "ner_extra"], "ner_extra/loss"),  # the longest task name wins
    ("loss_weight_ner", ["ner"], "loss_weights/ner"),
    ("loss_weight_x", ["ner"], "run/loss_weight_x"),  # not a task: a run-level figure
    ("gradnorm_ner", ["ner"], "run/gradnorm_ner"),
    ("learning_rate", ["ner"], "run/learning_rate"),
])
def test_tag_of_each_log_name(name, tasks, expected):
    assert tensorboard_tag(name, tasks) == expected


def test_a_task_named_like_a_section_moves_the_section():
    callback = TaskTensorBoard("unused", tasks=["run", "loss_weights"], write_graph=False)
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    assert callback.tag("run_loss") == "run/loss"
    assert callback.tag("loss") == "run-level/loss"
    assert callback.tag("loss_weight_run") == "loss-weights/run"


def test_evaluation_vs_iterations_and_batch_figures_when_asked_stay_grouped(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(inputs), "b": keras.layers.Dense(1, name="b")(inputs)})
    model.compile(optimizer="sgd", loss={"a": "mse", "b": "mse"})
    x, y = np.ones((4, 2), "float32"), {"a": np.zeros((4, 1), "float32"), "b": np.ones((4, 1), "float32")}
    callback = TaskTensorBoard(str(tmp_path), evaluation_vs_iterations=True, write_graph=False, update_freq="batch")
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[callback])
    val = _read(tmp_path / "validation")
    assert callback.tasks == ["a", "b"]  # a plain Keras model: its output names
    assert {"a/loss", "b/loss", "run/loss", "evaluation_vs_iterations/a/loss", "evaluation_vs_iterations/run/loss"} <= set(val)
    assert not [t for t in val if "/" not in t]
    train = _read(tmp_path / "train")
    assert {"a/batch_loss", "run/batch_loss", "a/loss"} <= set(train)
    assert [t for t in train if "/" not in t] == ["custom_scalars__config__"]  # the layout, not a scalar card


def _screenshot_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "tensorboard_screenshot.py"
    spec = importlib.util.spec_from_file_location("tensorboard_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_screenshot_tool_refuses_a_missing_logdir_before_starting_anything(tmp_path, capsys):
    assert _screenshot_tool().main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    assert "LOGDIR" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_screenshot_of_the_scalars_page_in_headless_chromium(fitted, tmp_path_factory):
    import shutil

    tool = _screenshot_tool()
    if not any(shutil.which(b) for b in tool.BROWSERS):
        pytest.skip("no Chromium here (apt-get install chromium)")
    logs = fitted[3]
    out = tmp_path_factory.mktemp("shot") / "scalars.png"
    assert tool.main([str(logs), "--out", str(out), "--height", "1200"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000  # a page, not a blank
