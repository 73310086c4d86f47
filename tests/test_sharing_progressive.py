"""Progressive networks (kmtl.sharing.progressive): a task added to a trained model in a new
column beside the frozen encoder; the old tasks' answers do not move by a bit."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.errors import KmtlError
from kmtl.sharing import ProgressiveColumns, ProgressiveNetworks, make_sharing, trainable_parameter_counts
from kmtl.sharing.progressive import column_routing
from kmtl.training.warm_start import warm_start

HIDDEN, LAYERS, SIZE = 32, 2, 8  # tiny_encoder's hidden size and layers; the columns' width
OLD, NEW = ("sentiment", "entities"), "topic"
TEXTS = ["the film was good", "john said paris", "a bad movie", "new york", "sports news today", "london"]
IDS = [0, 1, 2, 0, 1, 2]  # the old tasks' rows are 0, 1, 3, 4


def _old_tasks():
    return [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
            kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"]))]


def _tasks():
    return _old_tasks() + [kmtl.tasks.Classification(NEW, ["sports", "politics", "culture"])]


def _inputs(pre, texts=TEXTS, task_ids=IDS):
    x = dict(pre.encode_text(tf.constant(texts)))
    x["task_id"] = tf.constant(task_ids, tf.int32)
    return x


def _outputs(model, x):
    return {name: np.asarray(value) for name, value in model(x, training=False).items()}


def _old_rows(outputs, task_ids=IDS):
    rows = [i for i, t in enumerate(task_ids) if t < len(OLD)]
    return {name: tf.gather(outputs[name], rows) if tf.is_tensor(outputs[name]) else outputs[name][rows] for name in OLD}


def _assert_equal(got, want):
    for name in want:
        assert np.array_equal(got[name], want[name]), (name, np.abs(got[name] - want[name]).max())


def _columns(model) -> ProgressiveColumns:
    return model.get_layer("progressive_columns")


def _randomize(variables, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(v.numpy() + rng.normal(scale=scale, size=v.shape).astype("float32"))


def _examples():
    sentences = ["the film was good", "a bad movie", "great acting", "not very good", "the plot", "bad story"]
    return {
        "sentiment": [Example(text=t, label=["negative", "positive"][i % 2]) for i, t in enumerate(sentences)],
        "entities": [Example(tokens=("john", "said", "paris"), label=("B-PER", "O", "B-LOC")),
                     Example(tokens=("new", "york"), label=("B-LOC", "I-LOC")),
                     Example(tokens=("the", "company", "in", "london"), label=("O", "O", "O", "B-LOC"))],
        NEW: [Example(text=t, label=label) for t, label in (("the match ended", "sports"), ("a vote in parliament",
              "politics"), ("a new opera", "culture"), ("the striker scored", "sports"))],
    }


@pytest.fixture(scope="module")
def runs():
    """A "finished" two-task run (sharing full, its encoder and heads moved away from the
    pretrained start) and a three-task progressive model warm-started from it."""
    old_encoder = tiny_encoder(seed=0)
    old = kmtl.build_model(old_encoder, _old_tasks(), sharing="full", name="old")
    _randomize([v for v in old.weights if not v.path.startswith(("loss_weight", "teacher"))], seed=1, scale=0.05)
    encoder = tiny_encoder(seed=2)  # another start: warm_start must bring the run's weights over
    model = kmtl.build_model(encoder, _tasks(), sharing="progressive", progressive_tasks=[NEW], column_size=SIZE)
    done = warm_start(model, old)
    pre = encoder.preprocessor(16)
    x = _inputs(pre)
    return {"old": old, "model": model, "done": done, "x": x, "pre": pre,
            "old_outputs": _old_rows(_outputs(old, x))}


# ------------------------------------------------------------------ build, warm start, what trains
def test_warm_start_from_a_full_run_gives_the_old_answers_exactly(runs):
    model, done = runs["model"], runs["done"]
    assert done["heads"] == list(OLD)
    assert all(p.startswith("progressive_columns/") or p.startswith(f"{NEW}/") or "loss_weight" in p
               or p == "teacher_lambda" for p in done["fresh"]), done["fresh"]
    _assert_equal(_old_rows(_outputs(model, runs["x"])), runs["old_outputs"])
    assert make_sharing("progressive", progressive_tasks=[NEW], column_size=SIZE) == ProgressiveNetworks([NEW], SIZE)
    assert model.sharing == "progressive" and model.sharing_options == {"tasks": [NEW], "size": SIZE}
    assert sorted(model.input) == ["padding_mask", "segment_ids", "task_id", "token_ids"]


def test_only_the_new_column_and_head_train_and_count_as_theirs(runs):
    model = runs["model"]
    columns = _columns(model)
    assert columns.column_of_task() == (-1, -1, 0) and columns.tasks_without_column() == list(OLD)
    trainable = {v.path for v in model.trainable_weights}
    assert trainable == {v.path for v in columns.weights} | {f"{NEW}/kernel", f"{NEW}/bias"}
    assert all(not layer.trainable for name in OLD for layer in model.layers if layer.name.startswith(name))
    n = LAYERS
    column = (n + 1) * (HIDDEN * SIZE + 2 * SIZE * SIZE + 2 * SIZE + 1) - SIZE * SIZE + SIZE * HIDDEN + HIDDEN
    counts = trainable_parameter_counts(model)
    assert counts["parts"]["sharing"] == {"total": column, "trainable": column}
    assert counts["parts"]["backbone"]["trainable"] == 0
    assert counts["parts"]["heads"]["trainable"] == HIDDEN * 3 + 3  # the new head only
    assert counts["trainable"] == column + HIDDEN * 3 + 3


def test_gradients_reach_only_the_new_column_and_head(runs):
    model, x = runs["model"], runs["x"]
    saved = [(v, v.numpy().copy()) for v in _columns(model).weights]
    _randomize(_columns(model).weights, seed=3, scale=0.1)  # a zero up-projection stops gradients below it
    try:
        with tf.GradientTape(persistent=True) as tape:
            out = model(x, training=False)
            # each task's loss over its own rows, as in training (other rows weigh 0)
            old_loss = sum(tf.reduce_sum(tf.square(_old_rows(out)[name])) for name in OLD)
            new_loss = tf.reduce_sum(tf.square(tf.gather(out[NEW], [i for i, t in enumerate(IDS) if t == 2])))
        watched = model.trainable_weights
        old_grads = tape.gradient(old_loss, watched)
        assert all(g is None or float(tf.norm(g)) == 0 for g in old_grads)  # nothing of an old task trains
        new_grads = dict(zip([v.path for v in watched], tape.gradient(new_loss, watched)))
        assert all(g is not None and float(tf.norm(g)) > 0 for g in new_grads.values()), \
            [p for p, g in new_grads.items() if g is None or float(tf.norm(g)) == 0]
    finally:
        for v, value in saved:
            v.assign(value)


# ------------------------------------------------------------------ training
def test_fit_in_joint_and_alternating_batches_keeps_the_old_answers_bit_for_bit(runs):
    model, x, old = runs["model"], runs["x"], runs["old"]
    tasks = model.tasks
    before = {v.path: v.numpy().copy() for v in model.weights}
    new_before = _outputs(model, x)[NEW]
    # AdamW: weight decay would move any trainable weight, gradient or not
    model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1), run_eagerly=True)
    frozen_model = kmtl.build_model(tiny_encoder(seed=0), _old_tasks(), sharing="frozen", name="plain_frozen")
    warm_start(frozen_model, old)
    # a joint batch under GradNorm (a kmtl in-step hook that takes per-task gradients and measures
    # them on a "shared" variable: here the column's), then an alternating batch under Keras' own
    # step; a fit costs seconds on 2 CPUs, so one batch each
    for seed, (granularity, strategy) in enumerate((("joint", "gradnorm"), ("alternating", "static"))):
        data = kmtl.data.mixture(tasks, _examples(), runs["pre"], batch_size=6, granularity=granularity,
                                 steps_per_epoch=1, seed=seed)
        history = model.fit(data, epochs=1, verbose=0, callbacks=[kmtl.weighting.get_weighting(strategy)])
        assert np.isfinite(history.history["loss"]).all(), strategy
    assert f"{NEW}_lateral_scale" in history.history
    moved = {v.path for v in model.weights if v.path not in before or not np.array_equal(v.numpy(), before[v.path])}
    assert {"progressive_columns/output_kernel", "progressive_columns/lateral_kernel", f"{NEW}/kernel"} <= moved
    assert all(p.startswith(("progressive_columns/", f"{NEW}/", "loss_weight_", "weighting_state")) for p in moved), moved
    now = _outputs(model, x)
    assert not np.allclose(now[NEW], new_before)
    # bit for bit: the run it came from, and a plain frozen model with the run's weights
    _assert_equal(_old_rows(now), runs["old_outputs"])
    _assert_equal(_old_rows(now), _old_rows(_outputs(frozen_model, x)))


# ------------------------------------------------------------------ routing
def test_changing_a_column_changes_only_its_tasks_answers():
    encoder = tiny_encoder(seed=4)
    model = kmtl.build_model(encoder, _tasks(), sharing="progressive", column_size=4, pooling="cls")
    columns = _columns(model)
    assert columns.column_of_task() == (0, 1, 2) and columns.tasks_without_column() == []
    assert all(model.get_layer(t.name).trainable for t in model.tasks)  # every task has a column: all heads train
    x = _inputs(encoder.preprocessor(16))
    start = _outputs(model, x)
    plain = kmtl.build_model(tiny_encoder(seed=4), _tasks(), sharing="frozen", pooling="cls")
    for t in model.tasks:
        plain.get_layer(t.name).set_weights(model.get_layer(t.name).get_weights())
    _assert_equal(start, _outputs(plain, x))  # fresh columns add exactly nothing
    # move column 2 (topic's) only: the rows of tasks 0 and 1 do not change by a bit
    rng = np.random.default_rng(0)
    for v in columns.weights:
        value = v.numpy()
        value[2] += rng.normal(scale=0.3, size=value[2].shape).astype("float32")
        v.assign(value)
    after = _outputs(model, x)
    rows = [i for i, t in enumerate(IDS) if t < 2]
    for name in after:
        assert np.array_equal(after[name][rows], start[name][rows]), name
    topic_rows = [i for i, t in enumerate(IDS) if t == 2]
    assert not np.allclose(after[NEW][topic_rows], start[NEW][topic_rows])
    # an id outside the tasks reads the frozen column
    wild = _outputs(model, {**x, "task_id": tf.constant([7, -1, 2, 2, 2, 2])})
    np.testing.assert_array_equal(wild["sentiment"][:2], _outputs(plain, x)["sentiment"][:2])


def test_layer_routing_and_its_errors():
    assert column_routing(["c"], ["a", "b", "c"]) == (-1, -1, 0)
    assert column_routing(["c", "a"], ["a", "b", "c"]) == (1, -1, 0)
    with pytest.raises(ValueError, match="sharing.progressive_tasks: no task called 'd'; the tasks are: a, b, c"):
        column_routing(["d"], ["a", "b", "c"])
    unnamed = ProgressiveColumns(num_tasks=2, size=2, column_tasks=["b"])
    with pytest.raises(ValueError, match="set task_names"):
        unnamed.column_of_task()
    with pytest.raises(ValueError, match="'a' more than once"):
        ProgressiveNetworks(["a", "a"])
    with pytest.raises(ValueError, match="column_size must be a positive integer"):
        ProgressiveNetworks(size=0)
    with pytest.raises(ValueError, match="sharing.progressive_tasks: no task called 'wnut'"):
        kmtl.build_model(tiny_encoder(seed=0), _old_tasks(), sharing="progressive", progressive_tasks=["wnut"])


# ------------------------------------------------------------------ save, load, export
def test_keras_file_round_trip(tmp_path, runs):
    model, x = runs["model"], runs["x"]
    want = _outputs(model, x)
    model.save(tmp_path / "progressive.keras")
    loaded = keras.saving.load_model(tmp_path / "progressive.keras")
    assert loaded.sharing == "progressive" and loaded.sharing_options == model.sharing_options
    got = _outputs(loaded, x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert {v.path for v in loaded.trainable_weights} == {v.path for v in model.trainable_weights}
    assert _columns(loaded).column_of_task() == (-1, -1, 0)


def test_saved_model_serves_what_the_keras_model_computes(tmp_path):
    import tensorflow_text  # noqa: F401

    # one layer, two sentence tasks (one old, one new): less to trace than the module's model
    encoder = tiny_encoder(seed=5, num_layers=1)
    tasks = [_tasks()[0], _tasks()[2]]
    model = kmtl.build_model(encoder, tasks, sharing="progressive", progressive_tasks=[NEW], column_size=4)
    _randomize(_columns(model).weights, seed=5)
    pre = encoder.preprocessor(16)
    path = kmtl.export.export_saved_model(model, pre, tmp_path, "progressive")
    info = json.loads((path / "assets.extra" / "kmtl.json").read_text())
    assert info["sharing"] == {"mode": "progressive", "tasks": [NEW], "size": 4}
    loaded = tf.saved_model.load(str(path))
    texts = ["the film was good", "the match ended"]
    served = loaded.signatures["serving_default"](text=tf.constant(texts))  # the batch tiled once per task
    for task_id, name in enumerate(("sentiment", NEW)):
        want = tf.nn.softmax(model(_inputs(pre, texts, [task_id] * 2), training=False)[name]).numpy()
        np.testing.assert_allclose(served[f"{name}_probabilities"].numpy(), want, atol=1e-5, err_msg=name)
        alone = loaded.signatures[name](text=tf.constant(texts))[f"{name}_probabilities"].numpy()
        np.testing.assert_allclose(alone, want, atol=1e-5, err_msg=name)
    # the column is in the served graph: the new task does not answer as the frozen encoder would
    frozen = tf.nn.softmax(model(_inputs(pre, texts, [0, 0]), training=False)[NEW]).numpy()
    assert not np.allclose(served[f"{NEW}_probabilities"].numpy(), frozen, atol=1e-4)


# ------------------------------------------------------------------ config and warm-start errors
def _config(tmp_path, sharing):
    from kmtl.config import config_from_dict

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 1.0}\n')
    tasks = [{"name": n, "kind": "regression", "train": {"format": "jsonl", "path": str(data)}} for n in ("a", "b")]
    return config_from_dict({"tasks": tasks, "sharing": sharing}, tmp_path)


def test_config_reads_the_options_and_errors_name_the_key(tmp_path):
    from kmtl.errors import ConfigError

    config = _config(tmp_path, {"mode": "progressive", "progressive_tasks": ["b"], "column_size": 16})
    options = config.sharing.options()
    assert options == {"progressive_tasks": ["b"], "column_size": 16}
    assert make_sharing(config.sharing.mode, **options) == ProgressiveNetworks(["b"], 16)
    assert _config(tmp_path, {"mode": "progressive"}).sharing.options() == {}  # every task a column
    for sharing, where, message in [
            ({"mode": "progressive", "progressive_tasks": []}, "sharing.progressive_tasks", "at least 1 item"),
            ({"mode": "progressive", "column_size": 0}, "sharing.column_size", "greater than or equal to 1"),
            ({"mode": "adapters", "progressive_tasks": ["b"]}, "sharing.progressive_tasks",
             "only used when mode is progressive")]:
        with pytest.raises(ConfigError) as err:
            _config(tmp_path, sharing)
        problems = err.value.problems
        assert len(problems) == 1 and problems[0][0] == where and message in problems[0][1], problems
    # a name that is not a task: at load, naming the list item; from Python, when the model is built
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, {"mode": "progressive", "progressive_tasks": ["a", "bb"]})
    assert err.value.problems == [("sharing.progressive_tasks[1]", "not a task name (tasks: a, b); did you mean 'b'?")]
    with pytest.raises(ValueError, match="sharing.progressive_tasks: no task called 'c'; the tasks are: a, b"):
        kmtl.build_model(tiny_encoder(seed=0), [kmtl.tasks.Regression(n) for n in ("a", "b")], sharing="progressive",
                         progressive_tasks=["c"])


def test_warm_start_refuses_what_would_change_the_old_answers(runs):
    old = runs["old"]
    # an old task whose labels changed has no head to carry over: it would stay frozen at random
    relabelled = [kmtl.tasks.Classification("sentiment", ["neg", "neu", "pos"])] + _tasks()[1:]
    model = kmtl.build_model(tiny_encoder(seed=0), relabelled, sharing="progressive", progressive_tasks=[NEW],
                             column_size=2)
    with pytest.raises(KmtlError, match="'sentiment' have no column"):
        warm_start(model, old)
    adapted = kmtl.build_model(tiny_encoder(seed=0), _old_tasks(), sharing="adapters", adapter_size=2)
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), sharing="progressive", progressive_tasks=[NEW],
                             column_size=2)
    with pytest.raises(KmtlError, match="trained with sharing 'adapters'"):
        warm_start(model, adapted)


def test_tasks_without_a_column_stay_out_of_the_training_mixture(tmp_path):
    """Their encoder and heads are frozen: their batches would cost steps and teach nothing. The
    trainer leaves them out of the mixture (steps count the column tasks only) and evaluates them."""
    from kmtl.config import load_config
    from kmtl.sharing import make_sharing
    from kmtl.training import train

    assert make_sharing("progressive", progressive_tasks=[NEW]).frozen_tasks(["sentiment", NEW]) == ["sentiment"]
    assert make_sharing("progressive").frozen_tasks(["sentiment", NEW]) == []
    assert make_sharing("adapters").frozen_tasks(["sentiment", NEW]) == []

    (tmp_path / "s.tsv").write_text("s\tl\n" + "".join(f"good film {i}\tpositive\nbad film {i}\tnegative\n"
                                                        for i in range(20)))
    (tmp_path / "n.tsv").write_text("s\tl\n" + "".join(f"the match {i}\tsports\na vote {i}\tpolitics\n"
                                                        for i in range(4)))
    (tmp_path / "c.yaml").write_text(f"""
name: p
backbone: tiny
max_length: 16
tasks:
  - {{name: sentiment, kind: classification, train: {{format: tsv, path: s.tsv, text: s, label: l}},
     dev: {{format: tsv, path: s.tsv, text: s, label: l}}}}
  - {{name: {NEW}, kind: classification, train: {{format: tsv, path: n.tsv, text: s, label: l}}}}
sharing: {{mode: progressive, progressive_tasks: [{NEW}], column_size: 4}}
mixture: {{batch_size: 4}}
training: {{epochs: 1}}
export: {{enabled: false}}
""")
    lines = []
    result = train(load_config(tmp_path / "c.yaml"), verbose=0, echo=lines.append)
    text = "\n".join(lines)
    assert "not trained (sharing progressive trains nothing of theirs), evaluated: sentiment" in text
    assert "1 epochs x 2 steps" in text  # the new task's 8 examples in batches of 4; not 48 / 4
    assert "accuracy" in result.metrics["sentiment"]
