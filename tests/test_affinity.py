"""Negative-transfer report: gradient cosines and TAG's lookahead affinity (`kmtl.training.affinity`),
task groupings (`kmtl.compare.grouping`), the heat map and `kmtl affinity`.

Cheap by design: one tiny model and its probe batches are built once for the module (encoding
the probes traces the tokenizer), the callback is called directly on it, and the two short
`fit` runs are eager; the CLI test trains 4 steps.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.cli import main
from kmtl.compare.grouping import bell, best_grouping, grouping_score, partitions, rank_groupings, suggest_groupings
from kmtl.data.example import Example
from kmtl.sharing.counts import head_layers
from kmtl.training.affinity import TaskAffinity, affinity_key, cosine_key, probe_batches, shared_indices

WORDS = "the a good bad film john paris story".split()


def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0),
            kmtl.tasks.Regression("score", dropout=0.0)]


def _examples():
    rng = np.random.default_rng(0)
    sent = [Example(text=" ".join(rng.choice(WORDS, 3)), label=["neg", "pos"][i % 2]) for i in range(16)]
    ner = []
    for i in range(16):
        toks = tuple(rng.choice(WORDS, 2 + i % 4))
        ner.append(Example(tokens=toks, label=tuple("B-PER" if t == "john" else "O" for t in toks)))
    score = [Example(text=" ".join(rng.choice(WORDS, 3)), label=float(i % 5)) for i in range(16)]
    return {"sent": sent, "ner": ner, "score": score}


def _model(seed=0, tasks=None):
    model = kmtl.build_model(tiny_encoder(seed=seed), tasks or _tasks(), max_length=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    return model


@pytest.fixture(scope="module")
def setup():
    """A tiny 3-task model and one probe batch of 8 examples per task."""
    model = _model()
    return model, probe_batches(model.tasks, _examples(), model.preprocessor, size=8)


def _loss(model, name, batch):
    """A task's mean loss over the examples it owns, written out independently of the callback."""
    x, y, w = batch
    task = next(t for t in model.tasks if t.name == name)
    pred = model({k: v for k, v in x.items() if k != "task_id"}, training=False)[name]
    per = tf.cast(task.per_example_loss(task.conform_label(y[name], pred), pred), tf.float32)
    return tf.reduce_sum(per * w[name]) / tf.reduce_sum(w[name])


def _shared(model):
    heads = {id(v) for t in model.tasks for layer in head_layers(model, t.name) for v in layer.weights}
    return [v for v in model.trainable_variables if id(v) not in heads]


def _flat_gradient(model, name, batch, variables):
    with tf.GradientTape() as tape:
        loss = _loss(model, name, batch)
    return np.concatenate([np.ravel(tf.convert_to_tensor(g).numpy()).astype(np.float64)
                           for g in tape.gradient(loss, variables)])


# --------------------------------------------------------------------------- the figures


def test_gradient_cosines_are_a_cosine_matrix_equal_to_an_independent_computation(setup):
    model, probe = setup
    callback = TaskAffinity(probe, lookahead=False)
    callback.set_model(model)
    row = callback.probe_now()
    cosine = np.array(row["cosine"])
    assert callback.task_names == ["sent", "ner", "score"] and cosine.shape == (3, 3)
    np.testing.assert_allclose(np.diag(cosine), 1.0, atol=1e-6)
    np.testing.assert_allclose(cosine, cosine.T, atol=1e-12)
    assert np.all(cosine >= -1.0) and np.all(cosine <= 1.0)
    assert row["affinity"] is None  # lookahead off
    # with full sharing every trainable variable outside the heads is shared
    shared = _shared(model)
    assert row["shared_parameters"] == sum(int(np.prod(v.shape)) for v in shared)
    a = _flat_gradient(model, "sent", probe["sent"], shared)
    b = _flat_gradient(model, "ner", probe["ner"], shared)
    expected = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine[0, 1] == pytest.approx(expected, abs=1e-5)
    assert row["losses"]["ner"] == pytest.approx(float(_loss(model, "ner", probe["ner"])), rel=1e-6)


