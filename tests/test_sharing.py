"""Sharing modes (kmtl.sharing): what trains, per-task adapter routing, export, save/load, config."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.sharing import (
    BERT_TARGETS,
    SHARING_MODES,
    Adapters,
    LoRA,
    TaskAdapters,
    format_parameter_counts,
    make_sharing,
    trainable_parameter_counts,
    uses_task_id,
)

HIDDEN, LAYERS = 32, 2  # tiny_encoder's defaults
TEXTS = ["the film was good", "john said paris", "a bad movie", "new york", "the plot is great", "london"]


def _tasks():
    return [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
            kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"])),
            kmtl.tasks.PairRegression("similarity")]


def _inputs(encoder, texts, task_ids, max_length=16):
    x = dict(encoder.preprocessor(max_length).encode_text(tf.constant(texts)))
    x["task_id"] = tf.constant(task_ids, tf.int32)
    return x


def _randomize(model, words=("adapter",), scale=0.3, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if any(w in v.path for w in words):
            v.assign(rng.normal(scale=scale, size=v.shape).astype("float32"))


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


# ------------------------------------------------------------------ what trains, per mode
def test_trainable_parameter_counts_per_mode():
    tasks = _tasks()
    heads = None
    counts = {}
    for mode in SHARING_MODES:
        model = kmtl.build_model(tiny_encoder(seed=1), tasks, sharing=mode, lora_rank=2, adapter_size=4)
        c = counts[mode] = trainable_parameter_counts(model)
        assert c["total"] == model.count_params() == sum(r["total"] for r in c["parts"].values())
        assert c["trainable"] == _size(model.trainable_weights)
        if heads is None:
            heads = sum(_size(model.get_layer(t.name).trainable_weights) for t in tasks)
        assert c["parts"]["heads"] == {"total": heads, "trainable": heads}
    parts = {mode: {k: r["trainable"] for k, r in c["parts"].items() if r["trainable"]} for mode, c in counts.items()}
    assert parts["frozen"] == {"heads": heads}
    # query and value kernels are [d, heads, head_dim]; Keras' EinsumDense LoRA makes A
    # [d, heads, r] and B [r, head_dim] (rank 2, 2 heads of 16)
    lora = LAYERS * 2 * (HIDDEN * 2 * 2 + 2 * 16)
    assert parts["lora"] == {"lora": lora, "heads": heads}  # the targets' biases stay frozen
    adapters = LAYERS * 2 * len(tasks) * (2 * HIDDEN * 4 + HIDDEN + 4)
    layer_norms = (1 + 2 * LAYERS) * 2 * HIDDEN  # embeddings + 2 per transformer layer: gamma, beta
    assert parts["adapters"] == {"backbone": layer_norms, "adapters": adapters, "heads": heads}
    pooler = HIDDEN * HIDDEN + HIDDEN  # unused with mean pooling: frozen
    assert parts["full"] == {"backbone": counts["full"]["parts"]["backbone"]["total"] - pooler, "heads": heads}
    # the adapted graph leaves out the [CLS] pooler that mean pooling does not use
    assert counts["adapters"]["total"] == counts["full"]["total"] - pooler + adapters
    assert format_parameter_counts(counts["frozen"]).endswith(f"{heads:,} trainable (heads {heads:,})")


def test_lora_alpha_and_targets_reach_the_keras_layers():
    encoder = tiny_encoder(seed=1)
    model = kmtl.build_model(encoder, _tasks(), sharing="lora", lora_rank=2, lora_alpha=8,
                             lora_targets=["key", "feedforward_output_dense"])
    adapted = [layer for layer in encoder.backbone._flatten_layers() if getattr(layer, "lora_enabled", False)]
    assert sorted({layer.name for layer in adapted}) == ["feedforward_output_dense", "key"]
    assert len(adapted) == 2 * LAYERS and all(layer.lora_alpha == 8 and layer.lora_rank == 2 for layer in adapted)
    assert model.sharing_options == {"rank": 2, "alpha": 8.0, "target_layers": ["key", "feedforward_output_dense"]}
    with pytest.raises(ValueError, match="not in the backbone; layers that LoRA can adapt: .*query"):
        kmtl.build_model(tiny_encoder(seed=1), _tasks(), sharing=LoRA(target_layers=["qkv"]))


def test_modes_and_options_are_checked():
    with pytest.raises(ValueError, match="unknown sharing mode 'adaptor'; choose one of: full, frozen, lora, adapters"):
        kmtl.build_model(tiny_encoder(), _tasks(), sharing="adaptor")
    with pytest.raises(ValueError, match="adapter size must be a positive integer"):
        make_sharing("adapters", adapter_size=0)
    assert make_sharing("adapters", adapter_size=8) == Adapters(8)
    assert BERT_TARGETS == kmtl.config.schema.LORA_TARGETS
    assert kmtl.sharing.TASK_ID == kmtl.data.pipeline.TASK_ID and kmtl.sharing.INPUT_NAMES == kmtl.data.pipeline.INPUT_NAMES


# ------------------------------------------------------------------ adapters: identity and routing
def test_adapters_with_zero_up_projection_give_exactly_the_backbone_outputs():
    encoder = tiny_encoder(seed=2)
    adapted = kmtl.build_model(encoder, _tasks(), sharing="adapters", adapter_size=4)
    _randomize(adapted, words=("down_",))  # the down-projections are random; up is zero
    plain = kmtl.build_model(encoder, _tasks(), sharing="full")
    for task in adapted.tasks:
        adapted.get_layer(task.name).set_weights(plain.get_layer(task.name).get_weights())
    x = _inputs(encoder, TEXTS, [0, 1, 2, 0, 1, 2])
    want, got = plain(x, training=False), adapted(x, training=False)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    # and the AdaptedTransformerLayer alone equals the keras-hub layer it wraps
    layer = next(op for op in adapted.layers if op.name.endswith("_adapted"))
    hidden = tf.random.stateless_normal([2, 5, HIDDEN], seed=[1, 2])
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(layer(hidden, padding_mask=mask, task_id=tf.constant([0, 2])),
                                  layer.encoder(hidden, padding_mask=mask))


def test_changing_one_tasks_adapters_changes_only_its_examples():
    encoder = tiny_encoder(seed=3)
    model = kmtl.build_model(encoder, _tasks(), sharing="adapters", adapter_size=4)
    _randomize(model)
    x = _inputs(encoder, TEXTS, [0, 1, 2, 0, 1, 2])
    before = {k: v.numpy() for k, v in model(x, training=False).items()}
    adapters = [layer for layer in model._flatten_layers() if isinstance(layer, TaskAdapters)]
    assert len(adapters) == 2 * LAYERS
    for layer in adapters:  # task 0 (sentiment) only: slice 0 of every adapter variable
        for v in layer.weights:
            v.assign(tf.tensor_scatter_nd_add(v, [[0]], tf.ones_like(v[:1])))
    after = {k: v.numpy() for k, v in model(x, training=False).items()}
    own = np.array([0, 1, 2, 0, 1, 2]) == 0
    for name in before:
        changed = np.abs(after[name] - before[name]).reshape(len(TEXTS), -1).max(axis=1) > 1e-4
        np.testing.assert_array_equal(changed, own, err_msg=name)


def test_task_id_is_required_by_adapters_and_ignored_otherwise(tiny):
    model = kmtl.build_model(tiny, _tasks(), sharing="frozen")
    x = _inputs(tiny, TEXTS[:2], [0, 2])
    assert not uses_task_id(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "structure of inputs doesn't match" warning
        with_id = model(x)
    without = model({k: v for k, v in x.items() if k != "task_id"})
    np.testing.assert_array_equal(with_id["sentiment"], without["sentiment"])

    adapted = kmtl.build_model(tiny_encoder(seed=4), _tasks(), sharing="adapters", adapter_size=2)
    assert uses_task_id(adapted)
    with pytest.raises(ValueError, match="training inputs need 'task_id'.*sentiment"):
        adapted({k: v for k, v in x.items() if k != "task_id"}, training=True)


# ------------------------------------------------------------------ training in joint batches
def _examples():
    sentences = ["the film was good", "a bad movie", "great acting", "not very good", "the plot", "bad story"]
    return {
        "sentiment": [Example(text=t, label=["negative", "positive"][i % 2]) for i, t in enumerate(sentences)],
        "entities": [Example(tokens=("john", "said", "paris"), label=("B-PER", "O", "B-LOC")),
                     Example(tokens=("new", "york"), label=("B-LOC", "I-LOC")),
                     Example(tokens=("the", "company", "in", "london"), label=("O", "O", "O", "B-LOC"))],
    }


def test_fit_in_joint_batches_moves_only_the_right_weights():
    encoder = tiny_encoder(seed=5)
    tasks = _tasks()
    model = kmtl.build_model(encoder, tasks, sharing="adapters", adapter_size=4)
    pre = encoder.preprocessor(16)
    # similarity (task 2) has no data: its adapters and head must not move
    data = kmtl.data.mixture(tasks, _examples(), pre, batch_size=6, granularity="joint", steps_per_epoch=3)
    x, _, _ = next(iter(data))
    assert len(set(x["task_id"].numpy().tolist())) == 2  # a mixed batch
    before = {v.path: v.numpy().copy() for v in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))  # no weight decay: untouched means unchanged
    model.fit(data, epochs=1, verbose=0)
    moved = {v.path: not np.array_equal(v.numpy(), before[v.path]) for v in model.weights}
    for v in model.weights:
        path = v.path
        if "adapter" in path:
            per_task = [not np.array_equal(v.numpy()[t], before[path][t]) for t in range(3)]
            assert not per_task[2], path  # no similarity example: its slice stays
            if path.endswith(("up_kernel", "up_bias")):
                assert per_task[0] and per_task[1], path  # the first step already moves up
        elif path.startswith("similarity/"):
            assert not moved[path], path
        elif path.startswith(("sentiment/", "entities/")) or "layer_norm" in path:
            assert moved[path], path
        else:  # the rest of the backbone is frozen
            assert not moved[path], path


# ------------------------------------------------------------------ export and save/load
def test_export_with_adapters_routes_each_signature(tmp_path):
    import tensorflow_text  # noqa: F401

    encoder = tiny_encoder(seed=6, num_layers=1)  # one layer, two tasks: less to trace and convert
    tasks = _tasks()[:2]
    model = kmtl.build_model(encoder, tasks, sharing="adapters", adapter_size=4)
    _randomize(model)
    pre = encoder.preprocessor(16)
    path = kmtl.export.export_saved_model(model, pre, tmp_path, "adapted")
    info = json.loads((path / "assets.extra" / "kmtl.json").read_text())
    assert info["sharing"] == {"mode": "adapters", "size": 4}
    loaded = tf.saved_model.load(str(path))
    texts = ["the film was good", "john said paris"]

    def call(name, **inputs):
        return {k: v.numpy() for k, v in loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()}).items()}

    alone = call("sentiment", text=texts)
    x = _inputs(encoder, texts, [0, 0])
    want = tf.nn.softmax(model(x, training=False)["sentiment"]).numpy()
    np.testing.assert_allclose(alone["sentiment_probabilities"], want, atol=1e-5)
    # serving_default tiles the batch per task: the same figures as each task's own signature
    default = call("serving_default", text=texts)
    np.testing.assert_allclose(default["sentiment_probabilities"], want, atol=1e-5)
    np.testing.assert_array_equal(default["entities_tags"], call("entities", text=texts)["entities_tags"])
    # and what kmtl.evaluation predicts, through the data pipeline's task_id
    pred = kmtl.evaluation.predict_task(model, tasks[0], [Example(text=t) for t in texts], pre)
    np.testing.assert_allclose(want, [list(p["probabilities"].values()) for p in pred], atol=1e-5)
    # ids takes no task_id: each task's output through its own adapters, for every row
    x = _inputs(encoder, texts, [1, 0])
    plain = {k: v.numpy() for k, v in x.items() if k != "task_id"}
    ids = call("ids", **plain)
    ref = {task.name: model(_inputs(encoder, texts, [t, t]), training=False)[task.name] for t, task in enumerate(tasks)}
    for name in ref:
        np.testing.assert_allclose(ids[name], ref[name], atol=1e-5)
    # and model(x) without task_id in inference answers the same
    for name, value in model(plain).items():
        np.testing.assert_allclose(value, ref[name], atol=1e-5)
    with pytest.raises(ValueError, match="training inputs need 'task_id'"):
        model(plain, training=True)

    import onnxruntime as ort

    from kmtl.export import export_onnx

    onnx_path = export_onnx(model, tmp_path, "onnx", max_length=16)
    assert "task_id" not in json.loads((onnx_path / "kmtl.json").read_text())["inputs"]
    session = ort.InferenceSession(str(onnx_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["sentiment", "entities"], plain)
    np.testing.assert_allclose(got[0], ref["sentiment"], atol=1e-4)
    np.testing.assert_allclose(got[1], ref["entities"], atol=1e-4)


@pytest.mark.parametrize("sharing", [Adapters(size=3), LoRA(rank=2, alpha=4.0, target_layers=("query", "key"))])
def test_run_save_and_load_rebuild_the_sharing(tmp_path, sharing):
    from kmtl.run_files import load_run, save_run

    encoder = tiny_encoder(seed=0)  # load_run rebuilds "tiny" with seed 0
    model = kmtl.build_model(encoder, _tasks(), sharing=sharing, name="saved")
    _randomize(model, words=("adapter", "lora_kernel", "sentiment/"))
    x = _inputs(encoder, TEXTS[:3], [0, 1, 2])
    want = model(x, training=False)
    save_run(tmp_path, model, 16, {"name": "saved"})
    loaded, pre, info = load_run(tmp_path)
    assert info["sharing"] == sharing.name and info["sharing_options"] == sharing.get_config()
    assert loaded.sharing == sharing.name and loaded.sharing_options == sharing.get_config()
    got = loaded(x, training=False)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    # still learning after a load (Keras zeroes both LoRA factors on load: kmtl re-draws A),
    # which is also what a run resumed by BackupAndRestore needs
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(tf.square(v)) for v in loaded(x, training=True).values())
    variables = [v for v in loaded.trainable_weights if "lora_kernel_b" in v.path or "up_kernel" in v.path]
    assert variables and all(float(tf.norm(g)) > 0 for g in tape.gradient(loss, variables))


def test_run_files_without_sharing_options_still_load(tmp_path):
    from kmtl.run_files import RUN_FILE, load_run, save_run

    model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), sharing="frozen")
    save_run(tmp_path, model, 16)
    info = json.loads((tmp_path / RUN_FILE).read_text())
    del info["sharing_options"]  # as written before kmtl.sharing existed
    (tmp_path / RUN_FILE).write_text(json.dumps(info))
    assert load_run(tmp_path)[0].sharing == "frozen"


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("sharing, where, message", [
    ({"mode": "adaptors"}, "sharing.mode", "'adaptors' is not one of: full, frozen, lora, adapters"),
    ({"mode": "full", "lora_rank": 4}, "sharing.lora_rank", "only used when mode is lora (mode is full)"),
    ({"mode": "lora", "adapter_size": 8}, "sharing.adapter_size", "only used when mode is adapters"),
    ({"mode": "adapters", "adapter_size": 0}, "sharing.adapter_size", "greater than or equal to 1"),
    ({"mode": "lora", "lora_alpha": -1}, "sharing.lora_alpha", "greater than 0"),
    ({"mode": "lora", "lora_targets": ["query", "qkv"]}, "sharing.lora_targets",
     "not a layer LoRA can adapt: 'qkv'; choose from: query, key, value, attention_output"),
    ({"mode": "lora", "lora_targets": []}, "sharing.lora_targets", "list at least one layer"),
    ({"mode": "frozen", "adapter_sise": 3}, "sharing.adapter_sise", "did you mean 'adapter_size'"),
])
def test_config_errors_name_the_key_and_the_choices(tmp_path, sharing, where, message):
    from kmtl.config import config_from_dict
    from kmtl.errors import ConfigError

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 1.0}\n')
    config = {"tasks": [{"name": "a", "kind": "regression", "train": {"format": "jsonl", "path": str(data)}}],
              "sharing": sharing}
    with pytest.raises(ConfigError) as err:
        config_from_dict(config, tmp_path)
    assert len(err.value.problems) == 1
    key, text = err.value.problems[0]
    assert key == where and message in text, (key, text)


def test_config_sharing_options_reach_the_model(tmp_path):
    from kmtl.config import config_from_dict

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": 1.0}\n')
    config = config_from_dict({"tasks": [{"name": "a", "kind": "regression",
                                          "train": {"format": "jsonl", "path": str(data)}}],
                               "sharing": {"mode": "lora", "lora_rank": 4, "lora_alpha": 8,
                                           "lora_targets": ["query", "value", "key"]}}, tmp_path)
    sh = config.sharing
    assert sh.options() == {"lora_rank": 4, "lora_alpha": 8.0, "lora_targets": ("query", "value", "key")}
    assert make_sharing(sh.mode, **sh.options()) == LoRA(4, 8.0, ("query", "value", "key"))  # what train() builds
    # defaults are the mode's own; the resolved config (run_dir/config.json) validates again
    default = config_from_dict({**config.to_yaml_dict(), "sharing": {"mode": "adapters"}}, tmp_path)
    assert default.sharing.options() == {} and make_sharing("adapters") == Adapters(64)
    assert config_from_dict(default.to_yaml_dict(), tmp_path) == default
