"""`.keras` save/load and save_weights/load_weights of kmtl models, for every sharing mode.

The models are trained a few steps (weights away from their initial values, optimizer
state), saved, and loaded again in a *fresh* Python process that runs only ``import kmtl,
keras`` before ``keras.saving.load_model``; its outputs must equal the in-process ones.
One subprocess loads every file (a TensorFlow import costs seconds).
"""

import json
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.sharing import SHARING_MODES, Adapters, FrozenBackbone, FullFineTuning, LoRA, TaskAdapters

TEXTS = ["the film was good", "john said paris", "a bad movie", "new york", "the plot is great"]
TASK_IDS = [0, 1, 2, 0, 1]
OPTIONS = {"lora": {"lora_rank": 2, "lora_alpha": 4.0, "lora_targets": ["query", "value", "key"]},
           "adapters": {"adapter_size": 4}, "prefix": {"prefix_length": 4, "prefix_hidden": 8},
           "soft": {"soft_top_layers": 1}, "mmoe": {"mmoe_experts": 2}}
STEPS = 2
ATOL = 1e-6


def _tasks():
    similarity = kmtl.tasks.PairRegression("similarity")
    similarity.initial_bias = 2.5  # as fit_labels sets it: part of the task's config
    return [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
            kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"])),
            similarity]


def _build(mode, seed=0):
    encoder = tiny_encoder(seed=seed)
    return encoder, kmtl.build_model(encoder, _tasks(), sharing=mode, name=f"kmtl_{mode}", **OPTIONS.get(mode, {}))


def _outputs(model, x):
    return {name: np.asarray(value) for name, value in model(x, training=False).items()}


@pytest.fixture(scope="module")
def batch():
    """One joint batch as kmtl's pipelines give it: inputs with ``task_id``, and a label and a
    weight for every task (weight 0 on the examples a task does not own; token weights from
    the padding mask). Built by hand: `kmtl.data.mixture` would cost seconds."""
    x = dict(tiny_encoder(seed=0).preprocessor(16).encode_text(tf.constant(TEXTS)))
    x["task_id"] = tf.constant(TASK_IDS, tf.int32)
    n, length = x["token_ids"].shape
    owner = np.array(TASK_IDS)
    y = {"sentiment": np.array([1, 0, 0, 1, 0], np.int32),
         "entities": np.random.default_rng(0).integers(0, 5, (n, length)).astype(np.int32),
         "similarity": np.array([[4.0], [1.0], [3.0], [0.5], [2.0]], np.float32)}
    w = {"sentiment": (owner == 0).astype(np.float32),
         "entities": (owner == 1)[:, None] * np.asarray(x["padding_mask"], np.float32),
         "similarity": (owner == 2).astype(np.float32)}
    return x, y, w


