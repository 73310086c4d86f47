"""Attention-style sharing modes: per-task scalar mix of layers (`scalar_mix`) and multi-gate
mixture-of-experts (`mmoe`): what they compute, routing, gradients, fit, config, save, export."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.sharing import MMoE, MultiGateExperts, ScalarMix, TaskScalarMix, make_sharing, trainable_parameter_counts

LAYERS = 2  # tiny_encoder's
TEXTS = ["the film was good", "john said paris", "a bad movie", "new york", "the plot is great", "london"]
TASK_IDS = [0, 1, 1, 0, 1, 0]
OPTIONS = {"scalar_mix": {}, "mmoe": {"mmoe_experts": 2}}
LAYER = {"scalar_mix": "scalar_mix", "mmoe": "mmoe"}  # the mode's layer in the model
PRIVATE = {"scalar_mix": ("mix_logits", "scale"), "mmoe": ("gate_kernel", "gate_bias")}  # per-task rows


def _tasks(pair=True):
    return [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
            kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"])),
            kmtl.tasks.PairRegression("similarity")][:3 if pair else 2]


def _inputs(encoder, texts=TEXTS, task_ids=TASK_IDS, max_length=16):
    x = dict(encoder.preprocessor(max_length).encode_text(tf.constant(texts)))
    x["task_id"] = tf.constant(task_ids, tf.int32)
    return x


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


def _private(model, mode):
    layer = model.get_layer(LAYER[mode])
    return [getattr(layer, name) for name in PRIVATE[mode]]


def _randomize(model, mode, seed=0):
    """Random per-task rows and, for mmoe, experts that differ (copies of one layer at first)."""
    rng = np.random.default_rng(seed)
    for v in _private(model, mode):
        v.assign(rng.normal(scale=1.0, size=v.shape).astype("float32"))
    if mode == "mmoe":
        for v in model.get_layer("mmoe").trainable_weights:
            if "expert_" in v.path:
                v.assign(v.numpy() + rng.normal(scale=0.2, size=v.shape).astype("float32"))


@pytest.fixture(scope="module")
def built():
    """Per mode: ``(encoder, model)`` of a sentence and a token task, with random per-task rows
    (read-only for the tests)."""
    models = {}
    for seed, mode in enumerate(OPTIONS):
        encoder = tiny_encoder(seed=10 + seed)
        model = kmtl.build_model(encoder, _tasks(pair=False), sharing=mode, name=f"kmtl_{mode}", **OPTIONS[mode])
        _randomize(model, mode, seed)
        models[mode] = encoder, model
    return models


def _hidden_states(backbone, x):
    """The embeddings' output and each transformer layer's, straight from the keras-hub backbone's
    own graph (each layer's first call)."""
    layers = [backbone.get_layer(f"transformer_layer_{i}") for i in range(LAYERS)]
    probe = keras.Model(backbone.input, [backbone.get_layer("embeddings_dropout").output] + [la.output for la in layers])
    return [np.asarray(h) for h in probe({k: x[k] for k in ("token_ids", "segment_ids", "padding_mask")})]


def _layer_output(model, name, x):
    return np.asarray(keras.Model(model.input, model.get_layer(name).output)(x, training=False))


# ------------------------------------------------------------------ what the modes compute
def test_scalar_mix_is_each_tasks_softmax_mix_of_the_hidden_states(built):
    encoder, model = built["scalar_mix"]
    x = _inputs(encoder)
    states = np.stack(_hidden_states(encoder.backbone, x))  # [L + 1, batch, length, d]
    layer = model.get_layer("scalar_mix")
    assert isinstance(layer, TaskScalarMix) and layer.num_states == LAYERS + 1
    logits, scale = layer.mix_logits.numpy(), layer.scale.numpy()
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    want = np.einsum("bs,sblh->blh", weights[TASK_IDS] * scale[TASK_IDS, None], states)
    np.testing.assert_allclose(_layer_output(model, "scalar_mix", x), want, atol=1e-5)
    logged = {k: float(v) for k, v in layer.logged_values().items()}
    assert logged["entities_mix_layer_2"] == pytest.approx(weights[1, 2], abs=1e-6)
    assert logged["sentiment_mix_scale"] == pytest.approx(scale[0], abs=1e-6)
    assert len(logged) == 2 * (LAYERS + 2)


def test_mmoe_with_identical_experts_is_the_pretrained_encoder(built):
    encoder, model = built["mmoe"]
    layer = model.get_layer("mmoe")
    plain = kmtl.build_model(encoder, _tasks(pair=False), sharing="full")
    for task in model.tasks:
        plain.get_layer(task.name).set_weights(model.get_layer(task.name).get_weights())
    x = _inputs(encoder)
    saved = [v.numpy().copy() for v in layer.weights]
    try:  # every expert back to the pretrained top layer, as a fresh model has them; the gates stay random
        layer.initialize_from([encoder.backbone.get_layer(f"transformer_layer_{LAYERS - 1}")])
        got = _numpy(model(x, training=False))
    finally:
        for v, value in zip(layer.weights, saved):
            v.assign(value)
    want = _numpy(plain(x, training=False))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    assert np.abs(_numpy(model(x, training=False))["sentiment"] - want["sentiment"]).max() > 1e-4  # experts apart


def test_mmoe_mixes_shared_experts_by_each_tasks_gate(built):
    encoder, model = built["mmoe"]
    x = _inputs(encoder)
    below = _hidden_states(encoder.backbone, x)[LAYERS - 1]  # the experts replace the top layer
    layer = model.get_layer("mmoe")
    assert isinstance(layer, MultiGateExperts) and layer.num_experts == 2 and layer.depth == 1
    mask = np.asarray(x["padding_mask"], np.float32)[..., None]
    pooled = (below * mask).sum(1) / mask.sum(1)
    logits = np.einsum("bh,bhe->be", pooled, layer.gate_kernel.numpy()[TASK_IDS]) + layer.gate_bias.numpy()[TASK_IDS]
    gates = np.exp(logits - logits.max(-1, keepdims=True))
    gates /= gates.sum(-1, keepdims=True)
    experts = [np.asarray(stack[0](below, padding_mask=x["padding_mask"])) for stack in layer.experts()]
    assert np.abs(experts[0] - experts[1]).max() > 1e-3  # the experts differ
    want = np.einsum("be,eblh->blh", gates, np.stack(experts))
    np.testing.assert_allclose(_layer_output(model, "mmoe", x), want, atol=1e-5)
    # the replaced top layer is out of the model: its weights are not the model's
    assert not any(v.path.startswith(f"transformer_layer_{LAYERS - 1}/") for v in model.weights)


# ------------------------------------------------------------------ routing and gradients
@pytest.mark.parametrize("mode", list(OPTIONS))
def test_changing_one_tasks_rows_changes_only_its_examples(built, mode):
    encoder, model = built[mode]
    x = _inputs(encoder)
    before = _numpy(model(x, training=False))
    private = _private(model, mode)
    saved = [v.numpy().copy() for v in private]
    try:
        rng = np.random.default_rng(1)
        for v in private:  # task 1 (entities) only; random: a shift shared by all experts or layers changes no softmax
            v.assign(tf.tensor_scatter_nd_add(v, [[1]], rng.normal(size=(1, *v.shape[1:])).astype("float32")))
        after = _numpy(model(x, training=False))
    finally:
        for v, value in zip(private, saved):
            v.assign(value)
    own = np.array(TASK_IDS) == 1
    for name in before:
        changed = np.abs(after[name] - before[name]).reshape(len(TEXTS), -1).max(axis=1) > 1e-5
        np.testing.assert_array_equal(changed, own, err_msg=f"{mode} {name}")


@pytest.mark.parametrize("mode", list(OPTIONS))
def test_one_tasks_loss_reaches_its_rows_the_shared_weights_and_its_head(built, mode):
    encoder, model = built[mode]
    x = _inputs(encoder)
    trainable = {v.path for v in model.trainable_weights}
    assert not any(v.path.startswith("pooled_dense/") for v in model.weights)  # mean pooling: no pooler
    if mode == "mmoe":
        assert "mmoe/gate_means" not in trainable
        assert sum("mmoe/expert_" in p for p in trainable) == 2 * sum(
            "transformer_layer_0/" in p for p in trainable)  # 2 experts of 1 layer
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        own = tf.constant(np.array(TASK_IDS) == 0)
        loss = tf.reduce_sum(tf.square(tf.boolean_mask(out["sentiment"], own)))
    variables = model.trainable_weights
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    nonzero = {p for p, g in grads.items() if g is not None and float(tf.reduce_max(tf.abs(g))) > 0}
    for v in _private(model, mode):
        g = np.asarray(grads[v.path])
        assert np.abs(g[0]).max() > 0 and not np.abs(g[1]).any(), v.path  # row 0: sentiment's
    assert any(p.startswith("sentiment/") for p in nonzero)
    assert not any(p.startswith("entities/") for p in nonzero)
    assert any(p.startswith("transformer_layer_0/") for p in nonzero)  # the shared encoder trains
    if mode == "mmoe":
        assert all(any(p.startswith(f"mmoe/expert_{e}_") for p in nonzero) for e in range(2))


# ------------------------------------------------------------------ training
def _examples():
    sentences = ["the film was good", "a bad movie", "great acting", "not very good", "the plot", "bad story"]
    return {
        "sentiment": [Example(text=t, label=["negative", "positive"][i % 2]) for i, t in enumerate(sentences)],
        "entities": [Example(tokens=("john", "said", "paris"), label=("B-PER", "O", "B-LOC")),
                     Example(tokens=("new", "york"), label=("B-LOC", "I-LOC")),
                     Example(tokens=("the", "company", "in", "london"), label=("O", "O", "O", "B-LOC"))],
    }


@pytest.fixture(scope="module")
def mixtures(tiny):
    """A joint and an alternating mixture of 2 batches each (sentiment and entities; similarity has
    no data), for every fit below (the tiny encoders share one vocabulary)."""
    return {granularity: kmtl.data.mixture(_tasks(), _examples(), tiny.preprocessor(16), batch_size=6,
                                           granularity=granularity, steps_per_epoch=2)
            for granularity in ("joint", "alternating")}


def _fit(model, data):
    # no weight decay: untouched means unchanged; eager: 2 steps cost less than tracing them
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    return {k: v[-1] for k, v in model.fit(data, epochs=1, verbose=0).history.items()}


def test_scalar_mix_frozen_with_cls_and_layer_dropout_trains_only_the_mixes_and_heads(mixtures):
    encoder = tiny_encoder(seed=5)
    model = kmtl.build_model(encoder, _tasks(), pooling="cls",
                             sharing=ScalarMix(freeze_backbone=True, layer_dropout=0.5))
    x = _inputs(encoder)
    assert {k: v.shape for k, v in model(x).items()} == {"sentiment": (6, 2), "entities": (6, 16, 5),
                                                       "similarity": (6, 1)}
    counts = trainable_parameter_counts(model)["parts"]
    heads = sum(int(np.prod(v.shape)) for t in model.tasks for v in model.get_layer(t.name).weights)
    assert {k: r["trainable"] for k, r in counts.items() if r["trainable"]} == {"sharing": 3 * (LAYERS + 2),
                                                                               "heads": heads}
    before = {v.path: v.numpy().copy() for v in model.weights}
    logs = _fit(model, mixtures["joint"])
    logs.update(_fit(model, mixtures["alternating"]))
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["sentiment_loss"]) and np.isfinite(logs["entities_loss"])
    moved = {v.path for v in model.weights if not np.array_equal(v.numpy(), before[v.path])}
    assert {p for p in moved if not p.startswith(("loss_weight", "seed_generator"))} == {
        "scalar_mix/mix_logits", "scalar_mix/scale", "sentiment/kernel", "sentiment/bias", "entities/kernel",
        "entities/bias"}
    logits = model.get_layer("scalar_mix").mix_logits.numpy()
    np.testing.assert_array_equal(logits[2], before["scalar_mix/mix_logits"][2])  # similarity has no data
    for task in ("sentiment", "entities", "similarity"):
        weights = [logs[f"{task}_mix_layer_{s}"] for s in range(LAYERS + 1)]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5) and f"{task}_mix_scale" in logs
    learned = [logs[f"sentiment_mix_layer_{s}"] for s in range(LAYERS + 1)]
    assert max(learned) - min(learned) > 1e-4  # the mix learned: its layers' weights, equal at the start, differ
    # layer dropout acts while training only
    mix = model.get_layer("scalar_mix")
    states = [tf.random.stateless_normal([4, 3, 8], seed=[s, 1]) for s in range(LAYERS + 1)]
    ids = tf.constant([0, 1, 0, 1])
    np.testing.assert_array_equal(mix(states, task_id=ids), mix(states, task_id=ids))
    assert not np.allclose(mix(states, task_id=ids, training=True), mix(states, task_id=ids), atol=1e-4)


