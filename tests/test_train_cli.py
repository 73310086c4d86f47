"""`kmtl train` / `export` / `predict` end to end with the tiny backbone, and bad input at the CLI."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kmtl.cli import main
from kmtl.demo import DEMO_CONFIG

CORPUS = DEMO_CONFIG.parent / "corpus"


def demo_config(tmp_path, epochs=2, extra="", limit=48, backbone="tiny", training=""):
    text = f"""
    name: small
    backbone: {backbone}
    max_length: 48
    tasks:
      - name: sentiment
        kind: classification
        limit: {limit}
        train: {{format: tsv, path: {CORPUS}/sentiment/train.tsv, text: sentence, label: label}}
        dev: {{format: tsv, path: {CORPUS}/sentiment/dev.tsv, text: sentence, label: label}}
      - name: paraphrase
        kind: pair_classification
        batch_share: 0.4           # the rest split by temperature sampling
        limit: {limit}
        train: {{format: tsv, path: {CORPUS}/paraphrase/train.tsv, text: sentence1, text_pair: sentence2, label: label}}
        dev: {{format: tsv, path: {CORPUS}/paraphrase/dev.tsv, text: sentence1, text_pair: sentence2, label: label}}
      - name: entities
        kind: tagging
        limit: {limit}
        train: {{format: conll, path: {CORPUS}/entities/train.conll}}
        dev: {{format: conll, path: {CORPUS}/entities/dev.conll}}
    mixture: {{batch_size: 16, sampling: temperature}}
    training: {{epochs: {epochs}, learning_rate: 1.0e-3{training}}}
    output_dir: {tmp_path}/runs
    export: {{dir: {tmp_path}/saved_models}}
    """
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.dedent(extra), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    assert main(["train", str(demo_config(tmp, training=", log_affinity_every: 4")), "--verbose", "0"]) == 0
    return tmp


def test_train_writes_run_metrics_logs_and_export(trained):
    run = trained / "runs" / "small"
    info = json.loads((run / "run.json").read_text())
    assert [t["name"] for t in info["tasks"]] == ["sentiment", "paraphrase", "entities"]
    assert info["tasks"][0]["labels"] == ["negative", "positive"]  # inferred from the train split
    assert info["tasks"][2]["labels"][0] == "O"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"sentiment", "paraphrase", "entities"}
    assert {"accuracy", "macro_f1"} <= set(metrics["sentiment"])
    assert {"entity_f1", "entity_precision", "entity_recall"} <= set(metrics["entities"])
    assert metrics["sentiment"]["examples"] == 48
    assert 0.0 <= metrics["sentiment"]["accuracy"] <= 1.0
    export = trained / "saved_models" / "small"
    assert sorted(p.name for p in export.iterdir()) == ["1"]  # no temporary folder left behind
    assert (export / "1" / "saved_model.pb").is_file()
    assert json.loads((export / "1" / "assets.extra" / "kmtl.json").read_text())["max_length"] == 48
    assert not (run / "backup").exists()  # BackupAndRestore cleans up after a finished run


def test_tensorboard_has_per_task_scalars_weights_and_learning_rate(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for folder in ("train", "validation"):
        acc = EventAccumulator(str(trained / "runs" / "small" / "logs" / folder))
        acc.Reload()
        tags |= {f"{folder}/{t}" for t in acc.Tags()["tensors"] + acc.Tags()["scalars"]}
    for task in ("sentiment", "paraphrase", "entities"):  # one TensorBoard section per task
        assert f"train/{task}/loss" in tags
        assert f"validation/{task}/loss" in tags
        assert f"train/loss_weights/{task}" in tags
    assert "train/run/learning_rate" in tags
    assert "validation/sentiment/accuracy" in tags
    # training.log_affinity_every: the negative-transfer figures of every pair
    assert {"train/run/grad_cosine/sentiment__paraphrase", "train/run/affinity/entities_to_sentiment"} <= tags, \
        sorted(t for t in tags if "run/" in t)


RELOAD = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (TF Text ops used by the tokenizer)
m = tf.saved_model.load(sys.argv[1])
def ops(fn):
    graph = fn.graph.as_graph_def()
    return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
out = m.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
pair = m.signatures["paraphrase"](text=tf.constant(["a b"]), text_pair=tf.constant(["a c"]))
print(json.dumps({"sentiment": out["sentiment_probabilities"].numpy().tolist(),
                  "labels": [x.decode() for x in out["sentiment_label"].numpy()],
                  "tags": [[t.decode() for t in row] for row in out["entities_tags"].numpy()],
                  "paraphrase": pair["paraphrase_probabilities"].numpy().tolist(),
                  "modules": sorted(k for k in sys.modules if k.split(".")[0] in ("kmtl", "keras_hub")),
                  "ops": sorted(ops(m.signatures["serving_default"]) | ops(m.signatures["paraphrase"]))}))
"""


