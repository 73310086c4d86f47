"""ONNX export (ids → outputs) with the tiny backbone: parity with Keras, layout, CLI, bench."""

import json

import numpy as np
import pytest

from kmtl.cli import main
from kmtl.demo import DEMO_CONFIG

CORPUS = DEMO_CONFIG.parent / "corpus"
INPUTS = ("token_ids", "segment_ids", "padding_mask")


def dev_texts(n=8):
    lines = (CORPUS / "sentiment" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines[:n]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny):
    from kmtl.export import export_onnx
    from kmtl.model import build_model
    from kmtl.tasks import Classification, Regression, Tagging, bio_labels

    tasks = [Classification("sentiment", ["negative", "positive"]),
             Tagging("entities", bio_labels(["PER", "ORG", "LOC"])),
             Regression("rating")]
    model = build_model(tiny, tasks)
    base = tmp_path_factory.mktemp("onnx")
    path = export_onnx(model, base, "tiny", max_length=64)
    return model, base, path


def encode(pre, texts):
    """Packed inputs trimmed to the batch's longest sequence, as NumPy int32."""
    import tensorflow as tf

    enc = pre.encode_text(tf.constant(texts))
    length = int(enc["padding_mask"].numpy().sum(axis=1).max())
    return {k: enc[k].numpy()[:, :length] for k in INPUTS}


def test_onnx_matches_keras_at_two_sequence_lengths(exported, tiny):
    import onnxruntime as ort

    model, _, path = exported
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == sorted(INPUTS)
    assert sorted(o.name for o in session.get_outputs()) == ["entities", "rating", "sentiment"]
    texts = dev_texts(8)
    lengths = set()
    for max_length in (64, 12):  # the second truncates every text: a different, shorter length
        feed = encode(tiny.preprocessor(max_length), texts)
        lengths.add(feed["token_ids"].shape[1])
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, feed)))
        want = {k: v.numpy() for k, v in model(feed, training=False).items()}
        for name in names:
            assert got[name].shape == want[name].shape, name
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0, err_msg=name)
        assert got["entities"].shape[:2] == feed["token_ids"].shape
    assert len(lengths) == 2 and min(lengths) == 12


def test_version_folders_hold_model_and_metadata_and_nothing_else(exported):
    import onnx

    from kmtl.errors import ExportError
    from kmtl.export import export_onnx

    model, base, path = exported
    assert path == base / "tiny" / "1"
    info = json.loads((path / "kmtl.json").read_text())
    assert info["max_length"] == 64 and info["format"] == "onnx"
    assert [t["name"] for t in info["tasks"]] == ["sentiment", "entities", "rating"]
    assert info["tasks"][1]["labels"] == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    assert sorted(info["inputs"]) == sorted(INPUTS)
    assert sorted(info["outputs"]) == ["entities", "rating", "sentiment"]
    assert info["outputs"]["entities"]["shape"] == ["batch", "length", 7]
    graph = onnx.load(str(path / "model.onnx")).graph
    for value in graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "length"]

    second = export_onnx(model, base, "tiny")
    assert second == base / "tiny" / "2"
    assert sorted(p.name for p in (base / "tiny").iterdir()) == ["1", "2"]  # no temporary folder left
    for folder in (path, second):
        assert sorted(p.name for p in folder.iterdir()) == ["kmtl.json", "model.onnx", "tokenizer.json", "vocab.txt"]
    with pytest.raises(ExportError, match="already exists"):
        export_onnx(model, base, "tiny", version=1)
    assert sorted(p.name for p in (base / "tiny").iterdir()) == ["1", "2"]


def test_bench_serve_tiny_prints_one_json_object_last(capsys):
    assert main(["bench", "serve", "--backbone", "tiny", "--seconds", "1", "--repeats", "1", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert "SavedModel" in "\n".join(out[:-1]) and "ONNX Runtime" in "\n".join(out[:-1])  # the table
    assert result["tasks"] == ["sentiment", "entities"]
    assert result["machine"]["cpu_count"] > 0 and result["machine"]["platform"]
    assert result["date"] and result["settings"]["repeats"] == 1
    runtimes = ["saved_model", "onnxruntime"] + (["saved_model_ids"] if "saved_model_ids" in result else [])
    for runtime in runtimes:
        assert "intra_op" in result[runtime]["threads"]
        for measure, batch in (("latency", 1), ("throughput", 32)):
            m = result[runtime][measure]
            assert m["batch"] == batch
            assert m["p50_ms"] > 0 and m["p99_ms"] >= m["p50_ms"] and m["examples_per_s"] > 0
            assert m["length"] >= m["pieces"] > 2
            assert len(m["repeats"]) == 1 and m["repeats"][0]["calls"] >= 3