def test_mmoe_with_cls_fits_joint_batches_and_logs_the_gates(mixtures):
    encoder = tiny_encoder(seed=6)
    model = kmtl.build_model(encoder, _tasks(), pooling="cls", sharing="mmoe", mmoe_experts=2)
    x = _inputs(encoder)
    assert {k: v.shape for k, v in model(x).items()} == {"sentiment": (6, 2), "entities": (6, 16, 5),
                                                       "similarity": (6, 1)}
    layer = model.get_layer("mmoe")
    before = {v.path: v.numpy().copy() for v in model.weights}
    logs = _fit(model, mixtures["joint"])
    assert np.isfinite(logs["loss"]) and np.isfinite(logs["sentiment_loss"]) and np.isfinite(logs["entities_loss"])
    gates = {t: [logs[f"{t}_gate_{e}"] for e in range(2)] for t in ("sentiment", "entities", "similarity")}
    assert sum(gates["sentiment"]) == pytest.approx(1.0, abs=1e-5)
    assert gates["similarity"] == pytest.approx([0.5, 0.5])  # no similarity example: its mean never set
    assert gates["sentiment"] != pytest.approx([0.5, 0.5], abs=1e-4)  # a random gate is not uniform
    np.testing.assert_allclose(layer.gate_means.numpy()[0], gates["sentiment"], atol=1e-6)
    for v in model.weights:
        if v.path in ("mmoe/gate_kernel", "mmoe/gate_bias"):
            assert np.array_equal(v.numpy()[2], before[v.path][2]), v.path  # similarity's gate stays
        elif v.path.startswith(("mmoe/expert_", "transformer_layer_0/", "pooled_dense/kernel")):
            assert not np.array_equal(v.numpy(), before[v.path]), v.path  # shared: trained by both tasks

    # in a traced step (what fit runs by default) too: each task's mean gate over its own examples
    hidden = tf.random.stateless_normal([4, 5, 32], seed=[3, 4])
    mask, ids = tf.constant([[1, 1, 1, 0, 0]] * 2 + [[1] * 5] * 2), tf.constant([1, 0, 1, 1])
    step = tf.function(lambda: layer(hidden, padding_mask=mask, task_id=ids, training=True))
    step()
    want = np.asarray(layer.gates(hidden, mask, ids))
    np.testing.assert_allclose(layer.gate_means.numpy()[:2], [want[1], want[[0, 2, 3]].mean(0)], atol=1e-6)
    np.testing.assert_allclose(layer.gate_means.numpy()[2], [0.5, 0.5])


