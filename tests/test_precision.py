"""Mixed precision (kmtl.model.precision): policies, float32 heads, loss scaling in hooked steps, float32 exports;
and the TPU answer (config and choose_strategy)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.model import precision as precision_lib
from kmtl.model.precision import ScaledTape, float32_copy, precision_scope, resolve_precision
from kmtl.weighting import GradNorm, PCGrad, StaticWeighting, UncertaintyWeighting

MAX_LENGTH = 16
NO_METRICS = {"sent": [], "ner": []}  # cheaper traces: these tests watch the loss
TEXTS = ["the good film", "john said paris", "a bad story"]


def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0)]


def _examples():
    words = "the a good bad film john paris story".split()
    rng = np.random.default_rng(0)
    sent = [Example(text=" ".join(rng.choice(words, 3)), label=["neg", "pos"][i % 2]) for i in range(8)]
    ner = []
    for i in range(8):
        tokens = tuple(rng.choice(words, 2 + i % 4))
        ner.append(Example(tokens=tokens, label=tuple("B-PER" if t == "john" else "O" for t in tokens)))
    return {"sent": sent, "ner": ner}


@pytest.fixture(scope="module")
def batch():
    """One mixed batch of both tasks, repeated: training on it must lower its loss."""
    pre = tiny_encoder(seed=0).preprocessor(MAX_LENGTH)
    data = kmtl.data.mixture(_tasks(), _examples(), pre, batch_size=8, seed=1)
    return data.take(1).cache().repeat()


@pytest.fixture(scope="module")
def bf16_model():
    """An untrained model built under mixed_bfloat16, shared read-only (tests that train build their own)."""
    return _model("mixed_bfloat16")


def _model(precision=None):
    if precision is None:
        return kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=MAX_LENGTH)
    with precision_scope(precision):
        return kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=MAX_LENGTH)


def _x(model):
    return dict(model.preprocessor.encode_text(tf.constant(TEXTS)))


def _fit(model, data, callback, steps=20):
    history = model.fit(data, epochs=steps, steps_per_epoch=1, verbose=0, callbacks=[callback]).history
    return history["loss"]


def _assert_learns(losses, factor=0.7):
    assert np.isfinite(losses).all(), losses
    assert np.mean(losses[-3:]) < factor * losses[0], losses


# ------------------------------------------------------------------ the policy and the heads
def test_precision_scope_restores_the_policy_and_heads_compute_in_float32(bf16_model):
    for precision, half in (("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")):
        model = bf16_model if precision == "mixed_bfloat16" else _model(precision)
        assert keras.config.dtype_policy().name == "float32"  # nothing leaks out of the block
        encoder = next(layer for layer in model.layers if isinstance(layer, keras.Model))
        assert encoder.compute_dtype == half and model.compute_dtype == half
        assert all(model.get_layer(name).compute_dtype == "float32" for name in ("sent", "ner", "mean_pooling"))
        assert all(v.dtype == "float32" for v in model.weights)  # float32 master weights
        outputs = model(_x(model))
        assert {name: out.dtype for name, out in outputs.items()} == {"sent": "float32", "ner": "float32"}
    with pytest.raises(RuntimeError), precision_scope("mixed_bfloat16"):
        raise RuntimeError("a failed build")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="float32, mixed_float16, mixed_bfloat16"), precision_scope("float16"):
        pass


def test_scaled_tape_keeps_a_float16_gradient_that_underflows_without_scaling():
    w = tf.Variable(1.0)
    with tf.GradientTape(persistent=True) as tape:
        h = tf.cast(w, tf.float16)
        loss = 1e-8 * tf.cast(h, tf.float32)  # d loss / d h = 1e-8: below float16's smallest subnormal
    assert float(tape.gradient(loss, w)) == 0.0
    scaled = ScaledTape(tape, tf.constant(2.0 ** 15)).gradient(loss, [w])[0]
    assert float(scaled) == pytest.approx(1e-8, rel=1e-3)  # scaled backward pass, unscaled result


# ------------------------------------------------------------------ training
def test_mixed_bfloat16_trains(batch):
    model = _model("mixed_bfloat16")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), weighted_metrics=NO_METRICS)
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # bfloat16 needs no scaling
    _assert_learns(_fit(model, batch, StaticWeighting({"sent": 1.0, "ner": 1.0})))


@pytest.mark.parametrize("weighting", ["static", pytest.param("pcgrad", marks=pytest.mark.slow),
                                       pytest.param("uncertainty", marks=pytest.mark.slow)])
def test_mixed_float16_trains_with_loss_scaling(batch, weighting):
    """kmtl's loss-scaled step with a plain hook (static), PCGrad's per-task gradients and
    uncertainty's loss weights (slow-marked: CI's time budget, ~10 s a trace; in CI the per-task
    gradients of a loss-scaled step are checked by the GradNorm overflow test below).

    Static and PCGrad train with loss weights 1e-6 (Adam, with a tiny epsilon, does not mind the
    gradients' size): most float16 gradients then underflow to 0 without loss scaling, and the
    loss falls to ~25% of its start in 20 steps instead of <1%."""
    tiny = 1e-6 if weighting != "uncertainty" else 1.0  # uncertainty sets its own weights
    model = _model("mixed_float16")
    model.compile(optimizer=keras.optimizers.Adam(3e-3, epsilon=1e-12), weighted_metrics=NO_METRICS,
                  loss_weights={"sent": tiny, "ner": tiny})
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    callback = {"static": lambda: StaticWeighting({"sent": tiny, "ner": tiny}), "pcgrad": PCGrad,
                "uncertainty": UncertaintyWeighting}[weighting]()
    _assert_learns(_fit(model, batch, callback), factor=0.05 if tiny < 1 else 0.7)
    assert all(np.isfinite(v).all() for v in model.get_weights())
    assert all(np.isfinite(w) for w in model.loss_weights_now.values())


def test_float16_step_with_overflowing_gradients_is_skipped_with_the_strategys_state(batch):
    """A loss scale of 2**40 overflows float16: no weight, loss weight or GradNorm state moves; the scale halves."""
    model = _model("mixed_float16")
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2), initial_scale=2.0 ** 40),
                  weighted_metrics=NO_METRICS)
    model.optimizer.build(model.trainable_variables)
    before = [np.array(v) for v in model.trainable_variables]
    losses = _fit(model, batch, GradNorm(), steps=1)
    assert np.isfinite(losses).all()
    assert all(np.array_equal(np.array(v), b) for v, b in zip(model.trainable_variables, before))
    assert model.loss_weights_now == {"sent": 1.0, "ner": 1.0}  # GradNorm's update from inf norms: undone
    assert np.isfinite(np.array(model.weighting_state["initial_losses"])).all()
    assert float(model.optimizer.dynamic_scale.numpy()) == 2.0 ** 39


def test_float32_training_is_bit_identical_to_a_model_built_without_the_scope(batch):
    with precision_scope("mixed_bfloat16"):
        pass
    runs = []
    for model in (_model(None), _model("float32")):
        model.compile(optimizer=keras.optimizers.Adam(3e-3), run_eagerly=True)  # no tracing: CI's time budget
        losses = _fit(model, batch, StaticWeighting({"sent": 1.0, "ner": 1.0}), steps=1)  # Keras' own step
        losses += _fit(model, batch, PCGrad(), steps=1)  # the hooked step
        runs.append((losses, model.get_weights()))
    (losses_a, weights_a), (losses_b, weights_b) = runs
    assert losses_a == losses_b
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))


MIRRORED_FLOAT16 = """
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import kmtl
sys.path.insert(0, sys.argv[1])
from test_precision import MAX_LENGTH, NO_METRICS, _examples, _tasks
from kmtl.backbone import tiny_encoder
from kmtl.model.precision import precision_scope
strategy = kmtl.training.choose_strategy("mirrored")
data = kmtl.data.mixture(_tasks(), _examples(), tiny_encoder(seed=0).preprocessor(MAX_LENGTH), batch_size=8, seed=1)
with strategy.scope(), precision_scope("mixed_float16"):
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=MAX_LENGTH)
    model.compile(optimizer=kmtl.training.make_optimizer(3e-3, 20, warmup_ratio=0.0, clipnorm=1.0),
                  weighted_metrics=NO_METRICS)
