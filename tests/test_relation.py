"""Relation extraction (``kind: relation``): the three sources, entity markers in TF, the head
that reads the start markers, SemEval-2010's official score, training beside a classification
task, evaluation, and a `.keras` round trip."""

import collections
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import f1_score

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.data.sources import RelationDocumentsSource, RelationJsonlSource, SemevalSource
from kmtl.data.sources.relations import mark_spans, marker_problem
from kmtl.errors import DataError
from kmtl.metrics import MacroF1
from kmtl.tasks import Classification, Relation
from kmtl.tasks.relation import EntityStartPooling, insert_markers, semeval_scores, to_marker_text

SEMEVAL_LABEL = re.compile(r"Other|(Cause-Effect|Component-Whole|Content-Container|Entity-Destination|Entity-Origin|"
                           r"Instrument-Agency|Member-Collection|Message-Topic|Product-Producer)\((e1,e2|e2,e1)\)")


def _write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def _record(ident, sentence, label="Other"):
    return f'{ident}\t"{sentence}"\n{label}\nComment:\n\n'


# ------------------------------------------------------------------------------ SemEval source
def _first_records(shared_data, name, count, tmp_path):
    """The first ``count`` records of a real SemEval file, bytes as they are (CRLF)."""
    lines = (shared_data / "semeval2010_task8" / name).read_bytes().split(b"\n")
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines[:4 * count]) + b"\n")
    return path, [line.decode("utf-8").rstrip("\r") for line in lines[:4 * count]]


@pytest.mark.parametrize("name, first_id", [("TRAIN_FILE.TXT", 1), ("TEST_FILE_FULL.TXT", 8001)])
def test_semeval_reads_the_first_200_real_records(shared_data, tmp_path, name, first_id):
    path, lines = _first_records(shared_data, name, 200, tmp_path)
    assert lines[0].endswith('"') and b"\r\n" in path.read_bytes()  # the real files: CRLF, quoted sentences
    examples = SemevalSource(path).read()
    assert len(examples) == 200
    assert [ex.where for ex in examples] == [f"{path}:{4 * i + 1}" for i in range(200)]
    # labels: the second line of each record, counted straight from the file
    assert collections.Counter(ex.label for ex in examples) == collections.Counter(lines[1::4])
    assert all(SEMEVAL_LABEL.fullmatch(ex.label) for ex in examples)
    for ex, line in zip(examples, lines[0::4]):
        ident, cell = line.split("\t")
        assert int(ident) == first_id + examples.index(ex)
        assert ex.text == cell[1:-1] and not ex.text.startswith('"') and marker_problem(ex.text) is None


def test_semeval_strips_only_the_outer_quotes(shared_data, tmp_path):
    lines = (shared_data / "semeval2010_task8" / "TRAIN_FILE.TXT").read_bytes().split(b"\n")
    path = tmp_path / "quotes.txt"
    path.write_bytes(b"\n".join(lines[4 * 337:4 * 338]) + b"\n")  # record 338 quotes words inside its sentence
    [ex] = SemevalSource(path).read()
    assert ex.label == "Member-Collection(e1,e2)" and ex.text.startswith('Instead of "dominance" and "submission", he')
    assert ex.text.endswith("the <e1>wolf</e1> in the <e2>pack</e2>.")


def test_semeval_reads_unlabelled_records_and_lf_files(tmp_path):
    path = _write(tmp_path / "test.txt", '1\t"A <e1>b</e1> c <e2>d</e2>."\n2\t"<e2>x</e2> and <e1>y</e1>"\n')
    assert [(ex.label, ex.text) for ex in SemevalSource(path).read()] == [
        (None, "A <e1>b</e1> c <e2>d</e2>."), (None, "<e2>x</e2> and <e1>y</e1>")]


@pytest.mark.parametrize("body, line, message", [
    (_record(1, "a <e1>b</e1> c <e2>d</e2>") + _record(2, "a <e1>b</e1> c <e2>d"), 5, "marker </e2> is missing"),
    (_record(1, "a <e1>b</e1> <e1>c</e1> <e2>d</e2>"), 1, "<e1> appears 2 times"),
    (_record(1, "a <e1>b <e2>c</e2></e1> d"), 1, "inside the other"),
    (_record(1, "a </e1>b<e1> c <e2>d</e2>"), 1, "</e1> comes before <e1>"),
    ('1\ta <e1>b</e1> c <e2>d</e2>\nOther\n', 1, "double quotes"),
    (_record(1, "a <e1>b</e1> c <e2>d</e2>") + _record(1, "x <e1>y</e1> <e2>z</e2>"), 5, "id 1 is used again"),
    ('1\t"a <e1>b</e1> c <e2>d</e2>"\nOther\nOther\n', 3, "second label line"),
    ('Other\n', 1, "outside a record"),
])
def test_semeval_errors_name_file_and_line(tmp_path, body, line, message):
    path = _write(tmp_path / "bad.txt", body, newline="\r\n")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        SemevalSource(path).read()
    assert err.value.where == f"{path}:{line}"


