"""Soft parameter sharing (kmtl.sharing.soft) and the task-relation regulariser (kmtl.sharing.task_relation)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.sharing import (
    SoftSharing,
    TaskLayerCopies,
    TaskRelation,
    TaskTransformerLayer,
    make_sharing,
    trainable_parameter_counts,
)
from kmtl.sharing.task_relation import RELATION_MOMENTUM, relation_matrix

HIDDEN = 32  # tiny_encoder's default
TEXTS = ["the film was good", "john said paris", "a bad movie", "new york", "the plot is great", "london"]
IDS = [0, 1, 2, 0, 1, 2]


def _tasks():
    return [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
            kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"])),
            kmtl.tasks.PairRegression("similarity")]


def _inputs(encoder, texts=TEXTS, task_ids=IDS, max_length=16):
    x = dict(encoder.preprocessor(max_length).encode_text(tf.constant(texts)))
    x["task_id"] = tf.constant(task_ids, tf.int32)
    return x


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _copies(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, TaskTransformerLayer)]


def _randomize_copies(model, seed=0, scale=0.05):
    """Move every copy away from the others (their weights start equal)."""
    rng = np.random.default_rng(seed)
    for layer in _copies(model):
        for v in layer.weights:
            v.assign(v.numpy() + rng.normal(scale=scale, size=v.shape).astype("float32"))


@pytest.fixture(scope="module")
def soft():
    """3 tasks, the top one of two layers copied, learned relation; tests restore what they change."""
    encoder = tiny_encoder(seed=1)
    pretrained = encoder.backbone.transformer_layers[-1]
    model = kmtl.build_model(encoder, _tasks(), sharing="soft", soft_top_layers=1, soft_penalty=1e-2,
                             task_relation="learned", relation_weight=0.5)
    return encoder, model, pretrained, _inputs(encoder)


# ------------------------------------------------------------------ the per-task layer
def test_copies_start_as_the_pretrained_layer_and_both_routings_agree():
    from keras_hub.layers import TransformerEncoder

    hidden = tf.random.stateless_normal([3, 5, HIDDEN], seed=[1, 2])
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    post = tiny_encoder(seed=1).backbone.transformer_layers[-1]  # BERT: post-norm, approximate GELU
    pre = TransformerEncoder(HIDDEN * 2, num_heads=4, activation="relu", normalize_first=True, layer_norm_epsilon=1e-5)
    pre(hidden)  # builds it with random weights
    for encoder in (post, pre):
        copies = TaskTransformerLayer.from_encoder(encoder, num_tasks=3)
        want = encoder(hidden, padding_mask=mask)
        np.testing.assert_allclose(copies(hidden, padding_mask=mask, task=tf.constant([0, 2, 1])), want, atol=1e-6)
        np.testing.assert_allclose(copies(hidden, padding_mask=mask, task=1), want, atol=1e-6)
        # once the copies differ, routing each example equals running it through its task's copy
        rng = np.random.default_rng(0)
        for v in copies.weights:
            v.assign(v.numpy() + rng.normal(scale=0.1, size=v.shape).astype("float32"))
        ids = [2, 0, 1]
        routed = copies(hidden, padding_mask=mask, task=tf.constant(ids)).numpy()
        for row, t in enumerate(ids):
            np.testing.assert_allclose(routed[row], copies(hidden, padding_mask=mask, task=t)[row], atol=1e-5)
        assert np.abs(routed - want).max() > 1e-2


def test_routing_by_partition_and_by_one_hot_under_xla_agree_with_gradients():
    """Eagerly and in plain graphs the rows are grouped by task (``tf.dynamic_partition``); XLA
    cannot take its data-dependent shapes, so a jit-compiled step picks per-example weights by a
    one-hot: both give the same outputs and the same gradients (only a task's rows reach its copy)."""
    hidden = tf.random.stateless_normal([4, 5, HIDDEN], seed=[3, 4])
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    copies = TaskTransformerLayer.from_encoder(tiny_encoder(seed=1).backbone.transformer_layers[-1], num_tasks=3)
    rng = np.random.default_rng(1)
    for v in copies.weights:
        v.assign(v.numpy() + rng.normal(scale=0.1, size=v.shape).astype("float32"))
    ids = tf.constant([2, 0, 2, 0])  # task 1 has no rows

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = copies(x, padding_mask=mask, task=ids)
            loss = tf.reduce_sum(tf.square(y))
        return (y, *tape.gradient(loss, [x, *copies.weights]))

    plain = tf.function(step)(hidden)
    xla = tf.function(step, jit_compile=True)(hidden)
    for a, b in zip(plain, xla):
        np.testing.assert_allclose(a, b, atol=1e-4)
    kernel = 2 + [id(v) for v in copies.weights].index(id(copies.copies["output_kernel"]))
    assert np.abs(plain[kernel][1]).max() == 0 and np.abs(plain[kernel][0]).max() > 0


# ------------------------------------------------------------------ the model
def test_shapes_parameters_and_what_trains(soft):
    encoder, model, pretrained, x = soft
    assert sorted(model.input) == ["padding_mask", "segment_ids", "task_id", "token_ids"]
    out = model(x, training=False)
    length = x["token_ids"].shape[1]
    assert out["sentiment"].shape == (6, 2) and out["entities"].shape == (6, length, 5)
    assert out["similarity"].shape[0] == 6
    layer = _size(pretrained.weights)
    counts = trainable_parameter_counts(model)
    assert counts["parts"]["sharing"]["trainable"] == 3 * layer + 0  # one copied layer; R is not trained
    assert counts["parts"]["sharing"]["total"] == 3 * layer + 3 * 3  # + the learned relation's 3x3 distances
    # the pretrained top layer left the model (its weights live on in the copies); the rest trains
    backbone = encoder.backbone
    pooler = _size(backbone.get_layer("pooled_dense").weights)  # unused with mean pooling
    assert counts["parts"]["backbone"]["trainable"] == _size(backbone.weights) - layer - pooler
    paths = {v.path for v in model.weights}
    assert not any(p.startswith(pretrained.name + "/") for p in paths)
    trainable = {id(v) for v in model.trainable_weights}
    assert all(id(v) in trainable for layer in _copies(model) for v in layer.weights)
    assert all(id(v) in trainable for v in backbone.transformer_layers[0].weights)


def test_changing_one_tasks_copy_changes_only_its_examples(soft):
    encoder, model, _, x = soft
    before = {k: v.numpy() for k, v in model(x, training=False).items()}
    saved = [(v, v.numpy().copy()) for layer in _copies(model) for v in layer.weights]
    try:
        for v, _ in saved:  # task 0 (sentiment) only: slice 0 of every stacked weight
            v.assign(tf.tensor_scatter_nd_add(v, [[0]], tf.fill([1, *v.shape[1:]], 0.05)))
        after = {k: v.numpy() for k, v in model(x, training=False).items()}
    finally:
        for v, value in saved:
            v.assign(value)
    own = np.array(IDS) == 0
    for name in before:
        changed = np.abs(after[name] - before[name]).reshape(len(TEXTS), -1).max(axis=1) > 1e-5
        np.testing.assert_array_equal(changed, own, err_msg=name)


def test_one_tasks_loss_reaches_its_copy_the_shared_layers_and_its_head_only(soft):
    encoder, model, _, x = soft
    own = tf.constant([float(t == 0) for t in IDS])
    with tf.GradientTape() as tape:
        logits = model(x, training=False)["sentiment"]
        loss = tf.reduce_sum(tf.reduce_sum(tf.square(logits), axis=-1) * own)  # sentiment's examples only
    variables = model.trainable_weights
    grads = {v.path: (g if g is not None else tf.zeros_like(v)) for v, g in zip(variables, tape.gradient(loss, variables))}
    copies = {v.path for layer in _copies(model) for v in layer.weights}
    assert copies
    for path in copies:
        norms = [float(tf.norm(grads[path][t])) for t in range(3)]
        assert norms[1] == norms[2] == 0.0, path
    assert any(float(tf.norm(grads[p][0])) > 0 for p in copies)
    assert all(float(tf.norm(grads[p])) == 0.0 for p in grads if p.startswith(("entities/", "similarity/")))
    assert float(tf.norm(grads[next(p for p in grads if p.startswith("sentiment/"))])) > 0
    assert float(tf.norm(grads[next(p for p in grads if p.startswith("transformer_layer_0/"))])) > 0


def test_penalties_match_their_formulas(soft):
    encoder, model, _, _ = soft
    top = model.get_layer("soft_shared_top")
    assert isinstance(top, TaskLayerCopies) and top.task_names == ["sentiment", "entities", "similarity"]
    saved = [(v, v.numpy().copy()) for v in top.weights]
    try:
        _randomize_copies(model)
        stacked = [v.numpy() for layer in _copies(model) for v in layer.weights]
        to_mean = sum(((w - w.mean(0)) ** 2).reshape(3, -1).sum(1) for w in stacked)
        pairwise = sum(((w[s] - w[t]) ** 2).sum() for w in stacked for s in range(3) for t in range(s + 1, 3))
        np.testing.assert_allclose(top.distances(), to_mean, rtol=1e-4)
        np.testing.assert_allclose(top.pull(), 1e-2 * to_mean.sum(), rtol=1e-4)
        top.target = "pairwise"
        np.testing.assert_allclose(top.pull(), 1e-2 * pairwise, rtol=1e-4)
        top.target = "mean"
        # in training the batch also runs through every copy: same outputs, plus the relation penalty
        sequence = tf.random.stateless_normal([6, 7, HIDDEN], seed=[3, 4])
        mask = tf.constant([[1] * 7] * 3 + [[1] * 4 + [0] * 3] * 3)
        ids = tf.constant(IDS)
        trained = top(sequence, padding_mask=mask, task_id=ids, training=True)
        pull, relation_loss = (float(v) for v in top.losses)
        np.testing.assert_allclose(trained, top(sequence, padding_mask=mask, task_id=ids, training=False), atol=1e-5)
        np.testing.assert_allclose(pull, 1e-2 * to_mean.sum(), rtol=1e-4)
        m = mask.numpy()[:, :, None]
        f = np.stack([(top.run(sequence, mask, t).numpy() * m).sum(1) / m.sum(1) for t in range(3)])
        distance = ((f[:, None] - f[None]) ** 2).sum(-1).mean(-1)
        # R learned from this first batch: softmax over the pairs of -D / mean(D), D the running mean
        running = (1 - RELATION_MOMENTUM) * distance
        np.testing.assert_allclose(top.relation.distance.numpy(), running, rtol=1e-4)
        off = ~np.eye(3, dtype=bool)
        r = np.where(off, np.exp(-running / running[off].mean()), 0.0)
        r /= r.sum()
        np.testing.assert_allclose(top.relation.relation(), r, rtol=1e-4)
        np.testing.assert_allclose(relation_loss, 0.5 * (r * distance).sum(), rtol=1e-4)
    finally:
        for v, value in saved:
            v.assign(value)


def test_fit_in_joint_batches_logs_the_relation_and_copy_distances():
    encoder = tiny_encoder(seed=5, num_layers=1)  # the default copies the top 3 layers, or all of fewer
    tasks = _tasks()
    model = kmtl.build_model(encoder, tasks, sharing="soft", task_relation="given",
                             relation_matrix={"sentiment": {"entities": 1.0}, "entities": {"similarity": 0.5}})
    assert len(_copies(model)) == 1
    pre = encoder.preprocessor(16)
    sentences = ["the film was good", "a bad movie", "great acting", "not very good"]
    examples = {
        "sentiment": [Example(text=t, label=["negative", "positive"][i % 2]) for i, t in enumerate(sentences)],
        "entities": [Example(tokens=("john", "said", "paris"), label=("B-PER", "O", "B-LOC")),
                     Example(tokens=("new", "york"), label=("B-LOC", "I-LOC"))],
    }
    data = kmtl.data.mixture(tasks, examples, pre, batch_size=6, granularity="joint", steps_per_epoch=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(data, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert history["sentiment_relation_entities"] == [1.0] and history["entities_relation_similarity"] == [0.5]
    assert history["entities_relation_sentiment"] == [0.0]
    # the copies moved apart (similarity, with no data, only through the pull)
    assert history["sentiment_copy_distance"][0] > 0 and np.isfinite(history["similarity_copy_distance"]).all()


# ------------------------------------------------------------------ the relation layer alone
def test_learned_relation_starts_uniform_and_favours_the_closer_tasks():
    relation = TaskRelation(3, weight=1.0, task_names=["a", "b", "c"])
    values = {k: float(v) for k, v in relation.logged_values().items()}
    assert sorted(values) == ["a_relation_b", "a_relation_c", "b_relation_a", "b_relation_c",
                              "c_relation_a", "c_relation_b"]
    np.testing.assert_allclose(list(values.values()), 1 / 6, rtol=1e-6)
    base = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    features = tf.constant(np.stack([base, base + 0.1, base + 1.0]))  # a and b close, c far
    for _ in range(3):
        relation(features, training=True)
    r = relation.relation().numpy()
    assert r[0, 1] > r[0, 2] and r[0, 1] > r[1, 2] and np.allclose(r, r.T)
    np.testing.assert_allclose(r.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.diag(r), 0.0)
    relation(features, training=False)  # inference leaves the relation as it is
    np.testing.assert_allclose(relation.relation(), r)


def test_given_relation_matrix_forms_and_errors():
    names = ["a", "b", "c"]
    assert relation_matrix({"a": {"c": 2.0}}, names) == [[0, 0, 2], [0, 0, 0], [0, 0, 0]]
    assert relation_matrix([[0, 1, 0], [1, 0, 0], [0, 0, 0]], names)[1] == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="no task called 'd'; the tasks are: a, b, c"):
        relation_matrix({"a": {"d": 1.0}}, names, key="sharing.relation_matrix")
    with pytest.raises(ValueError, match="must be 3 x 3"):
        relation_matrix([[0, 1], [1, 0]], names)
    with pytest.raises(ValueError, match="must be >= 0"):
        relation_matrix({"a": {"b": -1.0}}, names)
    with pytest.raises(ValueError, match="at least two tasks"):
        TaskRelation(1)
    # a mapping waits for the task names (a MultiTaskModel sets them), then reads them
    relation = TaskRelation(3, {"b": {"c": 1.0}}, weight=2.0)
    with pytest.raises(ValueError, match="set task_names"):
        relation.relation()
    relation.task_names = names
    features = tf.constant(np.arange(3 * 2 * 4, dtype="float32").reshape(3, 2, 4))
    np.testing.assert_allclose(relation(features), 2.0 * 4 * 8.0 ** 2)  # |f_b - f_c|^2 = 4 * 8^2
    rebuilt = TaskRelation.from_config(relation.get_config())
    assert rebuilt.task_names == names and np.allclose(rebuilt.relation(), relation.relation())


# ------------------------------------------------------------------ options, config, save, export
def test_build_time_errors_name_the_option(tiny):
    with pytest.raises(ValueError, match="soft_top_layers=3 but the backbone has 2 transformer layers"):
        kmtl.build_model(tiny_encoder(seed=0), _tasks(), sharing="soft", soft_top_layers=3)
    with pytest.raises(ValueError, match="task_relation: given needs relation_matrix"):
        make_sharing("soft", task_relation="given")
    with pytest.raises(ValueError, match="only read with task_relation: given"):
        make_sharing("soft", relation_matrix=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="sharing.relation_matrix: no task called 'ner'"):
        kmtl.build_model(tiny_encoder(seed=0), _tasks(), sharing="soft", task_relation="given",
                         relation_matrix={"ner": {"sentiment": 1.0}})
    assert make_sharing("soft", soft_top_layers=1, task_relation="learned") == SoftSharing(1, relation="learned")


def _config(tmp_path, sharing):
    from kmtl.config import config_from_dict

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 1.0}\n')
    tasks = [{"name": n, "kind": "regression", "train": {"format": "jsonl", "path": str(data)}} for n in ("a", "b")]
    return config_from_dict({"tasks": tasks, "sharing": sharing}, tmp_path)


def test_config_reads_the_options(tmp_path):
    sharing = {"mode": "soft", "soft_top_layers": 1, "soft_penalty": 0.1, "soft_target": "pairwise",
               "task_relation": "given", "relation_matrix": {"a": {"b": 1}}, "relation_weight": 0.5}
    config = _config(tmp_path, sharing)
    options = config.sharing.options()
    assert options["relation_matrix"] == {"a": {"b": 1.0}} and options["soft_target"] == "pairwise"
    assert make_sharing("soft", **options) == SoftSharing(1, 0.1, "pairwise", "given", {"a": {"b": 1.0}}, 0.5)
    listed = _config(tmp_path, {"mode": "soft", "task_relation": "given", "relation_matrix": [[0, 1], [1, 0]]})
    assert listed.sharing.options()["relation_matrix"] == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("sharing, where, message", [
    ({"mode": "soft", "soft_top_layers": 0}, "sharing.soft_top_layers", "greater than or equal to 1"),
    ({"mode": "soft", "soft_penalty": -1}, "sharing.soft_penalty", "greater than or equal to 0"),
    ({"mode": "soft", "soft_target": "median"}, "sharing.soft_target", "'median' is not one of: mean, pairwise"),
    ({"mode": "soft", "task_relation": "sometimes"}, "sharing.task_relation", "not one of: none, given, learned"),
    ({"mode": "soft", "relation_matrix": "a,b"}, "sharing.relation_matrix", "valid list"),
    # under hard sharing every task's features are the same: a relation has nothing to act on
    ({"mode": "full", "task_relation": "learned"}, "sharing.task_relation", "only used when mode is adapters or soft"),
    ({"mode": "lora", "relation_matrix": [[0, 1], [1, 0]]}, "sharing.relation_matrix", "only used when mode is adapters or soft"),
])
def test_config_errors_name_the_key(tmp_path, sharing, where, message):
    from kmtl.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _config(tmp_path, sharing)
    problems = err.value.problems  # a relation_matrix that is neither form: one problem per form
    assert all(key.startswith(where) for key, _ in problems) and any(message in text for _, text in problems), problems
    assert len(problems) == (2 if where.endswith("relation_matrix") and "only used" not in message else 1)


def test_keras_file_round_trip(tmp_path, soft):
    encoder, model, _, x = soft
    saved = [(v, v.numpy().copy()) for v in model.get_layer("soft_shared_top").weights]
    try:
        _randomize_copies(model, seed=3)
        model.get_layer("soft_shared_top").relation.distance.assign(np.arange(9, dtype="float32").reshape(3, 3))
        want = model(x, training=False)
        model.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
    finally:
        for v, value in saved:
            v.assign(value)
    assert loaded.sharing == "soft" and loaded.sharing_options == model.sharing_options
    got = loaded(x, training=False)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    top = loaded.get_layer("soft_shared_top")
    assert top.task_names == ["sentiment", "entities", "similarity"]
    np.testing.assert_array_equal(top.relation.distance.numpy(), np.arange(9).reshape(3, 3))
    rebuilt = TaskLayerCopies.from_config(top.get_config())  # the layer alone, too
    assert [layer.num_tasks for layer in rebuilt.copied_layers] == [3] and rebuilt.relation.learned


def test_export_matches_the_model(tmp_path):
    import tensorflow_text  # noqa: F401

    encoder = tiny_encoder(seed=6, num_layers=1)  # one layer, two tasks: less to trace
    tasks = _tasks()[:2]
    model = kmtl.build_model(encoder, tasks, sharing="soft", soft_top_layers=1)
    _randomize_copies(model, seed=4, scale=0.1)
    pre = encoder.preprocessor(16)
    path = kmtl.export.export_saved_model(model, pre, tmp_path, "soft")
    info = json.loads((path / "assets.extra" / "kmtl.json").read_text())
    assert info["sharing"]["mode"] == "soft"
    loaded = tf.saved_model.load(str(path))
    texts = ["the film was good", "john said paris"]
    got = loaded.signatures["sentiment"](text=tf.constant(texts))["sentiment_probabilities"]
    want = tf.nn.softmax(model(_inputs(encoder, texts, [0, 0]), training=False)["sentiment"])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # ids takes no task_id: every task's output through its own copies, for every row
    x = _inputs(encoder, texts, [1, 0])
    ids = loaded.signatures["ids"](**{k: v for k, v in x.items() if k != "task_id"})
    for t, task in enumerate(tasks):
        ref = model(_inputs(encoder, texts, [t, t]), training=False)[task.name]
        np.testing.assert_allclose(ids[task.name], ref, atol=1e-5)
    # each task's copy matters: the other task's id gives other figures
    other = model(_inputs(encoder, texts, [1, 1]), training=False)["sentiment"]
    assert np.abs(other - model(_inputs(encoder, texts, [0, 0]), training=False)["sentiment"]).max() > 1e-4

    import onnxruntime as ort

    onnx_path = kmtl.export.export_onnx(model, tmp_path, "onnx", max_length=16)
    assert sorted(json.loads((onnx_path / "kmtl.json").read_text())["inputs"]) == [
        "padding_mask", "segment_ids", "token_ids"]
    session = ort.InferenceSession(str(onnx_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["sentiment", "entities"], {k: v.numpy() for k, v in x.items() if k != "task_id"})
    np.testing.assert_allclose(got[0], ids["sentiment"], atol=1e-4)
    np.testing.assert_allclose(got[1], ids["entities"], atol=1e-4)


def test_with_one_task_soft_sharing_computes_full_fine_tuning():
    """Why `SoftSharing.for_one_task` gives kmtl compare a ``full`` baseline: one task's soft model
    (one copy of the top layers) returns what the full model returns, its pull is zero and the
    gradients reaching the copy equal those reaching the pretrained layer it replaced."""
    tasks = [kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"]))]
    full = kmtl.build_model(tiny_encoder(seed=1), tasks, sharing="full")
    soft = kmtl.build_model(tiny_encoder(seed=1), tasks, sharing="soft", soft_top_layers=1, soft_penalty=1.0)
    by_path = {v.path: v for v in soft.weights}
    for v in full.weights:  # the heads were drawn apart; the backbones are the same seed's
        if v.path in by_path:
            by_path[v.path].assign(v)
    x = _inputs(tiny_encoder(seed=1), task_ids=[0] * len(TEXTS))

    def run(model, variables):
        with tf.GradientTape() as tape:
            out = model(x, training=False)["entities"]
            loss = tf.reduce_sum(tf.square(out)) + tf.add_n(model.losses or [tf.constant(0.0)])
        return out, tape.gradient(loss, variables), model.losses

    top = [layer for layer in full._flatten_layers() if layer.name == "transformer_layer_1"][0]
    full_out, full_grads, _ = run(full, [top._feedforward_output_dense.kernel])
    copy = _copies(soft)[0]
    soft_out, soft_grads, losses = run(soft, [copy.copies["output_kernel"]])
    np.testing.assert_allclose(soft_out, full_out, atol=1e-5)
    assert all(float(loss) == 0.0 for loss in losses)
    np.testing.assert_allclose(soft_grads[0][0], full_grads[0], atol=1e-5)
    assert make_sharing("soft", soft_top_layers=2, task_relation="learned").for_one_task("entities") == ("full", {})


def test_warm_start_from_a_soft_run_copies_each_tasks_own_layers():
    """`kmtl compare`'s second stage fine-tunes one task from the multi-task run with sharing
    ``full``: the layers soft sharing copied must start as that task's copy (not the pretrained
    layer), so the single-task model answers as the soft model does for that task; a soft model
    with the tasks in another order gets each task's row by name."""
    from kmtl.training.warm_start import warm_start

    encoder = tiny_encoder(seed=3)
    old = kmtl.build_model(encoder, _tasks(), sharing="soft", soft_top_layers=1)
    _randomize_copies(old, seed=5, scale=0.1)
    x = _inputs(encoder, task_ids=[1] * len(TEXTS))
    want = old(x, training=False)["entities"]
    alone = kmtl.build_model(tiny_encoder(seed=3), [_tasks()[1]], sharing="full")
    done = warm_start(alone, old)
    assert any("transformer_layer_1/" in p for p in done["copied"])
    np.testing.assert_allclose(alone({k: v for k, v in x.items() if k != "task_id"})["entities"], want, atol=1e-5)

    reordered = kmtl.build_model(tiny_encoder(seed=3), _tasks()[::-1], sharing="soft", soft_top_layers=1)
    warm_start(reordered, old)
    got = reordered(_inputs(encoder, task_ids=[1] * len(TEXTS)), training=False)["entities"]  # entities: row 1 again
    np.testing.assert_allclose(got, want, atol=1e-5)
    sentiment = reordered(_inputs(encoder, task_ids=[2] * len(TEXTS)), training=False)["sentiment"]
    np.testing.assert_allclose(sentiment, old(_inputs(encoder, task_ids=[0] * len(TEXTS)), training=False)["sentiment"],
                               atol=1e-5)

    # a task the run did not have: its copy starts from the mean of the run's copies
    more = _tasks() + [kmtl.tasks.Regression("extra")]
    grown = kmtl.build_model(tiny_encoder(seed=3), more, sharing="soft", soft_top_layers=1)
    warm_start(grown, old)
    old_copy, new_copy = _copies(old)[0], _copies(grown)[0]
    for name, variable in new_copy.copies.items():
        stacked = np.asarray(old_copy.copies[name])
        np.testing.assert_allclose(np.asarray(variable)[len(_tasks())], stacked.mean(axis=0), atol=1e-6)
        np.testing.assert_allclose(np.asarray(variable)[: len(_tasks())], stacked, atol=1e-6)

    # and the other way: a soft model started from a run without copies has each copy = the run's layer
    plain = kmtl.build_model(tiny_encoder(seed=3), _tasks(), sharing="full")
    _randomize_copies(old, seed=6)  # (leaves plain alone)
    for v in plain.weights:
        if "transformer_layer_1/" in v.path:
            v.assign(v.numpy() + 0.05)
    soft = kmtl.build_model(tiny_encoder(seed=3), _tasks(), sharing="soft", soft_top_layers=1)
    warm_start(soft, plain)
    for t, task in enumerate(_tasks()):
        x = _inputs(encoder, task_ids=[t] * len(TEXTS))
        np.testing.assert_allclose(soft(x, training=False)[task.name], plain(x, training=False)[task.name], atol=1e-5)