def test_shared_variables_leave_out_per_task_slices_and_own_copies():
    v = tf.Variable(tf.zeros([2, 2]))
    stacked = [[tf.constant([[1.0, 2.0], [0.0, 0.0]])], [tf.constant([[0.0, 0.0], [3.0, 0.0]])]]  # slice per task
    assert shared_indices([v], stacked) == []
    assert shared_indices([v], [[tf.ones([2, 2])], [tf.zeros([2, 2])]]) == []  # one task's own copy
    assert shared_indices([v], [[tf.ones([2, 2])], [None]]) == []  # a head: the other loss does not reach it
    assert shared_indices([v], [[tf.ones([2, 2])], [tf.constant([[0.0, 0.0], [0.0, 5.0]])]]) == [0]


def test_lookahead_affinity_equals_a_real_sgd_step_and_identical_tasks_help_each_other(setup):
    _, probe = setup
    # two identical tasks: same labels, same examples, heads with the same weights
    twins = [kmtl.tasks.Classification("a", ["neg", "pos"], dropout=0.0),
             kmtl.tasks.Classification("b", ["neg", "pos"], dropout=0.0)]
    model = _model(seed=3, tasks=twins)
    model.get_layer("b").set_weights(model.get_layer("a").get_weights())
    x, y, w = probe["sent"]
    batches = {name: (x, {"a": y["sent"], "b": y["sent"]}, {"a": w["sent"], "b": w["sent"]}) for name in ("a", "b")}
    rate = 1e-3  # small enough for a first-order step: Z ≈ η |g|² / L > 0
    callback = TaskAffinity(batches, learning_rate=rate)
    callback.set_model(model)
    row = callback.probe_now()
    z, cosine = np.array(row["affinity"]), np.array(row["cosine"])
    assert cosine[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert z[0, 1] > 0 and z[1, 0] > 0 and z[0, 1] == pytest.approx(z[0, 0], rel=1e-4)

    # against a real step: assign θ_s - η g_a, measure L_b, put θ_s back
    shared = _shared(model)
    with tf.GradientTape() as tape:
        loss_a = _loss(model, "a", batches["a"])
    grads = tape.gradient(loss_a, shared)
    before_b = float(_loss(model, "b", batches["b"]))
    saved = [v.numpy().copy() for v in shared]
    for v, g in zip(shared, grads):
        v.assign(v.numpy() - rate * tf.convert_to_tensor(g).numpy())
    after_b = float(_loss(model, "b", batches["b"]))
    for v, value in zip(shared, saved):
        v.assign(value)
    assert z[0, 1] == pytest.approx(1.0 - after_b / before_b, rel=1e-3, abs=1e-6)


def test_the_callback_changes_no_weight_and_no_optimizer_state_and_logs_its_figures(setup):
    model, probe = setup
    model.fit(tf.data.Dataset.from_tensors(probe["sent"]), epochs=1, steps_per_epoch=1, verbose=0)  # optimizer state
    state = [v.numpy().copy() for v in model.weights + model.optimizer.variables]
    callback = TaskAffinity(probe, learning_rate=0.1)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.probe_now()
    logs = {}
    callback.on_epoch_end(0, logs)
    after = [v.numpy() for v in model.weights + model.optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(state, after))  # bit-identical
    assert sorted(logs) == sorted([cosine_key("sent", "ner"), cosine_key("sent", "score"), cosine_key("ner", "score")]
                                  + [affinity_key(a, b) for a in ("sent", "ner", "score")
                                     for b in ("sent", "ner", "score") if a != b])


def test_fit_with_the_callback_trains_exactly_as_without_it(setup):
    _, probe = setup
    data = tf.data.Dataset.from_tensors(probe["ner"]).concatenate(tf.data.Dataset.from_tensors(probe["score"]))
    runs = []
    for with_callback in (False, True):
        model = _model(seed=0)
        callbacks = [TaskAffinity(probe, every=1)] if with_callback else []
        history = model.fit(data, epochs=2, steps_per_epoch=1, verbose=0, callbacks=callbacks).history
        runs.append(([v.numpy() for v in model.weights], history, callbacks))
    (plain, _, _), (probed, history, (callback,)) = runs
    assert all(np.array_equal(a, b) for a, b in zip(plain, probed))
    assert [row["step"] for row in callback.series] == [1, 2]  # after every optimizer step, across epochs
    assert len(history[cosine_key("sent", "ner")]) == 2 and len(history[affinity_key("score", "sent")]) == 2
    assert callback.cosine.shape == (3, 3) and callback.lookahead_probes == 2


# --------------------------------------------------------------------------- groupings


def test_grouping_finds_the_obvious_partition_and_scores_it_by_hand():
    names = ["a", "b", "c", "d"]
    z = np.full((4, 4), -0.2)
    z[0, 1], z[1, 0], z[2, 3], z[3, 2] = 0.5, 0.3, 0.4, 0.6  # {a, b} and {c, d} help each other
    best = best_grouping(z, names, 2)
    assert best.groups == (("a", "b"), ("c", "d")) and best.score == pytest.approx(0.5 + 0.3 + 0.4 + 0.6)
    # one group: each task gets the mean of the three others onto it
    assert suggest_groupings(z, names)[1].score == pytest.approx(sum((z[:, j].sum() - z[j, j]) / 3 for j in range(4)))
    assert suggest_groupings(z, names)[4].score == 0.0  # all alone
    ranked = rank_groupings(z, names, 2)
    assert len(ranked) == 7 and ranked[0] == best and all(r.score <= best.score for r in ranked)
    assert grouping_score(z, [[0, 1], [2, 3]]) == pytest.approx(best.score)
    assert [sum(1 for k in range(1, n + 1) for _ in partitions(n, k)) for n in range(1, 9)] == [bell(n) for n in range(1, 9)]
    with pytest.raises(ValueError, match="1 to 4 groups"):
        rank_groupings(z, names, 5)


# --------------------------------------------------------------------------- the command


def test_kmtl_affinity_writes_json_markdown_and_heat_map(tmp_path, capsys):
    from test_compare import NER, SCORE, SENTIMENT, write_config, write_data

    write_data(tmp_path)
    config = write_config(tmp_path, name="three", tasks=SENTIMENT.format(limit=16) + NER + SCORE,
                          extra=f"output_dir: {tmp_path / 'runs'}\n")
    measured = tmp_path / "compare.json"  # a kmtl compare report: ner gained, sentiment and score lost
    measured.write_text(json.dumps({"tasks": {"sentiment": {"relative_percent": -1.0}, "ner": {"relative_percent": 2.0},
                                              "score": {"relative_percent": -0.5}}}))
    assert main(["affinity", str(config), "--steps", "4", "--every", "2", "--compare", str(measured), "--quiet"]) == 0
    folder = tmp_path / "runs" / "three" / "affinity"
    report = json.loads((folder / "affinity.json").read_text())
    assert report["tasks"] == ["sentiment", "ner", "score"] and report["probes"] == 2 and report["steps"] == 4
    assert report["lookahead_probes"] == 2  # the last step's decayed rate is 0: the step just taken sets η
    assert np.array(report["cosine"]).shape == (3, 3) and np.array(report["affinity"]).shape == (3, 3)
    assert set(report["groupings"]) == {"1", "2", "3"} and "--steps 4 --every 2 --compare" in report["command"]
    assert (folder / "affinity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "affinity.md").read_text()
    assert "## Suggested groupings" in markdown and "![task affinity](affinity.png)" in markdown
    check = report["compare"]
    assert check["tasks"]["ner"]["delta_percent"] == 2.0 and "## Against the measured Δ" in markdown
    onto = report["affinity_onto"]
    assert check["agreeing"] == sum((onto[t] > 0) == (d > 0) for t, d in (("sentiment", -1), ("ner", 2), ("score", -0.5)))
    out = capsys.readouterr().out
    assert "gradient cosine" in out and "suggested groupings" in out
    assert not (tmp_path / "runs" / "three" / "run.json").exists()  # the config's own run folder is untouched
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "run" / "logs" / "train"))
    events.Reload()
    assert {"run/grad_cosine/sentiment__ner", "run/affinity/score_to_ner"} <= set(events.Tags()["tensors"])

    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("batch_size: 8", "batch_size: 0"))
    assert main(["affinity", str(bad)]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["affinity", str(config), "--groups", "4"]) == 2
    assert "1 to 3 groups" in capsys.readouterr().err
    assert main(["affinity", str(config), "--compare", str(tmp_path / "none.json")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