def test_semeval_empty_file_is_a_data_error(tmp_path):
    path = _write(tmp_path / "empty.txt", "\r\n\r\n")
    with pytest.raises(DataError, match="empty") as err:
        SemevalSource(path).read()
    assert err.value.where == str(path)


# ------------------------------------------------------------------------------- JSON Lines
def test_relation_jsonl_marks_character_and_token_spans(tmp_path):
    rows = [
        {"text": "Bill Gates founded Microsoft.", "head": [0, 10], "tail": [19, 28], "label": "founder"},
        {"text": "Zürich hosts ETH.", "head": {"start": 13, "end": 16}, "tail": [0, 6], "label": "located_in"},
        {"tokens": ["Marie", "Curie", "was", "born", "in", "Warsaw"], "head": [0, 2], "tail": [5, 6], "label": "born_in"},
    ]
    path = _write(tmp_path / "rel.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    examples = RelationJsonlSource(path).read()
    assert [(ex.text, ex.label, ex.where) for ex in examples] == [
        ("<e1>Bill Gates</e1> founded <e2>Microsoft</e2>.", "founder", f"{path}:1"),
        ("<e2>Zürich</e2> hosts <e1>ETH</e1>.", "located_in", f"{path}:2"),
        ("<e1>Marie Curie</e1> was born in <e2>Warsaw</e2>", "born_in", f"{path}:3"),
    ]
    inclusive = _write(tmp_path / "tacred.jsonl", json.dumps({"tokens": ["a", "b", "c"], "subj": [0, 0], "obj": [1, 2],
                                                               "relation": "r"}) + "\n")
    [ex] = RelationJsonlSource(inclusive, head="subj", tail="obj", label="relation", end_inclusive=True).read()
    assert ex.text == "<e1>a</e1> <e2>b c</e2>"


@pytest.mark.parametrize("row, message", [
    ({"text": "short", "head": [0, 2], "tail": [3, 9], "label": "r"}, "outside the text"),
    ({"text": "abcdef", "head": [0, 3], "tail": [2, 5], "label": "r"}, "overlap"),
    ({"tokens": ["a", "b"], "head": [0, 1], "tail": [1, 3], "label": "r"}, "outside the 2 tokens"),
    ({"text": "abcdef", "head": [0, 1], "label": "r"}, "missing span 'tail'"),
    ({"text": "a <e1>b</e1> c", "head": [0, 1], "tail": [13, 14], "label": "r"}, "<e1> appears 2 times"),
])
def test_relation_jsonl_errors_name_file_and_line(tmp_path, row, message):
    good = {"text": "abcdef", "head": [0, 1], "tail": [2, 3], "label": "r"}
    path = _write(tmp_path / "bad.jsonl", json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        RelationJsonlSource(path).read()
    assert err.value.where == f"{path}:2"


# -------------------------------------------------------------------------------- documents
DOCS = [
    {"tokens": ["John", "Smith", "works", "for", "IBM", "in", "Paris", "."],
     "entities": [{"type": "Peop", "start": 0, "end": 2}, {"type": "Org", "start": 4, "end": 5},
                  {"type": "Loc", "start": 6, "end": 7}],
     "relations": [{"type": "Work_For", "head": 0, "tail": 1}, {"type": "OrgBased_In", "head": 1, "tail": 2}]},
    {"tokens": ["Ann", "met", "Bob", "."], "entities": [{"type": "Peop", "start": 0, "end": 1},
                                                        {"type": "Peop", "start": 2, "end": 3}], "relations": []},
]


def test_documents_expand_to_every_ordered_pair(tmp_path):
    path = _write(tmp_path / "docs.json", "[\n" + ",\n".join(json.dumps(d) for d in DOCS) + "\n]\n")
    examples = RelationDocumentsSource(path).read()
    assert len(examples) == 3 * 2 + 2 * 1
    by_text = {ex.text: ex.label for ex in examples}
    assert by_text["<e1>John Smith</e1> works for <e2>IBM</e2> in Paris ."] == "Work_For"
    assert by_text["<e2>John Smith</e2> works for <e1>IBM</e1> in Paris ."] == "Other"  # direction matters
    assert by_text["John Smith works for <e1>IBM</e1> in <e2>Paris</e2> ."] == "OrgBased_In"
    assert collections.Counter(by_text.values()) == {"Other": 6, "Work_For": 1, "OrgBased_In": 1}
    assert {ex.where for ex in examples} == {f"{path}:2, document 1", f"{path}:3, document 2"}
    lines = _write(tmp_path / "docs.jsonl", "\n".join(json.dumps(d) for d in DOCS) + "\n")
    named = RelationDocumentsSource(lines, no_relation="no_relation").read()
    assert [ex.label for ex in named].count("no_relation") == 6 and named[-1].where == f"{lines}:2"


def test_documents_down_sample_unrelated_pairs_with_a_seed(tmp_path):
    docs = [{"tokens": [f"w{i}" for i in range(6)], "entities": [{"type": "E", "start": i, "end": i + 1} for i in range(6)],
             "relations": [{"type": "R", "head": 0, "tail": 1}, {"type": "S", "head": 4, "tail": 2}]}] * 3
    path = _write(tmp_path / "docs.jsonl", "\n".join(json.dumps(d) for d in docs) + "\n")
    every = RelationDocumentsSource(path).read()
    assert len(every) == 3 * 30 and sum(ex.label != "Other" for ex in every) == 6

    kept = RelationDocumentsSource(path, keep_no_relation=0.25, seed=1).read()
    assert sum(ex.label == "Other" for ex in kept) == round(0.25 * 84)
    assert [ex for ex in every if ex.label != "Other"] == [ex for ex in kept if ex.label != "Other"]  # all relations
    rest = iter(every)
    assert all(any(ex == other for other in rest) for ex in kept)  # a subsequence: file order kept
    assert RelationDocumentsSource(path, keep_no_relation=0.25, seed=1).read() == kept
    assert RelationDocumentsSource(path, keep_no_relation=0.25, seed=2).read() != kept
    assert sum(ex.label == "Other" for ex in RelationDocumentsSource(path, keep_no_relation=0.0).read()) == 0


def test_documents_errors(tmp_path):
    nested = {"tokens": ["New", "York", "City"], "entities": [{"type": "Loc", "start": 0, "end": 3},
                                                               {"type": "Loc", "start": 0, "end": 2}], "relations": []}
    path = _write(tmp_path / "nested.jsonl", json.dumps(DOCS[1]) + "\n" + json.dumps(nested) + "\n")
    with pytest.raises(DataError, match="overlap") as err:
        RelationDocumentsSource(path).read()
    assert err.value.where == f"{path}:2"
    assert len(RelationDocumentsSource(path, overlapping="skip").read()) == 2
    twice = {**DOCS[1], "relations": [{"type": "a", "head": 0, "tail": 1}, {"type": "b", "head": 0, "tail": 1}]}
    outside = {**DOCS[1], "entities": [{"type": "P", "start": 3, "end": 9}]}
    for doc, message in ((twice, "two relations"), (outside, "outside the document's 4 tokens")):
        bad = _write(tmp_path / "bad.jsonl", json.dumps(DOCS[0]) + "\n" + json.dumps(doc) + "\n")
        with pytest.raises(DataError, match=message) as err:
            RelationDocumentsSource(bad).read()
        assert err.value.where == f"{bad}:2"
    with pytest.raises(DataError, match="empty"):
        RelationDocumentsSource(_write(tmp_path / "empty.json", "")).read()


# ------------------------------------------------------------------------- markers in TF ops
def test_to_marker_text_writes_zhou_and_chen_punct_markers():
    out = to_marker_text(tf.constant(["The <e1>C# compiler</e1> reads <e2>code</e2> #1.",
                                      "<e2>x</e2> then <e1>y</e1>", "plain text with # and @ stays"])).numpy()
    assert out.tolist() == [b"The @ C  compiler @ reads # code #  1.", b"# x # then @ y @",
                            b"plain text with # and @ stays"]


def test_insert_markers_matches_python_marking_and_rejects_bad_spans():
    rng = np.random.default_rng(0)
    texts, spans = [], []
    for _ in range(20):
        text = "".join(rng.choice(list("abcé ßüx日本"), size=int(rng.integers(4, 15))))
        a, b, c, d = sorted(rng.choice(len(text) + 1, size=4, replace=False))
        head, tail = ((a, b), (c, d)) if rng.random() < 0.5 else ((c, d), (a, b))
        texts.append(text)
        spans.append((head, tail))
    out = insert_markers(tf.constant(texts), *[[s[i][j] for s in spans] for i in (0, 1) for j in (0, 1)])
    assert [t.decode("utf-8") for t in out.numpy()] == [mark_spans(t, h, s) for t, (h, s) in zip(texts, spans)]
    for bad in ([0, 3, 2, 5], [0, 0, 2, 3], [0, 2, 3, 99]):  # overlap, empty, outside
        with pytest.raises(tf.errors.InvalidArgumentError, match="must not overlap"):
            insert_markers(tf.constant(["abcdef"]), *[[v] for v in bad])


def test_entity_start_pooling_reads_the_first_marker_of_each_row():
    sequence = tf.reshape(tf.range(2 * 6 * 2, dtype=tf.float32), [2, 6, 2])
    ids = tf.constant([[2, 9, 62, 5, 43, 43], [2, 43, 7, 62, 3, 0]])
    out = EntityStartPooling(head_id=62, tail_id=43)(sequence, ids).numpy()
    np.testing.assert_array_equal(out, np.concatenate([sequence.numpy()[[0, 1], [2, 3]], sequence.numpy()[[0, 1], [4, 1]]],
                                                      axis=-1))
    no_marker = EntityStartPooling(62, 43)(sequence, tf.constant([[2, 5, 5, 5, 3, 0]] * 2)).numpy()
    np.testing.assert_array_equal(no_marker[:, :2], sequence.numpy()[:, 0])  # cut off: [CLS]


def test_the_head_finds_the_markers_in_tokenized_text(tiny):
    pre = tiny.preprocessor(32)
    task = Relation("rel", ["Other", "r"])
    head_id, tail_id = task._marker_ids(tiny.tokenizer)
    texts = tf.constant(["C# <e1>java</e1> and <e2>paris</e2>", "<e2>new york</e2> @ the <e1>company</e1>"])
    x, _, _, _ = task.encode_inputs(pre, {"text": texts})
    heads, tails = EntityStartPooling(head_id, tail_id).positions(x["token_ids"])
    ids = x["token_ids"].numpy()
    vocab = tiny.tokenizer.get_vocabulary()
    after = [(vocab[ids[row, heads[row] + 1]], vocab[ids[row, tails[row] + 1]]) for row in range(2)]
    assert after == [("j", "paris"), ("company", "new")]  # each entity's first piece follows its start marker
    assert (ids == tail_id).sum(axis=1).tolist() == [2, 2] and (ids == head_id).sum(axis=1).tolist() == [2, 2]


# ---------------------------------------------------------------------------------- metrics
def test_official_semeval_score_on_a_hand_made_confusion():
    gold = ["A(e1,e2)", "A(e1,e2)", "A(e2,e1)", "B(e1,e2)", "Other", "Other", "Other"]
    pred = ["A(e1,e2)", "A(e2,e1)", "Other", "B(e1,e2)", "B(e1,e2)", "Other", "C(e1,e2)"]
    scores = semeval_scores(gold, pred)
    # A: 1 right of 2 predicted A (one in the wrong direction), 3 gold A: P 1/2, R 1/3, F1 0.4
    # B: 1 right of 2 predicted, 1 gold: P 1/2, R 1, F1 2/3. C is in no gold label: not averaged
    assert scores["per_relation"]["A"] == {"precision": 0.5, "recall": pytest.approx(1 / 3), "f1": pytest.approx(0.4),
                                           "support": 3}
    assert scores["per_relation"]["B"]["f1"] == pytest.approx(2 / 3) and set(scores["per_relation"]) == {"A", "B"}
    assert scores["macro_f1"] == pytest.approx((0.4 + 2 / 3) / 2)
    assert scores["macro_precision"] == pytest.approx(0.5) and scores["macro_recall"] == pytest.approx(2 / 3)
    assert scores["micro_f1"] == pytest.approx(0.5)  # 2 right of 4 predicted A or B, 4 gold A or B
    ignoring_direction = semeval_scores([g.replace("e2,e1", "e1,e2") for g in gold],
                                        [p.replace("e2,e1", "e1,e2") for p in pred])
    assert ignoring_direction["macro_f1"] > scores["macro_f1"]  # the wrong direction counted against A above


def test_macro_f1_can_leave_the_no_relation_class_out():
    y = np.array([0, 1, 2, 2, 0, 1])
    p = np.array([0, 2, 2, 1, 1, 1])
    metric = MacroF1(3, exclude=[0])
    metric.update_state(y, np.eye(3)[p])
    assert float(metric.result()) == pytest.approx(f1_score(y, p, labels=[1, 2], average="macro"))
    assert MacroF1.from_config(metric.get_config()).exclude == (0,)
    with pytest.raises(ValueError, match="not all"):
        MacroF1(2, exclude=[0, 1])


def test_no_relation_label_must_match_the_data():
    with pytest.raises(ValueError, match="set no_relation_label: no_relation"):
        Relation("rel", labels=["founder", "no_relation"])
    task = Relation("rel", no_relation_label=None)
    task.fit_labels([Example(text="<e1>a</e1> <e2>b</e2>", label=label) for label in ("x", "Other")])
    assert task.relation_labels == ["Other", "x"]
    with pytest.raises(DataError, match="marker </e2> is missing") as err:
        task.check_inputs(Example(text="<e1>a</e1> <e2>b", label="x", where="t.jsonl:7"))
    assert err.value.where == "t.jsonl:7"
    with pytest.raises(ValueError, match="no tokenizer"):
        Relation("rel", ["Other", "x"]).build_head({"tokenizer": None})
    again = kmtl.tasks.from_config(Relation("rel", ["Other", "x"], marker_ids=[5, 6]).get_config())
    assert isinstance(again, Relation) and again.marker_ids == [5, 6] and again.no_relation_label == "Other"


# --------------------------------------------------------------------- training and saving
SENTENCES = [("the <e1>fire</e1> caused the <e2>smoke</e2>", "Cause-Effect(e1,e2)"),
             ("the <e1>smoke</e1> came from a <e2>fire</e2>", "Cause-Effect(e2,e1)"),
             ("the <e1>door</e1> of the <e2>car</e2>", "Component-Whole(e1,e2)"),
             ("a <e1>cat</e1> saw a <e2>dog</e2>", "Other")]


@pytest.fixture(scope="module")
def trained():
    rel, sent = Relation("rel"), Classification("sent", ["neg", "pos"])
    examples = {"rel": [Example(text=t, label=l, where=f"rel:{i}") for i, (t, l) in enumerate(SENTENCES * 6)],
                "sent": [Example(text=t, label=l) for t, l in [("a good film", "pos"), ("a bad film", "neg")] * 8]}
    rel.fit_labels(examples["rel"])
    model = kmtl.build_model(tiny_encoder(seed=0), [rel, sent], max_length=24)
    before = [w.numpy().copy() for w in model.get_layer("rel").weights]
    data = kmtl.data.mixture([rel, sent], examples, model.preprocessor, batch_size=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=1, steps_per_epoch=3, verbose=0).history
    return model, examples, history, before


def test_relation_trains_beside_a_classification_task(trained):
    model, _, history, before = trained
    for key in ("rel_loss", "rel_accuracy", "rel_macro_f1", "sent_loss", "sent_accuracy"):
        assert np.isfinite(history[key][-1]), key
    assert model.tasks[0].marker_ids == [model.preprocessor.tokenizer.token_to_id(m) for m in ("@", "#")]
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.get_layer("rel").weights))