def test_saved_model_reloads_in_a_fresh_process_with_the_same_predictions(trained):
    from kmtl.data import Example
    from kmtl.evaluation import predict_task
    from kmtl.training import load_run

    texts = ["The staff were wonderful and kind .", "Maria flew from Paris to Berlin on Monday ."]
    out = subprocess.run([sys.executable, "-c", RELOAD, str(trained / "saved_models" / "small" / "1"),
                          json.dumps(texts)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert served["modules"] == []  # loaded with plain TensorFlow + TF Text, as TF Serving has them
    assert "FastWordpieceTokenizeWithOffsets" in served["ops"]  # the tokenizer is in the graph
    assert not {"PyFunc", "EagerPyFunc", "PyFuncStateless"} & set(served["ops"])  # no Python in it
    assert "RoundRobinTrim" not in served["ops"]  # missing from stock TF Serving builds

    model, pre, _ = load_run(trained / "runs" / "small")
    tasks = {t.name: t for t in model.tasks}
    sent = predict_task(model, tasks["sentiment"], [Example(text=t) for t in texts], pre)
    expected = [[p["probabilities"][l] for l in tasks["sentiment"].labels] for p in sent]
    np.testing.assert_allclose(served["sentiment"], expected, atol=1e-5)
    assert served["labels"] == [p["label"] for p in sent]
    words = [Example(tokens=tuple(t.split())) for t in texts]
    tags = [p["tags"] for p in predict_task(model, tasks["entities"], words, pre)]
    assert [row[: len(t)] for row, t in zip(served["tags"], tags)] == tags
    pair = predict_task(model, tasks["paraphrase"], [Example(text="a b", text_pair="a c")], pre)[0]
    np.testing.assert_allclose(served["paraphrase"][0], [pair["probabilities"][l] for l in tasks["paraphrase"].labels],
                               atol=1e-5)


def test_export_and_predict_commands(trained, capsys):
    run = trained / "runs" / "small"
    base = trained / "exports"
    assert main(["export", str(run), "--dir", str(base)]) == 0
    assert main(["export", str(run), "--dir", str(base)]) == 0
    assert sorted(p.name for p in (base / "small").iterdir()) == ["1", "2"]
    capsys.readouterr()
    assert main(["export", str(run), "--dir", str(base), "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["predict", str(base / "small"), "a lovely film", "John went to Paris."]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a lovely film", "John went to Paris."]
    assert rows[0]["sentiment_label"] in ("negative", "positive")
    assert rows[1]["entities_words"] == ["John", "went", "to", "Paris", "."]
    assert len(rows[1]["entities_tags"]) == 5
    assert main(["predict", "--signature", "paraphrase", str(base / "small"), "a b\ta c"]) == 0
    pair = json.loads(capsys.readouterr().out)
    assert pair["paraphrase_label"] in ("different", "paraphrase")
    assert main(["predict", "--signature", "paraphrase", str(base / "small"), "no tab"]) == 2
    assert "first<TAB>second" in capsys.readouterr().err


def test_cli_exports_a_finished_run_as_onnx(trained, tmp_path, capsys):
    import onnxruntime as ort
    import tensorflow as tf

    from kmtl.training import load_run

    run = trained / "runs" / "small"
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx", "--dir", str(tmp_path / "onnx")]) == 0
    path = tmp_path / "onnx" / "small" / "1"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(path)
    assert json.loads((path / "kmtl.json").read_text())["max_length"] == 48

    model, pre, _ = load_run(run)
    texts = [line.split("\t")[0] for line in (CORPUS / "sentiment" / "dev.tsv").read_text().splitlines()[1:5]]
    enc = pre.encode_text(tf.constant(texts))
    length = int(enc["padding_mask"].numpy().sum(axis=1).max())
    feed = {k: enc[k].numpy()[:, :length] for k in ("token_ids", "segment_ids", "padding_mask")}
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["sentiment"], feed)[0]
    np.testing.assert_allclose(got, model(feed, training=False)["sentiment"].numpy(), atol=1e-4, rtol=0)

    # an existing version is a user error: one message, exit status 2
    assert main(["export", str(run), "--format", "onnx", "--dir", str(tmp_path / "onnx"), "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_predict_reads_json_lines_from_stdin(trained, capsys, monkeypatch):
    import io

    export = trained / "saved_models" / "small"
    lines = '{"text": "John went to Paris."}\nplain text line\n\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["predict", str(export)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["John went to Paris.", "plain text line", ""]  # one row a line
    assert rows[0]["entities_words"] == ["John", "went", "to", "Paris", "."]
    assert len(rows[0]["entities_entity_type"]) == rows[0]["entities_entity_count"]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "a", "text_pair": "b"}\n'))
    assert main(["predict", "--signature", "paraphrase", str(export)]) == 0
    assert "paraphrase_probabilities" in json.loads(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": oops}\n'))
    assert main(["predict", str(export)]) == 2
    assert "<stdin>:1: not valid JSON" in capsys.readouterr().err


def test_evaluate_command_reproduces_metrics(trained, capsys):
    run = trained / "runs" / "small"
    out_json = trained / "again.json"
    assert main(["evaluate", str(run), "--json", str(out_json)]) == 0
    again = json.loads(out_json.read_text())
    first = json.loads((run / "metrics.json").read_text())
    assert again["sentiment"]["accuracy"] == pytest.approx(first["sentiment"]["accuracy"])
    assert again["entities"]["entity_f1"] == pytest.approx(first["entities"]["entity_f1"])
    assert "paraphrase" in capsys.readouterr().out


# CI time: tests/test_task_early_stopping.py crashes at an epoch's end and resumes exactly (and
# test_resume.py mid-epoch and with kill -9); this one does it through the demo-like config
@pytest.mark.slow
def test_rerun_after_a_crash_resumes_from_the_last_epoch(tmp_path, monkeypatch):
    import keras

    from kmtl.config import load_config
    from kmtl.training import trainer

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated crash")

    config = load_config(demo_config(tmp_path, epochs=3, limit=24))
    real = trainer.weighting_callback
    monkeypatch.setattr(trainer, "weighting_callback", lambda c: _Both(real(c), Crash()))
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(config, verbose=0, export=False)
    assert (tmp_path / "runs" / "small" / "backup").is_dir()
    assert not (tmp_path / "runs" / "small" / "model.weights.h5").exists()  # nothing half-done to load
    monkeypatch.setattr(trainer, "weighting_callback", real)
    result = trainer.train(config, verbose=0, export=False)
    assert len(result.history["loss"]) == 2  # epochs 2 and 3 only: epoch 1 was restored


class _Both:
    """Stands in for the weighting callback: forwards hooks to the real one, then a second one."""

    def __new__(cls, first, second):
        import keras

        class Pair(keras.callbacks.Callback):
            def set_model(self, model):
                first.set_model(model)
                second.set_model(model)

            def on_train_begin(self, logs=None):
                first.on_train_begin(logs)

            def on_epoch_begin(self, epoch, logs=None):
                first.on_epoch_begin(epoch, logs)

            def on_epoch_end(self, epoch, logs=None):
                first.on_epoch_end(epoch, logs)
                second.on_epoch_end(epoch, logs)

        return Pair()


@pytest.mark.slow  # CI time: the notebook test trains on slices of the same three real datasets
def test_real_data_sst2_conll_stsb_slices(shared_data, tmp_path):
    text = f"""
    name: real
    backbone: tiny
    max_length: 64
    tasks:
      - name: sst2
        kind: classification
        limit: 64
        train: {{format: tsv, path: {shared_data}/sst2/train.tsv, text: sentence, label: label}}
        dev: {{format: tsv, path: {shared_data}/sst2/test.tsv, text: sentence, label: label}}
      - name: conll
        kind: tagging
        limit: 64
        train: {{format: conll, path: {shared_data}/conll2003/train.txt}}
        dev: {{format: conll, path: {shared_data}/conll2003/test.txt}}
      - name: stsb
        kind: pair_regression
        limit: 64
        train: {{format: tsv, path: {shared_data}/stsb/train.tsv, text: sentence1, text_pair: sentence2, label: score}}
        dev: {{format: tsv, path: {shared_data}/stsb/dev.tsv, text: sentence1, text_pair: sentence2, label: score}}
    training: {{epochs: 1}}
    output_dir: {tmp_path}/runs
    export: {{dir: {tmp_path}/saved_models}}
    """
    cfg = tmp_path / "real.yaml"
    cfg.write_text(textwrap.dedent(text), encoding="utf-8")
    assert main(["train", str(cfg), "--verbose", "0"]) == 0
    metrics = json.loads((tmp_path / "runs" / "real" / "metrics.json").read_text())
    assert metrics["sst2"]["examples"] == 64 and "accuracy" in metrics["sst2"]
    assert "entity_f1" in metrics["conll"] and "pearson" in metrics["stsb"]
    assert (tmp_path / "saved_models" / "real" / "1" / "saved_model.pb").is_file()
