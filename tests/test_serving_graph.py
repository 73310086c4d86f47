"""The exported serving graph: signatures, entities with offsets, robustness, warm-up, tools."""

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401

import kmtl
from kmtl.data import Example
from kmtl.data.words import char_offsets, clean_text, split_words
from kmtl.evaluation import predict_task
from kmtl.tasks import entities_from_tags
from kmtl.tasks.entity_spans import entity_spans

LABELS = kmtl.tasks.bio_labels(["PER", "LOC"])
TEXTS = ["John Smith went to Zürich, then (briefly) Paris.", "a fine film", "", "  spaced   out  "]


# ---------------------------------------------------------------- graph pieces, no model
def test_split_words_and_character_offsets():
    text = clean_text(tf.constant(["Zürich, (U.S.-based) firm.", b"caf\xe9 ok", ""]))
    words, starts, ends = split_words(text)
    assert [w.decode() for w in words[0].numpy()] == ["Zürich", ",", "(", "U.S.-based", ")", "firm", "."]
    assert [w.decode() for w in words[1].numpy()] == ["caf", "\ufffd", "ok"]  # invalid byte replaced
    assert words[2].shape[0] == 0
    s = char_offsets(text, starts.to_tensor(0)).numpy()[0]
    e = char_offsets(text, ends.to_tensor(0)).numpy()[0]
    original = "Zürich, (U.S.-based) firm."
    assert [original[a:b] for a, b in zip(s, e)] == ["Zürich", ",", "(", "U.S.-based", ")", "firm", "."]


def test_entity_spans_in_the_graph_match_the_python_decoder():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = rng.integers(0, 9, size=6)
        width = int(n.max()) if n.max() else 1
        tag_ids = rng.integers(0, len(LABELS), size=(6, width))
        types, first, last = entity_spans(tf.constant(tag_ids, tf.int32), tf.constant(n, tf.int32), LABELS)
        for row in range(6):
            tags = [LABELS[i] for i in tag_ids[row, : n[row]]]
            want = entities_from_tags(tags, [str(i) for i in range(n[row])])
            got = list(zip([t.decode() for t in types[row].numpy()], first[row].numpy(), last[row].numpy() + 1))
            assert got == [(w["type"], w["start"], w["end"]) for w in want], tags


# ---------------------------------------------------------------- an exported tiny model
@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny):
    tasks = [
        kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
        kmtl.tasks.PairRegression("similarity"),
        kmtl.tasks.Tagging("entities", LABELS),
        kmtl.tasks.MultiLabelClassification("topics", ["art", "film", "travel"], threshold=0.45),
    ]
    model = kmtl.build_model(tiny, tasks)
    pre = tiny.preprocessor(24)
    base = tmp_path_factory.mktemp("exports")
    path = kmtl.export.export_saved_model(model, pre, base, "demo")
    return {"model": model, "pre": pre, "path": path, "loaded": tf.saved_model.load(str(path)), "base": base}


def _call(loaded, name, **inputs):
    out = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def test_signatures_and_stable_output_names(exported):
    sigs = exported["loaded"].signatures
    assert set(sigs) == {"serving_default", "sentiment", "similarity", "entities", "topics", "ids"}
    default = set(sigs["serving_default"].structured_outputs)
    assert default == {
        "sentiment_label", "sentiment_probabilities", "topics_labels", "topics_probabilities",
        "entities_words", "entities_tags", "entities_word_count", "entities_entity_type", "entities_entity_text",
        "entities_entity_start", "entities_entity_end", "entities_entity_count",
    }
    assert set(sigs["similarity"].structured_input_signature[1]) == {"text", "text_pair"}
    assert set(sigs["similarity"].structured_outputs) == {"similarity_score"}
    assert set(sigs["ids"].structured_outputs) == {"sentiment", "similarity", "entities", "topics"}


def test_outputs_match_the_keras_model(exported):
    model, pre, loaded = exported["model"], exported["pre"], exported["loaded"]
    tasks = {t.name: t for t in model.tasks}
    texts = [t for t in TEXTS if t.strip()]  # kmtl's Python side refuses empty texts; serving takes them
    out = _call(loaded, "serving_default", text=texts)
    sent = predict_task(model, tasks["sentiment"], [Example(text=t) for t in texts], pre)
    np.testing.assert_allclose(out["sentiment_probabilities"], [list(p["probabilities"].values()) for p in sent],
                               atol=1e-5)
    topics = predict_task(model, tasks["topics"], [Example(text=t) for t in texts], pre)
    for row, p in enumerate(topics):
        assert [x.decode() for x in out["topics_labels"][row] if x] == p["labels"]
    # tagging: the served tags are the model's tags for the words the graph split off
    for row, text in enumerate(texts):
        count = out["entities_word_count"][row]
        words = tuple(w.decode() for w in out["entities_words"][row][:count])
        if not words:
            continue
        decoded = predict_task(model, tasks["entities"], [Example(tokens=words)], pre)[0]
        assert [t.decode() for t in out["entities_tags"][row][:count]] == decoded["tags"]
        n = out["entities_entity_count"][row]
        assert [t.decode() for t in out["entities_entity_type"][row][:n]] == [e["type"] for e in decoded["entities"]]
        for k in range(n):  # offsets slice the original text to the entity's text
            start, end = out["entities_entity_start"][row][k], out["entities_entity_end"][row][k]
            assert text[start:end] == out["entities_entity_text"][row][k].decode()
        assert (out["entities_entity_start"][row][n:] == -1).all()
    pair = _call(loaded, "similarity", text=["a fine film"], text_pair=["a good movie"])
    want = predict_task(model, tasks["similarity"], [Example(text="a fine film", text_pair="a good movie")], pre)
    assert pair["similarity_score"][0] == pytest.approx(want[0]["score"], abs=1e-5)