history = model.fit(data.take(1).cache().repeat(), epochs=8, steps_per_epoch=1, verbose=0).history
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history["loss"],
                  "scale": float(model.optimizer.dynamic_scale.numpy())}))
"""


@pytest.mark.slow
def test_mixed_float16_under_mirrored_strategy_skips_overflowing_steps_on_every_replica():
    """2 replicas (logical CPUs, a fresh process): the first steps overflow at the initial scale 2**15 and
    are skipped by both replicas; then the model learns. (Keras' own step: NaN weights from step 2.)"""
    import json
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", MIRRORED_FLOAT16, here], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["scale"] < 2.0 ** 15
    _assert_learns(result["loss"])


# ------------------------------------------------------------------ exports serve float32
def test_serving_functions_of_a_bfloat16_model_return_its_float32_outputs(bf16_model):
    from kmtl.export.saved_model import ServingGraph

    model = bf16_model
    x = _x(model)
    graph = ServingGraph(model, model.preprocessor)
    ids = graph.serve_ids(x["token_ids"], x["segment_ids"], x["padding_mask"])  # eagerly: what the export traces
    expected = model(x)
    for name in ("sent", "ner"):
        assert ids[name].dtype == tf.float32
        np.testing.assert_array_equal(ids[name].numpy(), expected[name].numpy())  # the same (mixed) computation
    serve_text, _ = graph.endpoints()["serving_default"]
    answers = serve_text(tf.constant(TEXTS))
    assert answers["sent_probabilities"].dtype == tf.float32
    np.testing.assert_allclose(answers["sent_probabilities"].numpy(), tf.nn.softmax(expected["sent"]).numpy(),
                               atol=1e-6)


def test_onnx_export_of_a_bfloat16_model_is_a_float32_graph(tmp_path, bf16_model):
    onnxruntime = pytest.importorskip("onnxruntime")
    from kmtl.export import export_onnx

    model = bf16_model
    x = {k: v.numpy() for k, v in _x(model).items()}
    path = export_onnx(model, tmp_path, "bf16")
    session = onnxruntime.InferenceSession(str(path / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    answers = dict(zip(names, session.run(names, {k: x[k] for k in ("token_ids", "segment_ids", "padding_mask")})))
    twin = float32_copy(model)(x)
    mixed = model(x)
    assert model.compute_dtype == "bfloat16" and keras.config.dtype_policy().name == "float32"
    for name in ("sent", "ner"):
        assert answers[name].dtype == np.float32
        np.testing.assert_allclose(answers[name], twin[name].numpy(), atol=1e-4)  # the float32 graph, same weights
        np.testing.assert_allclose(answers[name], mixed[name].numpy(), atol=5e-2)  # bfloat16 rounding apart
    assert np.abs(answers["ner"] - mixed["ner"].numpy()).max() > 0  # and it is not the bfloat16 graph


def test_the_serving_copy_stores_the_encoders_weights_in_bfloat16_and_answers_within_its_rounding():
    from kmtl.model.precision import serving_copy

    model = _model("mixed_bfloat16")
    for layer in model._flatten_layers():  # LayerNorm scales not exact in bfloat16
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.gamma.assign(tf.random.stateless_uniform(layer.gamma.shape, [3, 4], 0.5, 1.5))
    x = _x(model)
    served = serving_copy(model)
    dtypes = {v.path: v.dtype for v in served.weights}
    assert dtypes["token_embedding/embeddings"] == "bfloat16"
    assert all(dtype == "float32" for path, dtype in dtypes.items() if path.startswith(("sent", "ner")))  # heads
    assert all(v.dtype == "float32" for v in model.weights)  # the model itself keeps its float32 master weights
    mixed, copy, exact = model(x), served(x), float32_copy(model)(x)
    for name in ("sent", "ner"):
        assert copy[name].dtype == tf.float32
        gap = np.abs(copy[name].numpy() - mixed[name].numpy()).max()
        assert 0 < gap < 5e-2  # some operands rounded to bfloat16 where the mixed model keeps float32
        assert np.abs(copy[name].numpy() - exact[name].numpy()).max() < 5e-2
    float32_model = _model()
    assert serving_copy(float32_model) is float32_model  # float32 models serve as they are


@pytest.mark.parametrize("mode,options", [("full", {}), ("lora", {}), ("adapters", {}), ("prefix", {}),
                                          ("scalar_mix", {}), ("soft", {"soft_top_layers": 1}),
                                          ("mmoe", {"mmoe_experts": 2}), ("progressive", {})])
def test_every_sharing_modes_serving_form_has_a_serving_copy_that_answers_like_it(mode, options):
    from kmtl.model.per_task import run_tasks
    from kmtl.model.precision import serving_copy
    from kmtl.sharing import served_model

    with precision_scope("mixed_bfloat16"):
        model = served_model(kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=MAX_LENGTH, sharing=mode,
                                              **options))
    served = serving_copy(model)
    x = _x(model)
    want, got = run_tasks(model, x, model.tasks), run_tasks(served, x, model.tasks)  # what the export traces
    for name in ("sent", "ner"):
        np.testing.assert_allclose(np.asarray(got[name], "float32"), np.asarray(want[name], "float32"), atol=2e-2)


@pytest.mark.slow
def test_saved_model_of_a_bfloat16_model_answers_like_predict(tmp_path):
    import tensorflow_text  # noqa: F401  (the serving graph's tokenizer ops)

    from kmtl.export import export_saved_model

    model = _model("mixed_bfloat16")
    path = export_saved_model(model, model.preprocessor, tmp_path, "bf16")
    loaded = tf.saved_model.load(str(path))
    assert tf.bfloat16 in {v.dtype for v in loaded.variables}  # kmtl.model.precision.serving_copy's weights
    served = loaded.signatures
    x = _x(model)
    ids = served["ids"](token_ids=x["token_ids"], segment_ids=x["segment_ids"], padding_mask=x["padding_mask"])
    expected = model(x)
    for name in ("sent", "ner"):
        assert ids[name].dtype == tf.float32
        # bfloat16 weights (serving_copy) in a graph Grappler rewrote: within bfloat16's rounding of predict
        np.testing.assert_allclose(ids[name].numpy(), expected[name].numpy(), atol=2e-2)
    text = served["serving_default"](text=tf.constant(TEXTS))
    assert text["sent_probabilities"].dtype == tf.float32


# ------------------------------------------------------------------ precision: auto
AMD_ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
AVX2_ONLY = "flags\t\t: fpu sse2 avx2 fma\n"


def test_auto_precision_is_bfloat16_only_on_cpus_with_native_bfloat16(monkeypatch):
    monkeypatch.delenv("KMTL_PRECISION", raising=False)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert resolve_precision("auto", cpuinfo=AMD_ZEN4, gpus=0) == ("mixed_bfloat16", "auto: the CPU has AVX512-BF16")
    assert resolve_precision("auto", cpuinfo=SAPPHIRE, gpus=0) == ("mixed_bfloat16", "auto: the CPU has AMX-BF16")
    precision, reason = resolve_precision("auto", cpuinfo=AVX2_ONLY, gpus=0)
    assert precision == "float32" and "no native bfloat16" in reason
    assert resolve_precision("auto", cpuinfo="", gpus=0)[0] == "float32"  # no /proc/cpuinfo flags: assume none
    assert resolve_precision("auto", cpuinfo=SAPPHIRE, gpus=1)[0] == "float32"  # GPUs: not measured, float32
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # no oneDNN: bfloat16 would be Eigen's emulation
    assert resolve_precision("auto", cpuinfo=SAPPHIRE, gpus=0)[0] == "float32"


def test_an_explicit_precision_and_the_environment_override_win_over_the_cpu(monkeypatch):
    monkeypatch.setenv("KMTL_PRECISION", "float32")
    assert resolve_precision("auto", cpuinfo=SAPPHIRE, gpus=0) == ("float32", "auto: KMTL_PRECISION=float32")
    assert resolve_precision("mixed_bfloat16", cpuinfo=AVX2_ONLY, gpus=0) == ("mixed_bfloat16", "as configured")
    monkeypatch.setenv("KMTL_PRECISION", "bf16")
    from kmtl.errors import KmtlError

    with pytest.raises(KmtlError, match="KMTL_PRECISION='bf16' is not a precision; set it to one of"):
        resolve_precision("auto", cpuinfo=SAPPHIRE, gpus=0)
    with pytest.raises(ValueError, match="training.precision"):
        resolve_precision("half")


def test_precision_scope_resolves_auto_and_the_config_defaults_to_auto(monkeypatch, tmp_path):
    from kmtl.config import config_from_dict

    monkeypatch.delenv("KMTL_PRECISION", raising=False)
    monkeypatch.setattr(precision_lib, "cpu_bf16_flags", lambda cpuinfo=None: ["avx512_bf16"])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    with precision_scope("auto") as policy:
        assert policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na film\tpos\n")
    config = config_from_dict({"tasks": [{"name": "sent", "kind": "classification",
                                          "train": {"format": "tsv", "path": "train.tsv", "text": "sentence"}}]},
                              tmp_path)
    assert config.training.precision == "auto"
    assert precision_lib.cpu_bf16_flags.__name__ == "<lambda>"  # the patch held: this machine's flags play no part


def test_cpu_bf16_flags_reads_this_machines_cpuinfo():
    flags = precision_lib.cpu_bf16_flags()
    assert set(flags) <= set(precision_lib.BF16_CPU_FLAGS)
    if os.path.exists("/proc/cpuinfo"):
        text = open("/proc/cpuinfo", encoding="utf-8").read()
        assert flags == [f for f in precision_lib.BF16_CPU_FLAGS if f" {f}" in text]


# ------------------------------------------------------------------ kmtl train
@pytest.mark.slow
def test_train_builds_the_model_in_the_configs_precision(tmp_path):
    from kmtl.config import config_from_dict
    from kmtl.training import train

    lines = ["sentence\tlabel"] + [f"{t}\t{['neg', 'pos'][i % 2]}" for i, t in enumerate(TEXTS * 2)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    data = {"name": "bf16", "backbone": "tiny", "max_length": MAX_LENGTH,
            "tasks": [{"name": "sent", "kind": "classification",
                       "train": {"format": "tsv", "path": "train.tsv", "text": "sentence", "label": "label"}}],
            "mixture": {"batch_size": 4},
            "training": {"epochs": 1, "steps_per_epoch": 2, "precision": "mixed_bfloat16"},
            "output_dir": str(tmp_path / "runs"), "export": {"dir": str(tmp_path / "saved"), "precision": "training"}}
    said = []
    result = train(config_from_dict(data, tmp_path), verbose=0, echo=said.append)
    assert result.model.compute_dtype == "bfloat16" and result.model.get_layer("sent").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    assert np.isfinite(result.history["loss"]).all()
    assert any("precision: mixed_bfloat16" in line for line in said)
    assert json.loads((result.run_dir / "run.json").read_text())["precision"] == "mixed_bfloat16"
    import tensorflow_text  # noqa: F401  (the serving graph's tokenizer ops)

    served = tf.saved_model.load(str(result.export_path)).signatures["ids"]  # export.precision: training
    x = _x(result.model)
    answers = served(token_ids=x["token_ids"], segment_ids=x["segment_ids"], padding_mask=x["padding_mask"])
    # the bf16 graph (bfloat16 weights: kmtl.model.precision.serving_copy); a bfloat16 graph rounds where
    # Grappler fuses ops, eager calls do not (3e-3 apart on this model): equal within bfloat16's rounding
    np.testing.assert_allclose(answers["sent"].numpy(), result.model(x)["sent"].numpy(), atol=2e-2)
    assert not np.allclose(answers["sent"].numpy(), float32_copy(result.model)(x)["sent"].numpy(), atol=1e-6)


@pytest.mark.slow
def test_auto_precision_trains_in_bfloat16_on_a_bfloat16_cpu_and_exports_float32(tmp_path, monkeypatch):
    import tensorflow_text  # noqa: F401  (the serving graph's tokenizer ops)

    from kmtl.config import config_from_dict
    from kmtl.training import train

    monkeypatch.delenv("KMTL_PRECISION", raising=False)
    monkeypatch.setattr(precision_lib, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"])
    lines = ["sentence\tlabel"] + [f"{t}\t{['neg', 'pos'][i % 2]}" for i, t in enumerate(TEXTS * 2)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    data = {"name": "auto", "backbone": "tiny", "max_length": MAX_LENGTH,
            "tasks": [{"name": "sent", "kind": "classification",
                       "train": {"format": "tsv", "path": "train.tsv", "text": "sentence", "label": "label"}}],
            "mixture": {"batch_size": 4}, "training": {"epochs": 1, "steps_per_epoch": 2},
            "output_dir": str(tmp_path / "runs"), "export": {"dir": str(tmp_path / "saved")}}
    said = []
    result = train(config_from_dict(data, tmp_path), verbose=0, echo=said.append)
    assert result.model.compute_dtype == "bfloat16"
    assert any("precision: mixed_bfloat16 (auto: the CPU has AMX-BF16)" in line for line in said), said
    served = tf.saved_model.load(str(result.export_path)).signatures["ids"]
    x = _x(result.model)
    answers = served(token_ids=x["token_ids"], segment_ids=x["segment_ids"], padding_mask=x["padding_mask"])
    twin = float32_copy(result.model)(x)["sent"].numpy()
    np.testing.assert_allclose(answers["sent"].numpy(), twin, atol=1e-5)  # the float32 graph
    assert np.abs(answers["sent"].numpy() - result.model(x)["sent"].numpy()).max() > 0  # not the bfloat16 one


def test_kmtl_export_refuses_a_bfloat16_onnx_before_reading_the_run(tmp_path, capsys):
    from kmtl.cli import main

    code = main(["export", str(tmp_path / "no-run"), "--format", "onnx", "--precision", "mixed_bfloat16"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "--precision mixed_bfloat16 is for SavedModels" in err and "no-run" not in err


# ------------------------------------------------------------------ TPUs
def test_tpu_strategy_is_refused_in_the_config_and_by_choose_strategy(tmp_path):
    from kmtl.config import config_from_dict
    from kmtl.errors import ConfigError
    from kmtl.training import choose_strategy

    data = {"tasks": [{"name": "sent", "kind": "classification",
                       "train": {"format": "tsv", "path": "train.tsv", "text": "sentence"}}],
            "training": {"strategy": "tpu"}}
    with pytest.raises(ConfigError) as config_error:
        config_from_dict(data, tmp_path)
    assert any(path == "training.strategy" and "TensorFlow 2.19" in message
               for path, message in config_error.value.problems), config_error.value.problems
    with pytest.raises(ConfigError) as strategy_error:
        choose_strategy("tpu")
    assert strategy_error.value.problems == [p for p in config_error.value.problems if p[0] == "training.strategy"]
