"""The masked-LM auxiliary task (`kmtl.tasks.MaskedLM`) and its text source (`TextSource`).

Real text: small slices of ../shared/data/wikitext2/valid.txt (skipped where it is absent).
One tiny model is trained for 3 steps beside a classification task and shared by the tests
that need one.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.config.load import config_from_dict
from kmtl.data import Example
from kmtl.data.pipeline import eval_dataset, task_dataset
from kmtl.data.sources.text import TextSource
from kmtl.errors import ConfigError, DataError
from kmtl.registry import SOURCES
from kmtl.tasks import Classification, MaskedLM
from kmtl.tasks.masked_lm import MaskVocabulary, find_token_embedding

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2" / "valid.txt"
MAX_LENGTH = 48


def _wikitext(count):
    if not WIKITEXT.is_file():
        pytest.skip("../shared/data/wikitext2 not found (only CI and dev machines have it)")
    return TextSource(WIKITEXT).read()[:count]


def _write(tmp_path, text, name="corpus.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------ source
def test_text_source_reads_paragraphs_and_skips_headings_and_blank_lines(tmp_path):
    path = _write(tmp_path, " \n = Homarus = \n \n First paragraph , with words . \n = = Description = = \nok\n"
                            "Second paragraph.\n")
    examples = TextSource(path).read()
    assert [(e.text, e.where) for e in examples] == [("First paragraph , with words .", f"{path}:4"),
                                                     ("ok", f"{path}:6"), ("Second paragraph.", f"{path}:7")]
    assert all(e.label is None and e.text_pair is None for e in examples)
    assert [e.text for e in TextSource(path, min_chars=3).read()] == ["First paragraph , with words .",
                                                                      "Second paragraph."]
    assert [e.where for e in TextSource(path, skip_headings=False).read()] == [f"{path}:{n}" for n in (2, 4, 5, 6, 7)]


@pytest.mark.parametrize("text, fragments", [
    ("", ["empty"]),
    ("\n  \n\n", ["empty"]),
    (" = Title = \n\n = = Section = = \n", ["2 non-blank lines are headings", "skip_headings"]),
    ("ab\n", ["min_chars=5"]),
])
def test_a_file_without_paragraphs_is_a_data_error_naming_it(tmp_path, text, fragments):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        TextSource(path, min_chars=5 if text == "ab\n" else 1).read()
    assert info.value.where == path
    for fragment in fragments:
        assert fragment in info.value.message


def test_text_source_option_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        TextSource(tmp_path / "missing.txt").read()
    with pytest.raises(ValueError, match="min_chars"):
        TextSource("x.txt", min_chars=0)


def test_real_wikitext_paragraphs_keep_their_lines():
    examples = _wikitext(50)
    lines = WIKITEXT.read_text(encoding="utf-8").split("\n")
    assert len(examples) == 50
    for example in examples:
        number = int(example.where.rsplit(":", 1)[1])
        assert lines[number - 1].strip() == example.text and not example.text.startswith("= ")


def test_the_yaml_reads_text_sources_for_masked_lm_tasks_only(tmp_path):
    corpus = _write(tmp_path, "a paragraph of text .\nanother one .\n")
    task = {"name": "mlm", "kind": "masked_lm", "weight": 0.1, "mask_rate": 0.2,
            "train": {"format": "text", "path": corpus, "min_chars": 3}}
    config = config_from_dict({"name": "x", "backbone": "tiny", "tasks": [task]}, tmp_path)
    assert SOURCES.get("text").load() is TextSource
    assert config.tasks[0].kind_options() == {"mask_rate": 0.2}
    wrong = {"name": "sst2", "kind": "classification", "train": {"format": "text", "path": corpus}}
    with pytest.raises(ConfigError, match="tasks.0..train.format: a classification task reads"):
        config_from_dict({"name": "x", "backbone": "tiny", "tasks": [wrong]}, tmp_path)
    with pytest.raises(ConfigError, match="a masked_lm task has no labels"):
        config_from_dict({"name": "x", "backbone": "tiny", "tasks": [{**task, "labels": ["a"]}]}, tmp_path)


# ----------------------------------------------------------------------------- masking
@pytest.fixture(scope="module")
def pre():
    return tiny_encoder(seed=0).preprocessor(MAX_LENGTH)


def _passes(task, examples, pre, passes=2):
    """``[passes, N, L]`` masked ids, labels and weights of ``task``'s training stream, in order."""
    n = len(examples)
    ds = task_dataset(task, [task], examples, pre, shuffle=False).take(passes * n).batch(n)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1  # one text never in flight twice, on any machine
    ds = ds.with_options(options)
    out = [(x["token_ids"].numpy(), y[task.name].numpy(), w[task.name].numpy()) for x, y, w in ds]
    return [np.stack(part) for part in zip(*out)]