def test_per_task_signatures_agree_with_serving_default(exported):
    loaded = exported["loaded"]
    default = _call(loaded, "serving_default", text=TEXTS)
    for task in ("sentiment", "entities", "topics"):
        alone = _call(loaded, task, text=TEXTS)
        for key, value in alone.items():
            assert key.startswith(task + "_")
            np.testing.assert_array_equal(value, default[key]) if value.dtype == object else \
                np.testing.assert_allclose(value, default[key], atol=1e-6)


def test_ids_signature_gives_the_raw_model_outputs(exported):
    pre, model = exported["pre"], exported["model"]
    x = pre.encode_text(tf.constant(["a fine film", "john"]))
    out = _call(exported["loaded"], "ids", **{k: v.numpy() for k, v in x.items()})
    ref = model(x, training=False)
    for name in ("sentiment", "entities", "topics", "similarity"):
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5)


def test_hostile_inputs_do_not_break_the_graph(exported):
    loaded = exported["loaded"]
    empty = _call(loaded, "serving_default", text=np.array([], dtype=object))
    assert empty["sentiment_label"].shape == (0,) and empty["entities_tags"].shape[0] == 0
    weird = [b"", b"caf\xe9 \xff\xfe broken", ("word " * 20000).encode(), "日本語のテキスト".encode()]
    out = _call(loaded, "serving_default", text=weird)
    assert out["sentiment_probabilities"].shape == (4, 2)
    assert np.isfinite(out["sentiment_probabilities"]).all()
    assert out["entities_word_count"][2] == 20000  # every word listed, tags "O" past max_length
    assert set(out["entities_tags"][2][30:]) == {b"O"}
    big = _call(loaded, "serving_default", text=["a fine film"] * 1000)
    assert big["sentiment_label"].shape == (1000,)
    assert len(set(big["sentiment_probabilities"][:, 0].round(6))) == 1
    pair = _call(loaded, "similarity", text=[""], text_pair=[b"\xff"])
    assert np.isfinite(pair["similarity_score"]).all()


def test_concurrent_calls_match_sequential_calls(exported):
    loaded = exported["loaded"]
    batches = [[f"text {i} about Paris and John", "another line"] for i in range(16)]
    sequential = [_call(loaded, "serving_default", text=b)["sentiment_probabilities"] for b in batches]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda b: _call(loaded, "serving_default", text=b)["sentiment_probabilities"], batches))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a, b)


def test_warmup_requests_cover_every_signature_and_replay(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported["path"] / "assets.extra" / "tf_serving_warmup_requests"
    seen = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "demo"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        _call(exported["loaded"], request.model_spec.signature_name, **inputs)  # replays without error
        seen.append(request.model_spec.signature_name)
    assert sorted(seen) == sorted(exported["loaded"].signatures)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    cli = shutil.which("saved_model_cli") or str(__import__("pathlib").Path(sys.executable).with_name("saved_model_cli"))
    show = subprocess.run([cli, "show", "--dir", str(exported["path"]), "--all"], capture_output=True, text=True,
                          timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "signature_def['serving_default']" in show.stdout and "entities_entity_start" in show.stdout
    # `run` needs TF Text's ops registered: the same CLI code, with tensorflow_text imported first
    script = ("import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli as c; "
              "sys.argv = ['saved_model_cli'] + sys.argv[1:]; c.main()")
    run = subprocess.run([sys.executable, "-c", script, "run", "--dir", str(exported["path"]), "--tag_set", "serve",
                          "--signature_def", "sentiment", "--input_exprs", "text=['a fine film']"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "sentiment_label" in run.stdout and "sentiment_probabilities" in run.stdout


def test_models_config(tmp_path):
    from kmtl.export import write_models_config

    path = write_models_config(tmp_path / "models.config", {"demo": "/models/demo", "news": "/models/news"})
    text = path.read_text()
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path) for c in parsed.model_config_list.config] == [
        ("demo", "/models/demo"), ("news", "/models/news")]


def test_task_names_that_clash_with_signatures_are_rejected(tiny, tmp_path):
    model = kmtl.build_model(tiny, [kmtl.tasks.Regression("ids")])
    with pytest.raises(kmtl.ExportError, match="clash"):
        kmtl.export.export_saved_model(model, tiny.preprocessor(16), tmp_path, "x")
    assert not any((tmp_path / "x").glob("*")) if (tmp_path / "x").exists() else True


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (it cannot be installed from the package "
                           "registries here; see README 'Serving')")
def test_real_tensorflow_model_server(exported, tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["tensorflow_model_server", f"--rest_api_port={port}", "--port=0",
                               "--model_name=demo", f"--model_base_path={exported['base'] / 'demo'}"])
    try:
        body = json.dumps({"signature_name": "sentiment", "inputs": {"text": ["a fine film"]}}).encode()
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/demo:predict", body, timeout=5) as r:
                    answer = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("tensorflow_model_server did not answer within 60 s")
        assert answer["outputs"]["sentiment_label"][0] in ("negative", "positive")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_word_path_encodes_like_the_text_path(tiny):
    """serving_default runs the encoder once on word-split text for all heads: same ids."""
    pre = tiny.preprocessor(16)
    texts = ["John Smith went to Zürich, then (briefly) Paris.", "a fine film!!", "U.S.-based firm's \"news\"",
             "x" * 40, "  spaced   out  ", "naïve café"]
    text = clean_text(tf.constant(texts))
    words, _, _ = split_words(text)
    by_words = pre.encode_words(words)
    by_text = pre.encode_text(text)
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(by_words[key], by_text[key])
