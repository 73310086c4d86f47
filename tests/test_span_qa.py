"""Extractive QA (``kind: span_qa``): windows over long contexts, answers mapped to pieces and back
through the tokenizer's offsets, the best span across windows, SQuAD's EM/F1, training beside a
classification task, evaluation, the served ``<task>(question, context)`` signature and saving."""

import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.errors import DataError
from kmtl.tasks import Classification, SpanQA
from kmtl.tasks.span_qa import best_spans, encode_windows, squad_scores, token_f1

CONTEXT = ("the cat sat on the mat . a dog ran in the park and the cat was happy . "
           "later the dog slept under a tree near the river , far from the city .")
QUESTIONS = [("where did the cat sit ?", "the mat"), ("who ran in the park ?", "a dog"),
             ("where did the dog sleep ?", "under a tree"), ("what was far from the city ?", "the river")]


def _example(question, answer, context=CONTEXT, where="qa:1"):
    return Example(text=question, text_pair=context, label=((context.index(answer), answer),), where=where)


# ------------------------------------------------------------------------------ windows
def test_windows_cover_the_context_and_each_holding_window_points_at_the_answer(tiny):
    pre = tiny.preprocessor(32)
    questions, answers = [q for q, _ in QUESTIONS], []
    for _, answer in QUESTIONS:
        start = len(CONTEXT[:CONTEXT.index(answer)].encode())
        answers.append([start, start + len(answer.encode())])
    encode = tf.function(lambda q, c, a, stride: encode_windows(pre, q, c, a, max_query_length=8, doc_stride=stride))
    halves = tf.function(lambda q, c, a: encode_windows(pre, q, c, a, max_query_length=8))
    pieces = int(tf.function(lambda t: pre.tokenizer(t))(tf.constant([CONTEXT])).row_lengths()[0])
    data = CONTEXT.encode()
    from kmtl.tasks.span_qa import tokenizer_words

    _, starts, ends = tokenizer_words(pre.tokenizer, tf.constant([CONTEXT]))
    words = set(zip(starts.flat_values.numpy(), ends.flat_values.numpy()))
    for stride, step in ((None, 10), (3, 3), (100, 21)):  # room 32 - 3 - 8 = 21 pieces a row: half of it, 3, capped
        args = (tf.constant(questions), tf.constant([CONTEXT] * 4), tf.constant(answers))
        out = {k: v.numpy() for k, v in (halves(*args) if stride is None else encode(*args, tf.constant(stride))).items()}
        for index, (_, answer) in enumerate(QUESTIONS):
            rows = np.flatnonzero(out["example"] == index)
            assert len(rows) == 1 + -(-(pieces - 21) // step)
            seen, holding = set(), 0
            for row in rows:
                assert out["token_ids"][row, 0] == pre.cls_id and out["padding_mask"][row].sum() <= 32
                context_at = out["byte_start"][row] >= 0
                assert (out["segment_ids"][row][context_at] == 1).all()
                seen |= set(zip(out["byte_start"][row][context_at], out["byte_end"][row][context_at]))
                first, last = out["positions"][row]
                if first:
                    holding += 1
                    assert data[out["byte_start"][row, first]:out["byte_end"][row, last]].decode() == answer
                else:
                    assert last == 0
            assert seen == words  # every word of the context is in some window
            # answers of <= 10 pieces are whole in some window when windows overlap by 10 or more
            assert holding >= 1 or stride == 100
            starts = [out["byte_start"][row][out["byte_start"][row] >= 0][0] for row in rows]
            assert starts == sorted(starts) and starts[0] == 0 and starts[-1] > starts[-2]
            last = out["byte_end"][rows[-1]]
            assert last[last >= 0][-1] == len(data)  # the last window reaches the context's end
    # a short context is one row; a long question keeps max_query_length pieces
    out = {k: v.numpy() for k, v in halves(tf.constant(["why " * 40]), tf.constant(["a dog"]), tf.constant([[0, 1]])).items()}
    assert out["example"].tolist() == [0]
    assert out["segment_ids"][0, :10].tolist() == [0] * 10 and out["positions"][0].tolist() == [10, 10]


# ------------------------------------------------------------------------------ decoding
def test_best_span_is_chosen_across_windows_inside_the_context_and_length():
    logits = np.full((3, 6, 2), -5.0, np.float32)
    byte_start = np.array([[-1, -1, 0, 4, 8, -1], [-1, -1, 8, 12, 16, -1], [-1, 0, 2, -1, -1, -1]])
    byte_end = byte_start + np.where(byte_start >= 0, 3, 0)
    logits[0, 2, 0], logits[0, 3, 1] = 2.0, 2.0  # example 0, window 0: bytes 0..7, confident
    logits[1, 3, 0], logits[1, 4, 1] = 9.0, 9.0  # example 0, window 1: bytes 12..19, more confident
    logits[1, 0, 0], logits[1, 0, 1] = 50.0, 50.0  # [CLS] is never an answer (but takes the window's probability)
    logits[2, 2, 0], logits[2, 1, 1] = 9.0, 9.0  # example 1: end before start is not a span
    starts, ends, probability = (v.numpy() for v in best_spans(logits, byte_start, byte_end, np.array([0, 0, 1]), 2))
    assert (starts[0], ends[0]) == (12, 19)
    assert ends[1] >= starts[1] >= 0 and 0 < probability[0] < 1e-10 < probability[1] <= 1
    starts, ends, _ = (v.numpy() for v in best_spans(logits, byte_start, byte_end, np.array([0, 0, 1]), 2,
                                                     max_answer_length=1))
    assert (ends - starts).tolist() == [3, 3]  # one piece each


def test_an_empty_context_has_no_answer():
    logits = np.zeros((1, 3, 2), np.float32)
    none = -np.ones((1, 3), np.int64)
    starts, ends, probability = (v.numpy() for v in best_spans(logits, none, none, np.array([0]), 1))
    assert starts.tolist() == [-1] and ends.tolist() == [-1] and probability.tolist() == [0.0]


def test_squad_scores_follow_the_official_normalisation():
    assert squad_scores([["Denver Broncos"]], ["the Denver Broncos!"]) == {"exact_match": 1.0, "f1": 1.0}
    assert token_f1("the Eiffel tower", "Eiffel tower in Paris") == pytest.approx(2 / 3)
    scores = squad_scores([["a cat", "dog"], ["blue sky"]], ["dog", "red"])
    assert scores == {"exact_match": 0.5, "f1": 0.5}


# ------------------------------------------------------------------------------ input errors
def test_bad_examples_get_located_errors():
    task = SpanQA("qa")
    with pytest.raises(DataError, match=r"qa\.json: data\[0\].*not at character 4"):
        task.check_inputs(Example(text="q", text_pair="a dog ran", label=((4, "dog"),), where="qa.json: data[0]"))
    with pytest.raises(DataError, match="has no answer"):
        task.encode_labels([Example(text="q", text_pair="a dog", where="x:1")])
    with pytest.raises(ValueError, match="remove labels"):
        SpanQA("qa", labels=["a"])
    with pytest.raises(ValueError, match="max_answer_length"):
        SpanQA("qa", max_answer_length=0)


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained():
    qa, sent = SpanQA("qa", max_query_length=8), Classification("sent", ["neg", "pos"])
    examples = {"qa": [_example(q, a, where=f"qa:{i}") for i, (q, a) in enumerate(QUESTIONS * 4)],
                "sent": [Example(text=t, label=l) for t, l in [("a good film", "pos"), ("a bad film", "neg")] * 8]}
    model = kmtl.build_model(tiny_encoder(seed=0), [qa, sent], max_length=24)
    before = [w.numpy().copy() for w in model.get_layer("qa").weights]
    data = kmtl.data.mixture([qa, sent], examples, model.preprocessor, batch_size=8, seed=0)
    model.compile(optimizer="adam")
    history = model.fit(data, epochs=1, steps_per_epoch=3, verbose=0).history
    return model, examples, history, before


def test_span_qa_trains_beside_a_classification_task(trained):
    model, _, history, before = trained
    for key in ("qa_loss", "qa_span_accuracy", "sent_loss", "sent_accuracy"):
        assert np.isfinite(history[key][-1]), key
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.get_layer("qa").weights))