def test_dynamic_masking_follows_bert_and_never_masks_special_tokens(pre):
    examples = _wikitext(80)
    original = pre.encode_text(tf.constant([e.text for e in examples]))["token_ids"].numpy()
    ids, labels, weights = _passes(MaskedLM("mlm", seed=3), examples, pre)
    vocab = MaskVocabulary.of(pre)
    assert {pre.cls_id, pre.sep_id, pre.pad_id, pre.unk_id, vocab.mask_id} == set(vocab.special_ids)
    maskable = ~np.isin(original, [pre.cls_id, pre.sep_id, pre.pad_id, pre.unk_id])
    assert maskable.sum() > 3000  # a few thousand word pieces
    chosen = weights > 0
    assert not (chosen & ~maskable).any()  # never [CLS], [SEP], [PAD] (nor [UNK])
    assert (ids[:, ~maskable] == np.broadcast_to(original, ids.shape)[:, ~maskable]).all()
    assert (ids[~chosen] == np.broadcast_to(original, ids.shape)[~chosen]).all()  # only chosen pieces change
    assert (labels == np.where(chosen, original, 0)).all()
    share = chosen.sum(axis=(1, 2)) / maskable.sum()
    np.testing.assert_allclose(share, 0.15, atol=0.005)
    at = ids[chosen]
    gold = np.broadcast_to(original, ids.shape)[chosen]
    as_mask, kept = np.mean(at == vocab.mask_id), np.mean(at == gold)
    assert len(at) > 1000 and abs(as_mask - 0.8) < 0.04 and abs(kept - 0.1) < 0.03 and abs(1 - as_mask - kept - 0.1) < 0.03
    assert not np.isin(at[(at != vocab.mask_id) & (at != gold)], vocab.special_ids).any()
    differ = [(chosen[0, i] != chosen[1, i]).any() for i in range(len(examples)) if chosen[0, i].sum() > 2]
    assert np.mean(differ) > 0.9  # a new mask each pass


def test_masks_reproduce_from_the_seed(pre):
    examples = _wikitext(12)
    first = _passes(MaskedLM("mlm", seed=5), examples, pre)
    again = _passes(MaskedLM("mlm", seed=5), examples, pre)
    other = _passes(MaskedLM("mlm", seed=6), examples, pre)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert (first[2] != other[2]).any()


def test_evaluation_masks_are_fixed_whatever_the_batches(pre):
    examples = _wikitext(10)
    task = MaskedLM("mlm", seed=1)

    def masks(batch_size):
        parts = [(x["token_ids"].numpy(), aux["masked_weights"].numpy())
                 for x, aux in eval_dataset(task, [task], examples, pre, batch_size)]
        width = max(p[0].shape[1] for p in parts)
        return (np.concatenate([np.pad(p[0], [(0, 0), (0, width - p[0].shape[1])]) for p in parts]),
                np.concatenate([p[1] for p in parts]))

    (ids_a, w_a), (ids_b, w_b) = masks(3), masks(10)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(w_a, w_b)
    assert w_a.sum() > 0


# ----------------------------------------------------------------------- the task itself
def test_task_options_and_what_it_refuses():
    task = kmtl.tasks.from_config(MaskedLM("mlm", mask_rate=0.2, seed=4, serve=True).get_config())
    assert isinstance(task, MaskedLM) and (task.mask_rate, task.seed, task.serve) == (0.2, 4, True)
    assert task.label_spec(7) == ([7], "int32", [7]) and not task.has_labels and task.label_field is None
    with pytest.raises(ValueError, match="read no labels"):
        MaskedLM("mlm", labels=["a"])
    with pytest.raises(ValueError, match="mask_rate"):
        MaskedLM("mlm", mask_rate=1.5)
    with pytest.raises(ValueError, match="not distilled"):
        task.teacher_targets(np.zeros((1, 4, 9)))
    logits = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 9)), tf.float32)
    assert MaskedLM("mlm").serving_outputs(logits) == {}
    served = task.serving_outputs(logits)
    np.testing.assert_array_equal(served["mlm_top_ids"], np.argmax(logits, axis=-1))


# ---------------------------------------------------------------------- a trained model
@pytest.fixture(scope="module")
def trained():
    texts = _wikitext(40)
    mlm, sent = MaskedLM("mlm", seed=0), Classification("sent", ["neg", "pos"])
    examples = {"mlm": texts, "sent": [Example(text=t, label=l) for t, l in [("a good film", "pos"),
                                                                              ("a bad film", "neg")] * 8]}
    model = kmtl.build_model(tiny_encoder(seed=0), [sent, mlm], max_length=MAX_LENGTH)
    data = kmtl.data.mixture(model.tasks, examples, model.preprocessor, batch_size=8, seed=0)
    batch = next(iter(data))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=1, steps_per_epoch=3, verbose=0).history
    return model, examples, history, batch