@pytest.fixture(scope="module")
def saved(tmp_path_factory, batch):
    """Per mode: a model trained STEPS steps, saved as .keras and .weights.h5, and its outputs
    on the batch's inputs; the "lora" run also writes a ModelCheckpoint file; then what a
    fresh process loads from each file."""
    root = tmp_path_factory.mktemp("keras_saving")
    x = batch[0]
    np.savez(root / "inputs.npz", **{k: np.asarray(v) for k, v in x.items()})
    runs = {}
    for mode in SHARING_MODES:
        _, model = _build(mode)
        initial = {v.path: v.numpy() for v in model.trainable_weights}
        # kmtl's own optimizer classes (schedule, per-layer rates) must come back from the file too;
        # run_eagerly: two steps of a tiny model take less time than tracing the train step
        model.compile(optimizer=kmtl.training.make_optimizer(1e-2, total_steps=10, warmup_ratio=0.0,
                                                             rate_multipliers={"sentiment": 2.0}),
                      loss_weights={"similarity": 0.5}, run_eagerly=True)
        callbacks = []
        if mode == "lora":
            callbacks = [keras.callbacks.ModelCheckpoint(str(root / "best.keras"), monitor="loss", save_best_only=True)]
        model.fit(tf.data.Dataset.from_tensors(batch).repeat(STEPS), epochs=1, verbose=0, callbacks=callbacks)
        # trained away from the initial weights (else a file that kept them would pass): the heads
        # and what the mode trains in the backbone (LoRA's B, the adapters' up-projections...)
        now = {v.path: v.numpy() for v in model.trainable_weights}
        moved = {path for path, value in initial.items() if not np.array_equal(now[path], value)}
        assert {t.name + "/kernel" for t in model.tasks} <= moved, (mode, moved)
        assert mode == "frozen" or any(not path.startswith(("sentiment/", "entities/", "similarity/")) for path in moved)
        outputs = _outputs(model, x)
        model.save(root / f"{mode}.keras")
        model.save_weights(root / f"{mode}.weights.h5")
        runs[mode] = {"model": model, "x": x, "outputs": outputs}

    files = [f"{mode}.keras" for mode in SHARING_MODES] + ["best.keras"]
    script = textwrap.dedent(f"""
        import json, sys, warnings
        import numpy as np
        import kmtl
        report = {{"tf_after_import_kmtl": "tensorflow" in sys.modules}}
        import keras
        report["registered"] = keras.saving.get_registered_object("kmtl>MultiTaskModel") is not None
        report["models"] = {{}}
        x = dict(np.load("inputs.npz"))
        for name in {files!r}:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = keras.saving.load_model(name)
            np.savez(name + ".out.npz", **{{k: np.asarray(v) for k, v in model(x, training=False).items()}})
            lora_a = [float(np.abs(v.numpy()).max()) for v in model.weights if "lora_kernel_a" in v.path]
            report["models"][name] = {{
                "class": type(model).__name__, "sharing": model.sharing, "options": model.sharing_options,
                "encoder_spec": model.encoder_spec, "tasks": [t.get_config() for t in model.tasks],
                "loss_weights": model.loss_weights_now, "compiled": model.compiled,
                "optimizer": type(model.optimizer).__name__ if model.compiled else None,
                "iterations": int(model.optimizer.iterations.numpy()) if model.compiled else None,
                "lora_a_max": min(lora_a) if lora_a else None,
                "warnings": [str(w.message) for w in caught]}}
        json.dump(report, open("report.json", "w"))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((root / "report.json").read_text())
    return root, runs, report


def test_import_kmtl_alone_registers_the_classes_without_importing_tensorflow(saved):
    _, _, report = saved
    assert report["tf_after_import_kmtl"] is False  # `import kmtl` stays cheap
    assert report["registered"] is True  # registered by `import keras`, nothing else imported


@pytest.mark.parametrize("mode", SHARING_MODES)
def test_keras_file_loads_in_a_fresh_process_and_predicts_the_same(saved, mode):
    root, runs, report = saved
    model = runs[mode]["model"]
    got = dict(np.load(root / f"{mode}.keras.out.npz"))
    assert sorted(got) == sorted(runs[mode]["outputs"])
    for name, want in runs[mode]["outputs"].items():
        np.testing.assert_allclose(got[name], want, rtol=0, atol=ATOL, err_msg=f"{mode}/{name}")
    info = report["models"][f"{mode}.keras"]
    assert info["class"] == "MultiTaskModel" and info["encoder_spec"] == "tiny"
    assert info["sharing"] == mode and info["options"] == model.sharing_options
    assert info["tasks"] == [t.get_config() for t in model.tasks]
    assert info["tasks"][2]["initial_bias"] == 2.5
    assert info["loss_weights"] == {"sentiment": 1.0, "entities": 1.0, "similarity": 0.5}
    # compiled again with kmtl's optimizer, its state restored: a loaded model resumes training
    assert info["compiled"] and info["optimizer"] == "LayerRateAdamW" and info["iterations"] == STEPS
    assert not [w for w in info["warnings"] if "compile" in w or "Skipping" in w], info["warnings"]
    if mode == "lora":  # the merged kernel is loaded; A re-drawn so that LoRA keeps learning
        assert info["lora_a_max"] > 0


def test_model_checkpoint_keras_file_loads(saved):
    root, runs, report = saved
    got = dict(np.load(root / "best.keras.out.npz"))
    for name, want in runs["lora"]["outputs"].items():  # one epoch: the best is the last
        np.testing.assert_allclose(got[name], want, rtol=0, atol=ATOL, err_msg=name)
    assert report["models"]["best.keras"]["sharing"] == "lora"


@pytest.mark.parametrize("mode", SHARING_MODES)
def test_load_weights_into_a_freshly_built_model(saved, mode):
    root, runs, _ = saved
    _, fresh = _build(mode, seed=7)
    trained = runs[mode]["model"]
    x, want = runs[mode]["x"], runs[mode]["outputs"]
    assert not np.array_equal(fresh.get_layer("sentiment").kernel, trained.get_layer("sentiment").kernel)
    fresh.load_weights(root / f"{mode}.weights.h5")
    got = _outputs(fresh, x)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=ATOL, err_msg=f"{mode}/{name}")
    assert fresh.loss_weights_now["similarity"] == 0.5


def test_in_process_load_of_adapters_keeps_routing_and_learning(saved):
    root, runs, _ = saved
    loaded = keras.saving.load_model(root / "adapters.keras")
    adapters = [layer for layer in loaded._flatten_layers() if isinstance(layer, TaskAdapters)]
    assert len(adapters) == 4 and all(a.num_tasks == 3 and a.size == 4 for a in adapters)
    x = runs["adapters"]["x"]
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(tf.square(v)) for v in loaded(x, training=True).values())
    up = [v for v in loaded.trainable_weights if "up_kernel" in v.path]
    assert up and all(float(tf.norm(g)) > 0 for g in tape.gradient(loss, up))
    assert not [v for v in loaded.trainable_weights if "query" in v.path]  # the backbone stays frozen


def test_get_config_is_json_and_from_config_passes_only_known_keys(tiny):
    model = kmtl.build_model(tiny, _tasks(), sharing="lora", lora_rank=2)
    config = json.loads(json.dumps(model.get_config()))
    assert config["backbone"]["class_name"] == "BertBackbone" and config["encoder_spec"] == "tiny"
    assert config["sharing"] == "lora" and config["sharing_options"]["rank"] == 2
    with pytest.warns(UserWarning, match=r"ignoring config keys \['future_option'\]"):
        rebuilt = kmtl.MultiTaskModel.from_config({**config, "future_option": 1})
    assert rebuilt.name == model.name and [t.name for t in rebuilt.tasks] == [t.name for t in model.tasks]
    assert len(rebuilt.weights) == len(model.weights)
    with pytest.raises(ValueError, match="needs 'backbone' and 'tasks'"):
        kmtl.MultiTaskModel.from_config({"name": "x"})


def test_a_custom_sharing_mode_cannot_be_saved_and_says_what_to_do(tiny, tmp_path):
    class Mine(FrozenBackbone):
        name = "mine"

    model = kmtl.build_model(tiny, _tasks()[:1], sharing=Mine())
    with pytest.raises(ValueError, match="save_weights.*kmtl.build_model"):
        model.save(tmp_path / "m.keras")


@pytest.mark.parametrize("obj", [
    *_tasks(), kmtl.tasks.MultiLabelClassification("topics", ["a", "b"], threshold=0.3),
    FullFineTuning(), FrozenBackbone(), LoRA(2, 4.0, ("query", "key")), Adapters(3),
], ids=lambda o: type(o).__name__)
def test_tasks_and_sharing_modes_are_registered_keras_serializables(obj):
    config = keras.saving.serialize_keras_object(obj)
    assert config["registered_name"] == f"kmtl>{type(obj).__name__}"
    rebuilt = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(obj) and rebuilt.get_config() == obj.get_config()


def test_task_from_config_checks_the_kind():
    config = kmtl.tasks.Classification("s", ["a", "b"]).get_config()
    assert isinstance(kmtl.tasks.Task.from_config(config), kmtl.tasks.Classification)
    with pytest.raises(ValueError, match="use kmtl.tasks.from_config"):
        kmtl.tasks.Tagging.from_config(config)


def test_adapted_transformer_layer_round_trips_its_config(tiny):
    encoder = tiny.backbone.get_layer("transformer_layer_0")
    from kmtl.sharing import AdaptedTransformerLayer

    layer = AdaptedTransformerLayer(encoder, num_tasks=2, size=3)
    rebuilt = AdaptedTransformerLayer.from_config(layer.get_config())
    assert (rebuilt.name, rebuilt.num_tasks, rebuilt.size) == (layer.name, 2, 3)
    assert rebuilt.encoder is not encoder and rebuilt.encoder.get_config() == encoder.get_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras.saving.serialize_keras_object(TaskAdapters(3, 4, name="t"))


def test_importing_a_registering_package_first_still_registers_everything():
    """`from kmtl.sharing import ...` imports Keras half-way through kmtl.sharing; registering then
    (kmtl.model needs kmtl.sharing whole) once failed with a circular-import warning."""
    script = ("import warnings; warnings.simplefilter('error')\n"
              "import kmtl\nfrom {module} import {name}\nimport keras\n"
              "assert keras.saving.get_registered_object('kmtl>MultiTaskModel') is not None\n"
              "assert keras.saving.get_registered_object('kmtl>TaskAdapters') is not None\n")
    runs = [subprocess.Popen([sys.executable, "-c", script.format(module=module, name=name)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for module, name in (("kmtl.sharing", "Adapters"), ("kmtl.metrics", "EntityF1"))]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