def test_evaluation_and_the_in_memory_answers_agree(trained):
    model, examples, _, _ = trained
    qa = model.tasks[0]
    dev = examples["qa"][:4]
    report = kmtl.evaluation.evaluate_tasks(model, {"qa": dev}, model.preprocessor, progress="off")["qa"]
    predictions = kmtl.evaluation.predict_task(model, qa, dev, model.preprocessor, batch_size=3)
    assert report["kind"] == "span_qa" and report["examples"] == 4 and report["answered"] == 4
    assert report["f1"] == pytest.approx(squad_scores([[a] for _, a in QUESTIONS], [p["answer"] for p in predictions])["f1"])
    for p in predictions:
        assert CONTEXT[p["start"]:p["end"]] == p["answer"] and p["answer"] and 0 < p["score"] <= 1


def test_saved_model_answers_question_and_context(trained, tmp_path):
    import tensorflow_text  # noqa: F401

    model, examples, _, _ = trained
    qa = model.tasks[0]
    path = kmtl.export.export_saved_model(model, model.preprocessor, tmp_path, "qa")
    loaded = tf.saved_model.load(str(path))
    assert {"qa", "sent", "serving_default", "ids"} <= set(loaded.signatures)
    assert not any(k.startswith("qa_") for k in loaded.signatures["serving_default"].structured_outputs)
    questions, contexts = [q for q, _ in QUESTIONS] + ["who?"], [CONTEXT] * 4 + [""]
    served = loaded.signatures["qa"](question=tf.constant(questions), context=tf.constant(contexts))
    in_memory = qa.answer(model, questions, contexts)  # the serving code, on the Keras model
    evaluated = kmtl.evaluation.predict_task(model, qa, examples["qa"][:4], model.preprocessor)  # kmtl evaluate's
    assert [a.decode() for a in served["qa_answer"].numpy()] == [a["answer"] for a in in_memory]
    assert [a["answer"] for a in in_memory[:4]] == [p["answer"] for p in evaluated]
    assert served["qa_start"].numpy().tolist() == [a["start"] for a in in_memory]
    assert served["qa_start"].numpy().tolist()[:4] == [p["start"] for p in evaluated]
    assert served["qa_end"].numpy().tolist()[-1] == -1 and served["qa_answer"].numpy()[-1] == b""
    np.testing.assert_allclose(served["qa_score"].numpy(), [a["score"] for a in in_memory], rtol=1e-5, atol=1e-6)
    assert loaded.signatures["ids"](token_ids=tf.constant([[2, 5, 3]]), segment_ids=tf.zeros([1, 3], tf.int32),
                                    padding_mask=tf.ones([1, 3], tf.int32))["qa"].shape == [1, 3, 2]
    # the warm-up request TF Serving replays for qa is a valid one
    from tensorflow_serving.apis import prediction_log_pb2

    from kmtl.export.warmup import WARMUP_FILE

    requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
                for r in tf.data.TFRecordDataset(str(path / "assets.extra" / WARMUP_FILE))]
    [request] = [r for r in requests if r.model_spec.signature_name == "qa"]
    replay = loaded.signatures["qa"](**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    assert replay["qa_answer"].shape == [2]
    # kmtl predict --signature qa: JSON objects or 'question<TAB>context' lines
    from kmtl.errors import KmtlError
    from kmtl.serving.predict import predict_lines

    rows = predict_lines(path, [f"{questions[0]}\t{CONTEXT}", {"question": questions[1], "context": CONTEXT}],
                         signature="qa")
    assert [r["qa_answer"] for r in rows] == [a["answer"] for a in in_memory[:2]]
    assert rows[0]["question"] == questions[0] and rows[0]["context"] == CONTEXT
    with pytest.raises(KmtlError, match=r"input 1: signature 'qa' needs .*'question<TAB>context'"):
        predict_lines(path, ["no tab here"], signature="qa")


def test_keras_round_trip_keeps_the_task_and_outputs(trained, tmp_path):
    import keras

    model, examples, _, _ = trained
    model.save(tmp_path / "qa.keras")
    loaded = keras.saving.load_model(tmp_path / "qa.keras")
    task = loaded.tasks[0]
    assert isinstance(task, SpanQA) and (task.max_query_length, task.doc_stride) == (8, None)
    x, _ = next(iter(kmtl.data.eval_dataset(model.tasks[0], model.tasks, examples["qa"][:3], model.preprocessor)))
    np.testing.assert_allclose(loaded(x)["qa"], model(x)["qa"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ real SQuAD text
def test_real_squad_answers_map_to_pieces_and_back(shared_data, tiny):
    """The first 300 training questions of SQuAD v1.1: every answer is whole in some window and
    maps back to characters covering it; word widening changes few answers."""
    from kmtl.data.sources import SquadSource
    from kmtl.tasks.span_qa import normalize_answer

    examples = SquadSource(shared_data / "squad_v1.1" / "train-v1.1.first11articles.json").read()[:300]
    task = SpanQA("qa")
    answers = task.encode_labels(examples)
    pre = tiny.preprocessor(384)
    encode = tf.function(lambda q, c, a: encode_windows(pre, q, c, a))
    out = {k: v.numpy() for k, v in encode(tf.constant([ex.text for ex in examples]),
                                           tf.constant([ex.text_pair for ex in examples]), tf.constant(answers)).items()}
    widened = 0
    for index, ex in enumerate(examples):
        rows = [r for r in np.flatnonzero(out["example"] == index) if out["positions"][r, 0] > 0]
        assert rows, ex.where
        first, last = out["positions"][rows[0]]
        start, end = out["byte_start"][rows[0], first], out["byte_end"][rows[0], last]
        assert start <= answers[index, 0] and end >= answers[index, 1], ex.where
        recovered = ex.text_pair.encode()[start:end].decode()
        widened += normalize_answer(recovered) != normalize_answer(ex.label[0][1])
    assert widened <= 1  # answers that start or end inside a tokenizer word ("1990" in "1990s"): none today


def test_a_trained_qa_head_carries_over_when_tasks_are_added_later(trained):
    """``init_from`` (`kmtl.training.warm_start`): the QA head and the encoder carry over to a
    model with more tasks (a relation task and a masked-LM auxiliary task added), whose QA
    answers are then the old model's."""
    from kmtl.tasks import MaskedLM, Relation
    from kmtl.training.warm_start import warm_start

    old, examples, _, _ = trained
    tasks = [SpanQA("qa", max_query_length=8), Classification("sent", ["neg", "pos"]),
             Relation("rel", ["Cause-Effect(e1,e2)", "Other"]), MaskedLM("mlm")]
    model = kmtl.build_model(tiny_encoder(seed=3), tasks, max_length=24)
    done = warm_start(model, old)
    assert done["heads"] == ["qa", "sent"] and any(p.startswith("rel") for p in done["fresh"])
    x, _ = next(iter(kmtl.data.eval_dataset(tasks[0], model.tasks, examples["qa"][:3], model.preprocessor)))
    old_x, _ = next(iter(kmtl.data.eval_dataset(old.tasks[0], old.tasks, examples["qa"][:3], old.preprocessor)))
    ids = ("token_ids", "segment_ids", "padding_mask")
    np.testing.assert_allclose(model.outputs_model(["qa"])({k: x[k] for k in ids})["qa"],
                               old.outputs_model(["qa"])({k: old_x[k] for k in ids})["qa"], rtol=1e-5, atol=1e-5)


def test_a_student_learns_from_a_teachers_windows(trained):
    """Distillation per window: the targets are the teacher's start/end distributions on the
    student's rows; the annealed loss at λ = 1 is the gold loss; a teacher with other windows
    is refused."""
    from kmtl.distill import TeacherTable, example_keys, with_teachers
    from kmtl.errors import KmtlError

    teacher, examples, _, _ = trained
    qa, pre = teacher.tasks[0], teacher.preprocessor
    student = kmtl.build_model(tiny_encoder(seed=4), [SpanQA("qa", max_query_length=8)], max_length=24)
    table = TeacherTable.from_model(teacher, qa, pre, student.tasks[0], student.tasks, examples["qa"][:3],
                                    student.preprocessor)
    x, _ = next(iter(kmtl.data.eval_dataset(qa, teacher.tasks, examples["qa"][:3], pre)))
    probs = tf.nn.softmax(teacher.outputs_model(["qa"])({k: x[k] for k in ("token_ids", "segment_ids",
                                                                              "padding_mask")})["qa"], axis=1)
    at = {key: i for i, key in enumerate(table.keys)}  # identical windows share a key (questions cut to 8 pieces)
    rows = [at[key] for key in example_keys(x).numpy()]
    assert table.values.shape == (len(table.keys), 24, 2) and len(rows) == 3 * 14 > len(table.keys)
    np.testing.assert_allclose(table.values[rows, :x["token_ids"].shape[1]], probs.numpy(), atol=1e-5)
    data = kmtl.data.mixture(student.tasks, {"qa": examples["qa"][:3]}, student.preprocessor, batch_size=4, seed=0)
    x, y, w = next(iter(with_teachers(data, student.tasks, {"qa": table})))
    logits = student(x)["qa"]
    gold = student.tasks[0].per_example_loss(y["qa"]["gold"], logits)
    np.testing.assert_allclose(student.tasks[0].distillation_loss(y["qa"], logits, 1.0), gold, rtol=1e-5, atol=1e-5)
    assert not np.allclose(student.tasks[0].distillation_loss(y["qa"], logits, 0.0), gold)
    longer = kmtl.build_model(tiny_encoder(seed=4), [SpanQA("qa", max_query_length=8)], max_length=32)
    with pytest.raises(KmtlError, match="other windows"):
        TeacherTable.from_model(teacher, qa, pre, longer.tasks[0], longer.tasks, examples["qa"][:3], longer.preprocessor)