def test_evaluate_and_decode_agree(trained, tmp_path):
    model, examples, _, _ = trained
    report = kmtl.evaluation.evaluate_tasks(model, {"rel": examples["rel"]}, model.preprocessor, progress="off")["rel"]
    predictions = kmtl.evaluation.predict_task(model, model.tasks[0], examples["rel"], model.preprocessor)
    gold = [ex.label for ex in examples["rel"]]
    assert report["kind"] == "relation" and report["examples"] == 24
    assert report["macro_f1"] == pytest.approx(semeval_scores(gold, [p["label"] for p in predictions])["macro_f1"])
    assert set(report["per_relation"]) == {"Cause-Effect", "Component-Whole"}
    # the training metric's figure: MacroF1 over the directed labels but Other
    metric = model.tasks[0].metrics()[1]
    labels = model.tasks[0].labels
    metric.update_state([labels.index(g) for g in gold], [[p["probabilities"][lab] for lab in labels] for p in predictions])
    assert report["directed_macro_f1"] == pytest.approx(float(metric.result()), abs=1e-6)
    assert json.loads(kmtl.evaluation.write_json({"rel": report}, tmp_path / "m.json").read_text())["rel"]["per_relation"]
    # raw marked text through model.predict (the serving code path) gives the pipeline's answers
    texts = [ex.text for ex in examples["rel"][:4]]
    answers = kmtl.export.decode(model, model.predict(texts, verbose=0), texts)
    assert [a["rel_label"] for a in answers] == [p["label"] for p in predictions[:4]]
    np.testing.assert_allclose([a["rel_probabilities"] for a in answers],
                               [[p["probabilities"][lab] for lab in labels] for p in predictions[:4]], rtol=1e-5, atol=1e-6)


