"""`kmtl export --xla`: small batches XLA-compiled, padded to buckets, answers equal to the plain graph's."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401

import kmtl
from kmtl.cli import main
from kmtl.data.buckets import check_boundaries
from kmtl.export.saved_model import LENGTH_BUCKETS

LABELS = kmtl.tasks.bio_labels(["PER", "LOC"])
TEXTS = ["John Smith went to Zürich, then (briefly) Paris.", "a fine film", "", "one two three four five six seven"]


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny):
    """The same model exported twice: plain, and with XLA up to batch 2 (max length 40: buckets 16, 32, 40)."""
    tasks = [
        kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
        kmtl.tasks.PairRegression("similarity"),
        kmtl.tasks.Tagging("entities", LABELS),
        kmtl.tasks.SpanQA("qa", max_query_length=8),
    ]
    model = kmtl.build_model(tiny, tasks)
    pre = tiny.preprocessor(40)
    base = tmp_path_factory.mktemp("exports")
    plain = kmtl.export.export_saved_model(model, pre, base, "plain")
    xla = kmtl.export.export_saved_model(model, pre, base, "xla", xla_max_batch=2)
    return {"plain": tf.saved_model.load(str(plain)), "xla": tf.saved_model.load(str(xla)), "path": xla,
            "plain_path": plain, "pre": pre}


def _call(loaded, name, **inputs):
    out = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _assert_same(a, b):
    assert set(a) == set(b)
    for key in a:
        if a[key].dtype == object:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_bucket_sizes():
    assert list(check_boundaries(LENGTH_BUCKETS, 64)) == [16, 32, 64]
    assert list(check_boundaries(LENGTH_BUCKETS, 40)) == [16, 32, 40]
    assert list(check_boundaries(LENGTH_BUCKETS, 8)) == [8]
    assert list(check_boundaries([1, 2, 4, 8], 3)) == [1, 2, 3]


@pytest.mark.parametrize("rows", [1, 2, 3, 4])  # 1 and 2 through XLA (2 pads nothing, 1 and 3 differ in rows)
def test_every_signature_answers_as_the_plain_graph(both, rows):
    texts = TEXTS[:rows]
    for name in ("serving_default", "sentiment", "entities"):
        _assert_same(_call(both["plain"], name, text=texts), _call(both["xla"], name, text=texts))
    pair = {"text": texts, "text_pair": ["a good movie"] * rows}
    _assert_same(_call(both["plain"], "similarity", **pair), _call(both["xla"], "similarity", **pair))
    qa = {"question": ["Who went?"] * rows, "context": [("John Smith went to Paris. " * 6)] * rows}
    _assert_same(_call(both["plain"], "qa", **qa), _call(both["xla"], "qa", **qa))  # windows: rows x 3 > 2


def test_lengths_across_every_bucket_and_past_max_length(both):
    # 1 to 60 words: lengths 3..40 pieces, each bucket (16, 32, 40) and truncation at max_length
    for words in (1, 10, 14, 15, 20, 31, 60):
        text = [" ".join(["word"] * words)]
        _assert_same(_call(both["plain"], "serving_default", text=text), _call(both["xla"], "serving_default", text=text))
    assert _call(both["xla"], "serving_default", text=np.array([], dtype=object))["sentiment_label"].shape == (0,)


def test_metadata_and_warmup_requests_compile_each_length_bucket(both):
    from tensorflow_serving.apis import prediction_log_pb2

    info = json.loads((both["path"] / "assets.extra" / "kmtl.json").read_text())
    assert info["xla"] == {"max_batch": 2, "rows": [1, 2], "lengths": [16, 32, 40],
                           "tf_serving_flag": "--xla_cpu_compilation_enabled=true"}
    requests = []
    for record in tf.data.TFRecordDataset(str(both["path"] / "assets.extra" / "tf_serving_warmup_requests")):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        _call(both["xla"], request.model_spec.signature_name, **inputs)  # replays without error
        requests.append((request.model_spec.signature_name, inputs))
    signatures = set(both["xla"].signatures)
    assert sorted({name for name, _ in requests}) == sorted(signatures)
    # the text-only signatures get one batch-1 request per length bucket, landing in that bucket
    extra = [(name, x["text"][0]) for name, x in requests if len(x.get("text", [])) == 1 and set(x) == {"text"}]
    from kmtl.data.pipeline import longest_sequence

    for name in ("serving_default", "sentiment", "entities"):
        mine = [text for n, text in extra if n == name]
        assert [int(longest_sequence(both["pre"].encode_text(tf.constant([t])))) for t in mine] == [16, 32, 40]
    # the plain export has none of it
    assert json.loads((both["plain_path"] / "assets.extra" / "kmtl.json").read_text())["xla"] is None


def test_graph_mode_loader_runs_the_xla_signature(both):
    """saved_model_cli's `run` loads the SavedModel in a TF1 session, as TF Serving does."""
    script = ("import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli as c; "
              "sys.argv = ['saved_model_cli'] + sys.argv[1:]; c.main()")
    run = subprocess.run([sys.executable, "-c", script, "run", "--dir", str(both["path"]), "--tag_set", "serve",
                          "--signature_def", "sentiment", "--input_exprs", "text=['a fine film']"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "sentiment_probabilities" in run.stdout


def test_export_refuses_a_negative_xla_batch(tiny, tmp_path):
    model = kmtl.build_model(tiny, [kmtl.tasks.Classification("sentiment", ["negative", "positive"])])
    with pytest.raises(kmtl.errors.ExportError, match="xla_max_batch is -1"):
        kmtl.export.export_saved_model(model, tiny.preprocessor(16), tmp_path, "m", xla_max_batch=-1)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize("args, message", [(["--xla", "-1"], "--xla -1"),
                                           (["--xla", "--format", "onnx"], "--xla is for SavedModels")])
def test_cli_refuses_bad_xla_flags_before_loading(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    run.mkdir()
    code = main(["export", str(run), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "saved_models").exists()


def test_train_exports_with_the_configs_xla_batch(tmp_path):
    from kmtl.config import config_from_dict
    from kmtl.training import train

    lines = ["sentence\tlabel"] + [f"{t}\t{['neg', 'pos'][i % 2]}" for i, t in enumerate([t for t in TEXTS if t] * 2)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    data = {"name": "xla", "backbone": "tiny", "max_length": 16,
            "tasks": [{"name": "sent", "kind": "classification",
                       "train": {"format": "tsv", "path": "train.tsv", "text": "sentence", "label": "label"}}],
            "mixture": {"batch_size": 4}, "training": {"epochs": 1, "steps_per_epoch": 2},
            "output_dir": str(tmp_path / "runs"), "export": {"dir": str(tmp_path / "saved"), "xla_max_batch": 1}}
    result = train(config_from_dict(data, tmp_path), verbose=0, echo=lambda *_: None)
    info = json.loads((result.export_path / "assets.extra" / "kmtl.json").read_text())
    assert info["xla"]["max_batch"] == 1 and info["xla"]["lengths"] == [16]
    served = tf.saved_model.load(str(result.export_path)).signatures["sent"]
    assert served(text=tf.constant(["a fine film"]))["sent_label"].shape == (1,)


def test_config_refuses_a_negative_xla_batch_naming_its_key(tmp_path):
    from kmtl.config import config_from_dict
    from kmtl.errors import ConfigError

    data = {"tasks": [{"name": "sent", "kind": "classification", "labels": ["a", "b"],
                       "train": {"format": "tsv", "path": "x.tsv", "text": "t", "label": "l"}}],
            "export": {"xla_max_batch": -2}}
    with pytest.raises(ConfigError, match=r"export\.xla_max_batch"):
        config_from_dict(data, tmp_path)


@pytest.mark.parametrize("mode", ["adapters"])  # routed: the batch is tiled once per task inside the XLA function
def test_sharing_modes_compile_and_agree(tmp_path, mode):
    """All nine sharing modes agreed within 3e-8 in a one-off run (2026-12-02); CI keeps the routed one."""
    from kmtl.backbone import tiny_encoder

    tasks = [kmtl.tasks.Classification("a", ["x", "y"]), kmtl.tasks.Tagging("b", LABELS)]
    model = kmtl.build_model(tiny_encoder(seed=0), tasks, sharing=mode, max_length=24)
    plain = kmtl.export.export_saved_model(model, model.preprocessor, tmp_path, "plain")
    xla = kmtl.export.export_saved_model(model, model.preprocessor, tmp_path, "xla", xla_max_batch=2)
    for texts in (["John went home"], ["John went home", "a fine film"]):
        _assert_same(_call(tf.saved_model.load(str(plain)), "serving_default", text=texts),
                     _call(tf.saved_model.load(str(xla)), "serving_default", text=texts))