# ------------------------------------------------------------------ config
def _config(tmp_path, sharing):
    from kmtl.config import config_from_dict

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 1.0}\n')
    return config_from_dict({"tasks": [{"name": "a", "kind": "regression",
                                        "train": {"format": "jsonl", "path": str(data)}}],
                             "sharing": sharing}, tmp_path)


def test_config_options_reach_the_modes(tmp_path):
    sh = _config(tmp_path, {"mode": "scalar_mix", "mix_freeze_backbone": True, "mix_layer_dropout": 0.1}).sharing
    assert make_sharing(sh.mode, **sh.options()) == ScalarMix(freeze_backbone=True, layer_dropout=0.1)
    sh = _config(tmp_path, {"mode": "mmoe", "mmoe_experts": 6, "mmoe_top_layers": 2}).sharing
    assert make_sharing(sh.mode, **sh.options()) == MMoE(experts=6, top_layers=2)
    assert make_sharing("mmoe") == MMoE(4, 1) and make_sharing("scalar_mix") == ScalarMix(False, 0.0)


@pytest.mark.parametrize("sharing, where, message", [
    ({"mode": "scalar_mix", "mix_layer_dropout": 1.0}, "sharing.mix_layer_dropout", "less than 1"),
    ({"mode": "scalar_mix", "mix_freeze_backbone": "maybe"}, "sharing.mix_freeze_backbone", "boolean"),
    ({"mode": "mmoe", "mmoe_experts": 0}, "sharing.mmoe_experts", "greater than or equal to 1"),
    ({"mode": "mmoe", "mmoe_top_layers": -1}, "sharing.mmoe_top_layers", "greater than or equal to 1"),
    ({"mode": "full", "mmoe_experts": 2}, "sharing.mmoe_experts", "only used when mode is mmoe"),
])
def test_config_errors_name_the_key(tmp_path, sharing, where, message):
    from kmtl.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _config(tmp_path, sharing)
    key, text = err.value.problems[0]
    assert len(err.value.problems) == 1 and key == where and message in text, (key, text)


