"""Prefix tuning (kmtl.sharing.prefix): the prefixed twin layer, routing, what trains, fit, config,
.keras save/load, and export with the reparameterisation MLP folded away."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.sharing import Prefix, PrefixedTransformerLayer, TaskPrefixes, fold_prefixes, make_sharing
from kmtl.sharing import trainable_parameter_counts as counts_of

HIDDEN, LAYERS, HEADS = 32, 2, 2  # tiny_encoder's defaults
LENGTH, MLP = 3, 8
TEXTS = ["the film was good", "john said paris", "a bad movie", "new york", "the plot is great", "london"]
TASK_IDS = [0, 1, 2, 0, 1, 2]


def _tasks():
    return [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
            kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"])),
            kmtl.tasks.PairRegression("similarity")]


def _inputs(encoder, texts, task_ids, max_length=16):
    x = dict(encoder.preprocessor(max_length).encode_text(tf.constant(texts)))
    x["task_id"] = tf.constant(task_ids, tf.int32)
    return x


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _prefixes(model):
    return next(layer for layer in model.layers if isinstance(layer, TaskPrefixes))


def _outputs(model, x):
    return {name: np.asarray(value) for name, value in model(x, training=False).items()}


def _randomize_heads(model):
    """Random heads (zero-initialised ones would hide what the encoder does)."""
    rng = np.random.default_rng(0)
    for task in model.tasks:
        for v in model.get_layer(task.name).weights:
            v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))


@pytest.fixture(scope="module")
def built():
    """A prefix model on a tiny backbone (read-only: tests that change weights put them back)."""
    encoder = tiny_encoder(seed=3)
    model = kmtl.build_model(encoder, _tasks(), sharing="prefix", prefix_length=LENGTH, prefix_hidden=MLP)
    _randomize_heads(model)
    return {"encoder": encoder, "model": model, "x": _inputs(encoder, TEXTS, TASK_IDS)}


# ------------------------------------------------------------------ shapes and what trains
def test_shapes_and_trainable_weights(built):
    model, x = built["model"], built["x"]
    assert sorted(model.input) == ["padding_mask", "segment_ids", "task_id", "token_ids"]
    out = _outputs(model, x)
    length = x["token_ids"].shape[1]
    assert {k: v.shape for k, v in out.items()} == {"sentiment": (6, 2), "entities": (6, length, 5), "similarity": (6, 1)}
    assert all(np.isfinite(v).all() for v in out.values())
    pairs = _prefixes(model)(x["task_id"])
    assert len(pairs) == LAYERS
    assert all(tuple(k.shape) == tuple(v.shape) == (6, LENGTH, HEADS, HIDDEN // HEADS) for k, v in pairs)

    # trainable: the prefix MLP and the heads; the backbone (LayerNorms included) is frozen
    heads = [v for t in model.tasks for v in model.get_layer(t.name).trainable_weights]
    prefix = _prefixes(model)
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in prefix.weights + heads}
    width = LAYERS * 2 * HIDDEN  # keys and values of every layer
    mlp = 3 * (LENGTH * HIDDEN + HIDDEN * MLP + MLP + MLP * width + width)
    counts = counts_of(model)
    assert counts["parts"]["sharing"] == {"total": mlp, "trainable": mlp}
    assert counts["parts"]["backbone"]["trainable"] == 0 and counts["trainable"] == mlp + _size(heads)

    # the option: plain prefixes (no MLP) and trainable LayerNorms
    other = kmtl.build_model(tiny_encoder(seed=3), _tasks(), sharing="prefix", prefix_length=LENGTH,
                             prefix_hidden=0, prefix_train_layer_norms=True)
    names = sorted({v.path.split("/")[0] + "/" + v.name for v in other.trainable_weights if "layer_norm" in v.path})
    assert len([v for v in other.trainable_weights if "layer_norm" in v.path]) == (1 + 2 * LAYERS) * 2, names
    assert [v.path for v in _prefixes(other).trainable_weights] == ["prefixes/prefix"]
    assert counts_of(other)["parts"]["sharing"]["trainable"] == 3 * LENGTH * width


# ------------------------------------------------------------------ the twin layer
def test_twin_layer_matches_keras_hub_attention(built):
    from keras_hub.layers import TransformerEncoder

    model_twin = next(layer for layer in built["model"].layers if isinstance(layer, PrefixedTransformerLayer))
    pre_norm = TransformerEncoder(2 * HIDDEN, HEADS, dropout=0.1, normalize_first=True)  # the other code paths
    pre_norm.build((None, None, HIDDEN))
    hidden = tf.random.stateless_normal([2, 5, HIDDEN], seed=[1, 2])
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    z = tf.random.stateless_normal([2, 4, HIDDEN], seed=[3, 4])
    for twin in (model_twin, PrefixedTransformerLayer(pre_norm)):
        encoder, attention = twin.encoder, twin.encoder._self_attention_layer
        # no prefix: exactly the wrapped layer
        empty = tf.zeros([2, 0, HEADS, HIDDEN // HEADS])
        np.testing.assert_allclose(twin(hidden, padding_mask=mask, prefix=(empty, empty)),
                                   encoder(hidden, padding_mask=mask), atol=1e-5)
        # prefixes that are the keys/values of real tokens z: the wrapped layer on [z; x], at x's positions
        want = encoder(tf.concat([z, hidden], 1), padding_mask=tf.concat([tf.ones([2, 4], tf.int32), mask], 1))[:, 4:]
        seen = encoder._self_attention_layer_norm(z) if encoder.normalize_first else z  # what attention reads
        prefix = (attention._key_dense(seen), attention._value_dense(seen))
        got = twin(hidden, padding_mask=mask, prefix=prefix)
        np.testing.assert_allclose(got, want, atol=1e-5)
        # and the prefixes matter (not the identity)
        assert np.abs(got - encoder(hidden, padding_mask=mask)).max() > 1e-2
    # dropout (attention probabilities, outputs) acts in training only
    trained = twin(hidden, padding_mask=mask, prefix=prefix, training=True)
    assert np.isfinite(trained).all() and np.abs(trained - got).max() > 1e-3
    with pytest.raises(ValueError, match="pass prefix="):
        twin(hidden, padding_mask=mask)


# ------------------------------------------------------------------ routing and gradients
def test_changing_one_tasks_prefixes_changes_only_its_examples(built):
    model, x = built["model"], built["x"]
    before = _outputs(model, x)
    saved = [v.numpy().copy() for v in _prefixes(model).weights]
    try:
        for v in _prefixes(model).weights:  # task 0 (sentiment) only: slice 0 of every variable
            v.assign(tf.tensor_scatter_nd_add(v, [[0]], tf.ones_like(v[:1])))
        after = _outputs(model, x)
    finally:
        for v, value in zip(_prefixes(model).weights, saved):
            v.assign(value)
    own = np.array(TASK_IDS) == 0
    for name in before:
        changed = np.abs(after[name] - before[name]).reshape(len(TEXTS), -1).max(axis=1) > 1e-4
        np.testing.assert_array_equal(changed, own, err_msg=name)


def test_one_tasks_loss_reaches_only_its_prefixes_and_head(built):
    model, x = built["model"], built["x"]
    rows = np.array(TASK_IDS) == 1  # the entities examples
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tf.boolean_mask(model(x, training=True)["entities"], rows)))
    grads = dict(zip([v.path for v in model.trainable_weights], tape.gradient(loss, model.trainable_weights)))
    for v in _prefixes(model).weights:
        norms = [float(tf.norm(grads[v.path][t])) for t in range(3)]
        assert norms[0] == norms[2] == 0.0 and norms[1] > 0, (v.path, norms)
    for path, g in grads.items():
        if path.startswith(("sentiment/", "similarity/")):
            assert g is None or float(tf.norm(g)) == 0.0, path
        elif path.startswith("entities/"):
            assert float(tf.norm(g)) > 0, path


# ------------------------------------------------------------------ training in joint batches
def test_fit_in_joint_batches():
    encoder = tiny_encoder(seed=5)
    tasks = _tasks()
    model = kmtl.build_model(encoder, tasks, sharing="prefix", prefix_length=LENGTH, prefix_hidden=MLP)
    pre = encoder.preprocessor(16)
    sentences = ["the film was good", "a bad movie", "great acting", "not very good", "the plot", "bad story"]
    examples = {  # similarity (task 2) has no data: its prefixes and head must not move
        "sentiment": [Example(text=t, label=["negative", "positive"][i % 2]) for i, t in enumerate(sentences)],
        "entities": [Example(tokens=("john", "said", "paris"), label=("B-PER", "O", "B-LOC")),
                     Example(tokens=("new", "york"), label=("B-LOC", "I-LOC"))],
    }
    data = kmtl.data.mixture(tasks, examples, pre, batch_size=6, granularity="joint", steps_per_epoch=3)
    x, _, _ = next(iter(data))
    assert len(set(x["task_id"].numpy().tolist())) == 2  # a mixed batch
    before = {v.path: v.numpy().copy() for v in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for v in model.weights:
        path, now = v.path, v.numpy()
        if path.startswith("prefixes/"):
            per_task = [not np.array_equal(now[t], before[path][t]) for t in range(3)]
            assert per_task == [True, True, False], (path, per_task)
        elif path.startswith(("sentiment/", "entities/")):
            assert not np.array_equal(now, before[path]), path
        elif not path.startswith("loss_weight"):  # backbone (frozen) and the similarity head
            assert np.array_equal(now, before[path]), path


# ------------------------------------------------------------------ config
def test_yaml_options_and_errors(tmp_path):
    from kmtl.config import config_from_dict
    from kmtl.errors import ConfigError

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 1.0}\n')
    base = {"tasks": [{"name": "a", "kind": "regression", "train": {"format": "jsonl", "path": str(data)}}]}
    config = config_from_dict({**base, "sharing": {"mode": "prefix", "prefix_length": 8, "prefix_hidden": 0,
                                                   "prefix_train_layer_norms": True}}, tmp_path)
    assert make_sharing(config.sharing.mode, **config.sharing.options()) == Prefix(8, 0, True)
    assert make_sharing("prefix") == Prefix(16, 512, False)
    for key, value, message in [("prefix_length", 0, "greater than or equal to 1"),
                                ("prefix_hidden", -1, "greater than or equal to 0")]:
        with pytest.raises(ConfigError) as err:
            config_from_dict({**base, "sharing": {"mode": "prefix", key: value}}, tmp_path)
        (where, text), = err.value.problems
        assert where == f"sharing.{key}" and message in text, (where, text)
    with pytest.raises(ConfigError) as err:
        config_from_dict({**base, "sharing": {"mode": "lora", "prefix_length": 4}}, tmp_path)
    assert err.value.problems[0][0] == "sharing.prefix_length"
    with pytest.raises(ValueError, match="prefix length must be a positive integer"):
        Prefix(length=0)


# ------------------------------------------------------------------ save/load and export
def test_keras_file_round_trip(built, tmp_path):
    model, x = built["model"], built["x"]
    want = _outputs(model, x)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.sharing == "prefix" and loaded.sharing_options == {"length": LENGTH, "hidden": MLP,
                                                                     "train_layer_norms": False}
    got = _outputs(loaded, x)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)


def test_export_folds_the_mlp_away_and_matches_the_model(tmp_path):
    import tensorflow_text  # noqa: F401

    encoder = tiny_encoder(seed=6, num_layers=1)  # one layer, two tasks: less to trace
    model = kmtl.build_model(encoder, _tasks()[:2], sharing="prefix", prefix_length=LENGTH, prefix_hidden=MLP)
    _randomize_heads(model)
    folded = fold_prefixes(model)
    mlp = _prefixes(model).weights
    width = 1 * 2 * HIDDEN  # one layer's keys and values
    plain = 2 * LENGTH * width
    assert [tuple(v.shape) for v in _prefixes(folded).weights] == [(2, LENGTH, width)]
    assert folded.count_params() == model.count_params() - _size(mlp) + plain
    assert folded.sharing_options["hidden"] == 0 and fold_prefixes(folded) is folded

    pre = encoder.preprocessor(16)
    path = kmtl.export.export_saved_model(model, pre, tmp_path, "prefix")  # the export folds it itself
    assert json.loads((path / "assets.extra" / "kmtl.json").read_text())["sharing"]["hidden"] == 0
    loaded = tf.saved_model.load(str(path))
    # what the SavedModel stores: the folded prefixes, none of the MLP's weights
    shapes = [tuple(v.shape) for v in loaded.variables]
    assert sum(int(np.prod(s)) for s in shapes) == folded.count_params()
    assert (2, LENGTH, width) in shapes
    assert not {tuple(v.shape) for v in mlp if len(v.shape) == 3} & set(shapes)  # embedding, kernel_1, kernel_2

    def call(name, **inputs):
        return {k: v.numpy() for k, v in loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()}).items()}

    texts = ["the film was good", "john said paris"]
    want = tf.nn.softmax(model(_inputs(encoder, texts, [0, 0]), training=False)["sentiment"]).numpy()
    np.testing.assert_allclose(call("sentiment", text=texts)["sentiment_probabilities"], want, atol=1e-5)
    np.testing.assert_allclose(call("serving_default", text=texts)["sentiment_probabilities"], want, atol=1e-5)
    x = _inputs(encoder, texts, [1, 0])
    ids = call("ids", **{k: v.numpy() for k, v in x.items() if k != "task_id"})  # no task_id: each task its own
    for index, task in enumerate(model.tasks):
        ref = _outputs(model, _inputs(encoder, texts, [index, index]))  # the unfolded model
        np.testing.assert_allclose(ids[task.name], ref[task.name], atol=1e-5)