def test_keras_round_trip_keeps_the_outputs(trained, tmp_path):
    model, examples, _, _ = trained
    model.save(tmp_path / "rel.keras")
    loaded = keras.saving.load_model(tmp_path / "rel.keras")
    assert isinstance(loaded.tasks[0], Relation) and loaded.tasks[0].marker_ids == model.tasks[0].marker_ids
    x, _ = next(iter(kmtl.data.eval_dataset(model.tasks[0], model.tasks, examples["rel"][:8], model.preprocessor)))
    np.testing.assert_allclose(loaded(x)["rel"], model(x)["rel"], rtol=1e-5, atol=1e-6)


def test_saved_model_serves_marked_text_and_character_spans_alike(trained, tmp_path):
    """``rel(text)`` on marked text and ``rel_spans(text, spans)`` on the plain text answer the
    same; the warm-up request of the spans signature is a valid one (TF Serving replays it)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from kmtl.export.warmup import WARMUP_FILE

    model = trained[0]
    path = kmtl.export.export_saved_model(model, model.preprocessor, tmp_path, "rel")
    loaded = tf.saved_model.load(str(path))
    assert {"rel", "rel_spans", "sent", "serving_default", "ids"} <= set(loaded.signatures)
    plain = ["Bill Gates founded Microsoft .", "the ferry sank in the storm"]
    marked = ["<e1>Bill Gates</e1> founded <e2>Microsoft</e2> .", "the <e2>ferry</e2> sank in the <e1>storm</e1>"]
    by_text = loaded.signatures["rel"](text=tf.constant(marked))
    by_spans = loaded.signatures["rel_spans"](text=tf.constant(plain), head_start=tf.constant([0, 22]),
                                              head_end=tf.constant([10, 27]), tail_start=tf.constant([19, 4]),
                                              tail_end=tf.constant([28, 9]))
    assert by_spans["rel_label"].numpy().tolist() == by_text["rel_label"].numpy().tolist()
    np.testing.assert_allclose(by_spans["rel_probabilities"], by_text["rel_probabilities"], atol=1e-6)
    # the warm-up request of rel_spans runs
    from tensorflow_serving.apis import prediction_log_pb2

    for record in tf.data.TFRecordDataset(str(path / "assets.extra" / WARMUP_FILE)):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        if request.model_spec.signature_name == "rel_spans":
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            assert loaded.signatures["rel_spans"](**{k: tf.constant(v) for k, v in inputs.items()})["rel_label"].shape == [2]
            break
    else:
        raise AssertionError("no warm-up request for rel_spans")


def test_the_heads_hidden_layer_counts_as_head_not_backbone():
    """`trainable_parameter_counts` finds a head's own `<task>_...` layers by walking back from
    its output, and never a backbone layer whose name starts like a task's (`token_embedding`)."""
    from kmtl.sharing import trainable_parameter_counts

    rel = Relation("rel", ["Cause-Effect(e1,e2)", "Other"])
    model = kmtl.build_model(tiny_encoder(seed=0), [rel, Classification("token", ["x", "y"])],
                             sharing="adapters", max_length=16)
    heads = sum(int(np.prod(v.shape)) for name in ("rel", "rel_hidden", "token") for v in model.get_layer(name).weights)
    parts = trainable_parameter_counts(model)["parts"]
    assert parts["heads"]["total"] == heads
    assert parts["backbone"]["total"] >= sum(int(np.prod(v.shape)) for v in model.get_layer("token_embedding").weights)