def test_the_head_is_tied_to_the_backbone_token_embedding(trained):
    model = trained[0]
    head = model.get_layer("mlm")
    embedding = find_token_embedding(head.input[0])
    assert head.token_embedding is embedding and embedding.name == "token_embedding"
    vocab, hidden = embedding.embeddings.shape
    assert [v for v in model.trainable_variables if v is embedding.embeddings] == [embedding.embeddings]
    assert not any(vocab in v.shape and len(v.shape) == 2 for v in head.weights)  # no kernel of its own
    # the logits are the transformed token vectors times the (shared) embedding matrix, plus a bias
    x, _ = next(iter(eval_dataset(model.tasks[1], model.tasks, trained[1]["mlm"][:4], model.preprocessor)))
    sequence = keras.Model(model.inputs, head.input[0])(x).numpy()
    hidden_states = head._intermediate_layer_norm(head._intermediate_dense(sequence)).numpy()
    expected = hidden_states @ embedding.embeddings.numpy().T + head._bias.numpy()
    np.testing.assert_allclose(model(x)["mlm"], expected, rtol=1e-4, atol=1e-4)


def test_it_trains_beside_a_classification_task(trained):
    model, _, history, (x, y, w) = trained
    owned = x["task_id"].numpy() == 1
    assert owned.any() and (~owned).any()  # a joint batch
    assert w["mlm"].numpy()[~owned].sum() == 0 and w["mlm"].numpy()[owned].sum() > 0
    for key in ("loss", "mlm_loss", "mlm_accuracy", "mlm_perplexity", "sent_loss"):
        assert np.isfinite(history[key][-1]), key
    # perplexity is exp of the mean cross-entropy over the masked pieces, as the loss is
    assert history["mlm_perplexity"][-1] == pytest.approx(np.exp(history["mlm_loss"][-1]), rel=1e-4)


def test_evaluate_reports_accuracy_and_perplexity_over_masked_pieces(trained):
    model, examples, _, _ = trained
    task, texts = model.tasks[1], examples["mlm"][:12]
    report = kmtl.evaluation.evaluate_tasks(model, {"mlm": texts}, model.preprocessor, progress="off")["mlm"]
    assert report["kind"] == "masked_lm" and report["examples"] == 12
    nll, right, count = 0.0, 0, 0
    for x, aux in eval_dataset(task, model.tasks, texts, model.preprocessor, batch_size=5):
        logits = model.predict_on_batch(x)["mlm"]
        labels = aux["masked_labels"].numpy()[:, :logits.shape[1]]
        weights = aux["masked_weights"].numpy()[:, :logits.shape[1]]
        nll += float(np.sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True) * weights))
        right += int(np.sum((logits.argmax(-1) == labels) * weights))
        count += int(weights.sum())
    assert report["masked_tokens"] == count > 0
    assert report["perplexity"] == pytest.approx(np.exp(nll / count), rel=1e-4)
    assert report["accuracy"] == pytest.approx(right / count)
    again = kmtl.evaluation.evaluate_tasks(model, {"mlm": texts}, model.preprocessor, progress="off")["mlm"]
    assert again == report  # a fixed mask: the same figures every time


def test_keras_round_trip_keeps_the_tied_head(trained, tmp_path):
    model, examples, _, _ = trained
    model.save(tmp_path / "mlm.keras")
    loaded = keras.saving.load_model(tmp_path / "mlm.keras")
    task = loaded.tasks[1]
    assert isinstance(task, MaskedLM) and task.get_config() == model.tasks[1].get_config()
    head = loaded.get_layer("mlm")
    assert head.token_embedding is find_token_embedding(head.input[0])
    assert head.token_embedding is not model.get_layer("mlm").token_embedding
    x, _ = next(iter(eval_dataset(model.tasks[1], model.tasks, examples["mlm"][:4], model.preprocessor)))
    np.testing.assert_allclose(loaded(x)["mlm"], model(x)["mlm"], rtol=1e-5, atol=1e-5)


def test_exports_and_predictions_leave_the_auxiliary_head_out(trained, tmp_path):
    """Not served by default: no signature, no ``ids`` output; predicting another task does not
    compute the vocabulary-wide logits (only that task's head is in the graph run)."""
    import tensorflow_text  # noqa: F401

    model, examples, _, _ = trained
    path = kmtl.export.export_saved_model(model, model.preprocessor, tmp_path, "aux")
    meta = json.loads((path / "assets.extra" / "kmtl.json").read_text())
    assert [t["name"] for t in meta["tasks"]] == ["sent", "mlm"] and meta["served"] == ["sent"]
    loaded = tf.saved_model.load(str(path))
    assert "mlm" not in loaded.signatures and "sent" in loaded.signatures
    x, _ = next(iter(eval_dataset(model.tasks[0], model.tasks, examples["sent"][:3], model.preprocessor)))
    ids = loaded.signatures["ids"](**{k: v for k, v in x.items() if k != "task_id"})
    assert set(ids) == {"sent"}
    np.testing.assert_allclose(ids["sent"].numpy(), model(x)["sent"].numpy(), atol=1e-5)
    only = model.outputs_model(["sent"])
    assert set(only.output) == {"sent"} and "mlm" not in [layer.name for layer in only.layers]