def test_mmoe_top_layers_beyond_the_backbone_is_an_error_naming_the_option():
    with pytest.raises(ValueError, match="sharing.mmoe_top_layers to at most 2"):
        kmtl.build_model(tiny_encoder(seed=1), _tasks(), sharing="mmoe", mmoe_top_layers=3)


# ------------------------------------------------------------------ save and export
@pytest.mark.parametrize("mode", list(OPTIONS))
def test_keras_file_round_trip(built, mode, tmp_path):
    encoder, model = built[mode]
    x = _inputs(encoder)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.sharing == mode and loaded.sharing_options == model.sharing_options
    want, got = _numpy(model(x, training=False)), _numpy(loaded(x, training=False))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
    assert sorted(loaded.get_layer(LAYER[mode]).logged_values()) == sorted(model.get_layer(LAYER[mode]).logged_values())


# an export costs 10-20 s of CPU: CI exports mmoe (the stateful gate statistics, the loop over experts)
@pytest.mark.parametrize("mode", ["mmoe", pytest.param("scalar_mix", marks=pytest.mark.slow)])
def test_raw_text_saved_model_matches_the_keras_model(mode, tmp_path):
    """Two sentence tasks (the word-level tagging graph is the costly part of an export, and the
    same for every mode; tests/test_sharing.py exports adapters with a tagging head): the
    serving graph must feed each task its own id."""
    import tensorflow_text  # noqa: F401

    encoder = tiny_encoder(seed=7, num_layers=1)  # mmoe: 2 experts in place of the one layer
    tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
             kmtl.tasks.Classification("topic", ["art", "film", "travel"])]
    model = kmtl.build_model(encoder, tasks, sharing=mode, **OPTIONS[mode])
    _randomize(model, mode)
    path = kmtl.export.export_saved_model(model, encoder.preprocessor(16), tmp_path, mode)
    assert json.loads((path / "assets.extra" / "kmtl.json").read_text())["sharing"]["mode"] == mode
    loaded = tf.saved_model.load(str(path))
    texts = ["the film was good", "john said paris"]
    default = {k: v.numpy() for k, v in loaded.signatures["serving_default"](text=tf.constant(texts)).items()}
    for index, task in enumerate(tasks):  # each task read on its own rows
        want = tf.nn.softmax(model(_inputs(encoder, texts, [index, index]), training=False)[task.name]).numpy()
        np.testing.assert_allclose(default[f"{task.name}_probabilities"], want, atol=1e-5, err_msg=task.name)
        other = tf.nn.softmax(model(_inputs(encoder, texts, [1 - index] * 2), training=False)[task.name]).numpy()
        assert np.abs(other - want).max() > 1e-4  # the routing matters for this check
    x = _inputs(encoder, texts, [1, 0])
    ids = loaded.signatures["ids"](**{k: tf.constant(v) for k, v in x.items() if k != "task_id"})
    for index, task in enumerate(tasks):  # no task_id: each task through its own route, on every row
        want = _numpy(model(_inputs(encoder, texts, [index, index]), training=False))[task.name]
        np.testing.assert_allclose(ids[task.name].numpy(), want, atol=1e-5, err_msg=task.name)
