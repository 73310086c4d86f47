"""Task kinds: label inference and encoding, input checks, decoding, dev metrics, configs.

No model is trained here: everything runs on hand-made examples, logits and single head layers.
"""

import math

import keras
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

import kmtl.tasks
from kmtl.data import Example
from kmtl.errors import DataError
from kmtl.tasks import (
    Classification,
    MultiLabelClassification,
    PairClassification,
    PairRegression,
    Regression,
    Tagging,
    bio_labels,
    entities_from_tags,
)


def ex(text="some text", label=None, where="train.tsv:2", **kw):
    return Example(text=text, label=label, where=where, **kw)


def pair(label=None, where="train.tsv:2", text="first", text_pair="second"):
    return Example(text=text, text_pair=text_pair, label=label, where=where)


def sent(tokens, tags=None, where="train.conll:1"):
    return Example(tokens=tuple(tokens), label=None if tags is None else tuple(tags), where=where)


# --------------------------------------------------------------------------- fit_labels
@pytest.mark.parametrize("cls", [Classification, PairClassification])
def test_classification_fit_labels_sorted(cls):
    task = cls("t")
    task.fit_labels([pair("pos"), pair("neutral"), pair("neg"), pair("pos")])
    assert task.labels == ["neg", "neutral", "pos"]
    assert task.num_outputs == 3


def test_fit_labels_keeps_given_labels():
    task = Classification("t", labels=["pos", "neg"])
    task.fit_labels([ex(label="zzz"), ex(label="aaa")])
    assert task.labels == ["pos", "neg"]


def test_fit_labels_without_any_label_is_a_data_error():
    task = Classification("t")
    with pytest.raises(DataError, match="no labels found"):
        task.fit_labels([ex(label=None), ex(label=None)])


def test_num_outputs_needs_labels():
    with pytest.raises(ValueError, match="fit_labels"):
        _ = Classification("t").num_outputs


def test_multilabel_fit_labels_from_tuples_and_strings():
    task = MultiLabelClassification("t")
    task.fit_labels([ex(label=("tech", "sports")), ex(label="politics"), ex(label=()), ex(label=("tech",))])
    assert task.labels == ["politics", "sports", "tech"]


def test_regression_fit_labels_sets_the_initial_bias_to_the_mean_score():
    task = Regression("r")
    task.fit_labels([ex(label="1.5"), ex(label="3")])
    assert task.labels is None
    assert task.num_outputs == 1
    assert task.initial_bias == pytest.approx(2.25)
    head = task.build_head({"pooled": keras.Input((4,))})
    layer = head._keras_history.operation
    assert layer.name == "r" and float(layer.bias.numpy()[0]) == pytest.approx(2.25)


def test_tagging_fit_labels_puts_o_first():
    task = Tagging("ner")
    task.fit_labels([
        sent(["john", "lives", "in", "paris"], ["B-PER", "O", "O", "B-LOC"]),
        sent(["new", "york"], ["B-LOC", "I-LOC"]),
    ])
    assert task.labels == ["O", "B-LOC", "B-PER", "I-LOC"]


def test_tagging_fit_labels_without_o_is_sorted():
    task = Tagging("pos")
    task.fit_labels([sent(["the", "cat", "sat"], ["DT", "NN", "VB"]), sent(["a"], ["DT"])])
    assert task.labels == ["DT", "NN", "VB"]


def test_tagging_fit_labels_keeps_given_order():
    task = Tagging("ner", labels=["B-PER", "I-PER", "O"])
    task.fit_labels([sent(["john"], ["B-PER"])])
    assert task.labels == ["B-PER", "I-PER", "O"]


def test_fit_labels_and_encode_labels_agree_on_whitespace():
    task = Classification("t")
    examples = [ex(label="pos "), ex(label="neg")]
    task.fit_labels(examples)
    np.testing.assert_array_equal(task.encode_labels(examples), [1, 0])


# --------------------------------------------------------------------------- encode_labels
def test_classification_encode_labels():
    task = Classification("t", labels=["neg", "neutral", "pos"])
    y = task.encode_labels([ex(label="pos"), ex(label="neg"), ex(label=" neutral "), ex(label="pos")])
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [2, 0, 1, 2])


def test_pair_classification_encode_labels_numeric_labels():
    task = PairClassification("nli", labels=["0", "1"])
    np.testing.assert_array_equal(task.encode_labels([pair(1), pair("0"), pair("1")]), [1, 0, 1])


def test_multilabel_encode_labels():
    task = MultiLabelClassification("t", labels=["politics", "sports", "tech"])
    y = task.encode_labels([ex(label=("tech", "politics")), ex(label="sports"), ex(label=())])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("cls", [Regression, PairRegression])
def test_regression_encode_labels(cls):
    y = cls("r").encode_labels([pair("1.5"), pair(3), pair(" -0.25 "), pair(4.0)])
    assert y.shape == (4, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:, 0], [1.5, 3.0, -0.25, 4.0])


def test_tagging_encode_labels():
    task = Tagging("ner", labels=bio_labels(["PER", "LOC"]))
    y = task.encode_labels([sent(["john", "smith", "in", "paris"], ["B-PER", "I-PER", "O", "B-LOC"]), sent(["x"], ["O"])])
    assert len(y) == 2
    np.testing.assert_array_equal(y[0], [1, 2, 0, 3])
    np.testing.assert_array_equal(y[1], [0])
    assert y[0].dtype == np.int32


@pytest.mark.parametrize(
    "task, example",
    [
        (Classification("t", labels=["neg", "pos"]), ex(label="meh", where="train.tsv:7")),
        (PairClassification("t", labels=["no", "yes"]), pair(label="maybe", where="train.tsv:7")),
        (MultiLabelClassification("t", labels=["a", "b"]), ex(label=("a", "c"), where="train.tsv:7")),
        (Tagging("t", labels=bio_labels(["PER"])), sent(["x", "y"], ["O", "B-ORG"], where="train.tsv:7")),
    ],
    ids=["classification", "pair_classification", "multilabel", "tagging"],
)
def test_label_outside_label_set_is_a_data_error(task, example):
    good = {"classification": ex(label="neg"), "pair_classification": pair(label="no"),
            "multilabel": ex(label="a"), "tagging": sent(["x"], ["O"])}[task.kind]
    with pytest.raises(DataError) as err:
        task.encode_labels([good, example])
    assert err.value.where == "train.tsv:7"
    assert "train.tsv:7" in str(err.value)
    assert "add it to the task's `labels`" in str(err.value)
    assert task.name in str(err.value)


@pytest.mark.parametrize("bad", ["abc", None, "nan", "inf", ""])
@pytest.mark.parametrize("cls", [Regression, PairRegression])
def test_regression_non_numeric_score_is_a_data_error(cls, bad):
    with pytest.raises(DataError) as err:
        cls("r").encode_labels([pair("1.0"), pair(bad, where="dev.tsv:11")])
    assert err.value.where == "dev.tsv:11"
    assert str(err.value).startswith("dev.tsv:11: ")
    assert "not a finite number" in str(err.value)


def test_multilabel_missing_label_is_a_data_error():
    task = MultiLabelClassification("t", labels=["a"])
    with pytest.raises(DataError) as err:
        task.encode_labels([ex(label=None, where="x.tsv:3")])
    assert err.value.where == "x.tsv:3"


def test_tagging_missing_tags_is_a_data_error():
    task = Tagging("t", labels=["O"])
    with pytest.raises(DataError) as err:
        task.encode_labels([sent(["a", "b"], None, where="x.conll:9")])
    assert err.value.where == "x.conll:9"


# --------------------------------------------------------------------------- check_inputs
def test_tagging_length_mismatch_via_check_inputs():
    task = Tagging("ner", labels=bio_labels(["PER"]))
    task.check_inputs(sent(["a", "b"], ["O", "B-PER"]))  # fine
    task.check_inputs(sent(["a", "b"], None))  # unlabelled: fine
    with pytest.raises(DataError) as err:
        task.check_inputs(sent(["a", "b", "c"], ["O", "O"], where="train.conll:40"))
    assert err.value.where == "train.conll:40"
    assert "3 tokens but 2 tags" in str(err.value)


@pytest.mark.parametrize("text", ["", "   ", None])
@pytest.mark.parametrize("cls", [Classification, MultiLabelClassification, Regression])
def test_empty_text_via_check_inputs(cls, text):
    task = cls("t")
    task.check_inputs(ex(text="ok"))
    with pytest.raises(DataError) as err:
        task.check_inputs(ex(text=text, where="train.tsv:5"))
    assert err.value.where == "train.tsv:5"
    assert "'text'" in str(err.value)


@pytest.mark.parametrize("cls", [PairClassification, PairRegression])
def test_pair_tasks_need_text_pair(cls):
    task = cls("t")
    task.check_inputs(pair())
    with pytest.raises(DataError, match="'text_pair'") as err:
        task.check_inputs(pair(text_pair=" ", where="p.tsv:4"))
    assert err.value.where == "p.tsv:4"
    with pytest.raises(DataError, match="'text'"):
        task.check_inputs(pair(text=""))


def test_tagging_needs_tokens():
    with pytest.raises(DataError, match="'tokens'"):
        Tagging("t").check_inputs(Example(text="a sentence", where="x:1"))


# --------------------------------------------------------------------------- decode
@pytest.mark.parametrize("cls", [Classification, PairClassification])
def test_classification_decode(cls):
    task = cls("t", labels=["neg", "neutral", "pos"])
    logits = np.array([[0.0, 1.0, 3.0], [2.0, 2.0 - math.log(2), 2.0 - math.log(4)]])
    out = task.decode(logits)
    assert [p["label"] for p in out] == ["pos", "neg"]
    for p in out:
        assert list(p["probabilities"]) == ["neg", "neutral", "pos"]
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
    z = np.exp([0.0, 1.0, 3.0])
    assert out[0]["probabilities"]["pos"] == pytest.approx(z[2] / z.sum())
    # exp(2), exp(2)/2, exp(2)/4 -> 4/7, 2/7, 1/7
    assert [out[1]["probabilities"][l] for l in task.labels] == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_classification_decode_large_logits_are_stable():
    out = Classification("t", labels=["a", "b"]).decode(np.array([[1000.0, 0.0]]))
    assert out[0]["label"] == "a"
    assert out[0]["probabilities"]["a"] == pytest.approx(1.0)
    assert not math.isnan(out[0]["probabilities"]["b"])


def test_multilabel_decode_threshold():
    task = MultiLabelClassification("t", labels=["a", "b", "c"])
    # logit 0 -> p 0.5 (counts: >= threshold), log(3) -> 0.75, -log(3) -> 0.25
    out = task.decode(np.array([[0.0, math.log(3), -math.log(3)], [-5.0, -5.0, -5.0]]))
    assert out[0]["labels"] == ["a", "b"]
    assert out[1]["labels"] == []
    assert out[0]["probabilities"] == pytest.approx({"a": 0.5, "b": 0.75, "c": 0.25})

    strict = MultiLabelClassification("t", labels=["a", "b", "c"], threshold=0.7)
    assert strict.decode(np.array([[0.0, math.log(3), -math.log(3)]]))[0]["labels"] == ["b"]


@pytest.mark.parametrize("cls", [Regression, PairRegression])
def test_regression_decode(cls):
    out = cls("r").decode(np.array([[1.25], [-3.0], [0.0]], dtype=np.float32))
    assert out == [{"score": 1.25}, {"score": -3.0}, {"score": 0.0}]


def test_tagging_decode_uses_first_pieces_and_o_for_truncated_words():
    task = Tagging("ner", labels=["O", "B-PER", "I-PER", "B-LOC"])
    examples = [sent(["john", "smith", "in", "paris"]), sent(["paris"])]
    pieces, n = 7, len(task.labels)
    logits = np.zeros((2, pieces, n))

    def vote(row, pos, label):
        logits[row, pos, task.labels.index(label)] = 5.0

    # row 0: [CLS] john smi ##th in [SEP] <pad>; "paris" truncated away (first_piece -1)
    vote(0, 0, "B-LOC")  # [CLS]: must be ignored
    vote(0, 1, "B-PER")
    vote(0, 2, "I-PER")
    vote(0, 3, "B-LOC")  # continuation piece of "smith": must be ignored
    vote(0, 4, "O")
    vote(0, 5, "B-PER")  # [SEP]: ignored
    # row 1: [CLS] paris [SEP]
    vote(1, 1, "B-LOC")
    first_piece = np.array([[1, 2, 4, -1], [1, -1, -1, -1]])
    out = task.decode(logits, examples, first_piece=first_piece)
    assert out[0]["tags"] == ["B-PER", "I-PER", "O", "O"]
    assert out[0]["entities"] == [{"type": "PER", "start": 0, "end": 2, "text": "john smith"}]
    assert out[1]["tags"] == ["B-LOC"]
    assert out[1]["entities"] == [{"type": "LOC", "start": 0, "end": 1, "text": "paris"}]


def test_tagging_decode_words_beyond_first_piece_width_are_o():
    task = Tagging("pos", labels=["DT", "NN"])  # no "O": the outside label is labels[0]
    logits = np.zeros((1, 4, 2))
    logits[0, :, 1] = 1.0  # NN everywhere
    out = task.decode(logits, [sent(["a", "b", "c"])], first_piece=np.array([[1, 2]]))
    assert out[0]["tags"] == ["NN", "NN", "DT"]


# --------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("cls", [Classification, PairClassification])
def test_classification_evaluate(cls):
    task = cls("t", labels=["a", "b", "c"])
    gold = [pair(l) for l in ["a", "a", "b", "c"]]
    pred = [{"label": l} for l in ["a", "b", "b", "a"]]
    m = task.evaluate(gold, pred)
    assert m["accuracy"] == pytest.approx(0.5)
    # a: tp 1 fp 1 fn 1 -> F1 1/2; b: tp 1 fp 1 fn 0 -> P 1/2 R 1 F1 2/3; c: tp 0 -> 0
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_classification_evaluate_perfect():
    task = Classification("t", labels=["a", "b"])
    m = task.evaluate([ex(label="a"), ex(label="b")], [{"label": "a"}, {"label": "b"}])
    assert m == {"accuracy": 1.0, "macro_f1": 1.0}


def test_multilabel_evaluate():
    task = MultiLabelClassification("t", labels=["a", "b", "c"])
    gold = [ex(label=("a", "b")), ex(label=("c",)), ex(label=())]
    pred = [{"labels": ["a"]}, {"labels": ["c"]}, {"labels": ["b"]}]
    m = task.evaluate(gold, pred)
    # micro: tp 2 (a, c), fp 1 (b row 3), fn 1 (b row 1) -> P 2/3 R 2/3 F1 2/3
    assert m["micro_f1"] == pytest.approx(2 / 3)
    # per label: a F1 1, b tp 0 -> 0, c F1 1
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["subset_accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("cls", [Regression, PairRegression])
def test_regression_evaluate_against_scipy(cls):
    gold_scores = [0.0, 1.0, 2.5, 4.0, 5.0]
    pred_scores = [0.5, 0.8, 3.5, 3.0, 4.9]
    m = cls("r").evaluate([pair(str(s)) for s in gold_scores], [{"score": s} for s in pred_scores])
    assert m["pearson"] == pytest.approx(pearsonr(gold_scores, pred_scores)[0])
    assert m["spearman"] == pytest.approx(spearmanr(gold_scores, pred_scores)[0])
    # ranks: gold 1..5, pred 1 0 ... -> one swap (ranks 3,4): rho = 1 - 6*2/(5*24) = 0.9
    assert m["spearman"] == pytest.approx(0.9)
    assert m["mse"] == pytest.approx((0.25 + 0.04 + 1.0 + 1.0 + 0.01) / 5)


def test_regression_evaluate_constant_prediction_gives_nan_correlation():
    m = Regression("r").evaluate([ex(label=1), ex(label=2)], [{"score": 3.0}, {"score": 3.0}])
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])
    assert m["mse"] == pytest.approx((4 + 1) / 2)


def test_tagging_evaluate_entity_f1():
    task = Tagging("ner", labels=bio_labels(["PER", "LOC", "ORG"]))
    gold = [
        sent(["john", "smith", "visited", "paris", "today"], ["B-PER", "I-PER", "O", "B-LOC", "O"]),
        sent(["hello", "there"], ["O", "O"]),
    ]
    pred = [
        {"tags": ["B-PER", "I-PER", "B-ORG", "O", "O"]},  # PER correct, ORG spurious, LOC missed
        {"tags": ["O", "O"]},
    ]
    m = task.evaluate(gold, pred)
    assert m["entity_precision"] == pytest.approx(0.5)
    assert m["entity_recall"] == pytest.approx(0.5)
    assert m["entity_f1"] == pytest.approx(0.5)
    assert m["word_accuracy"] == pytest.approx(5 / 7)


def test_tagging_evaluate_partial_span_is_wrong():
    task = Tagging("ner", labels=bio_labels(["PER"]))
    gold = [sent(["a", "b", "c"], ["B-PER", "I-PER", "O"])]
    pred = [{"tags": ["B-PER", "O", "O"]}]  # boundary wrong: not a match
    m = task.evaluate(gold, pred)
    assert m["entity_f1"] == 0.0
    assert m["word_accuracy"] == pytest.approx(2 / 3)


def test_tagging_evaluate_no_predicted_entities():
    task = Tagging("ner", labels=bio_labels(["PER"]))
    m = task.evaluate([sent(["a", "b"], ["B-PER", "O"])], [{"tags": ["O", "O"]}])
    assert m["entity_precision"] == 0.0 and m["entity_recall"] == 0.0 and m["entity_f1"] == 0.0
    assert m["word_accuracy"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- BIO helpers
def test_bio_labels():
    assert bio_labels(["PER", "LOC"]) == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert bio_labels([]) == ["O"]


def test_entities_continuation_and_breaks():
    tokens = ["a", "b", "c", "d", "e", "f", "g", "h"]
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "I-PER", "B-PER", "B-PER"]
    assert entities_from_tags(tags, tokens) == [
        {"type": "PER", "start": 0, "end": 2, "text": "a b"},
        {"type": "LOC", "start": 3, "end": 5, "text": "d e"},  # I- after O starts an entity
        {"type": "PER", "start": 5, "end": 6, "text": "f"},  # different type breaks
        {"type": "PER", "start": 6, "end": 7, "text": "g"},  # B- always starts a new one
        {"type": "PER", "start": 7, "end": 8, "text": "h"},  # entity at the very end is closed
    ]


def test_entities_b_then_i_of_other_type():
    assert entities_from_tags(["B-ORG", "I-ORG", "I-LOC"], ["x", "y", "z"]) == [
        {"type": "ORG", "start": 0, "end": 2, "text": "x y"},
        {"type": "LOC", "start": 2, "end": 3, "text": "z"},
    ]


def test_entities_none():
    assert entities_from_tags(["O", "O"], ["x", "y"]) == []
    assert entities_from_tags([], []) == []


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "task",
    [
        Classification("sentiment", labels=["neg", "pos"], dropout=0.2),
        PairClassification("nli", labels=["entailment", "neutral", "contradiction"]),
        MultiLabelClassification("topics", labels=["a", "b"], threshold=0.3, dropout=0.0),
        Regression("readability", dropout=0.05),
        PairRegression("sts"),
        Tagging("ner", labels=bio_labels(["PER", "LOC"])),
    ],
    ids=lambda t: t.kind,
)
def test_from_config_round_trip(task):
    config = task.get_config()
    assert config["kind"] == task.kind
    rebuilt = kmtl.tasks.from_config(config)
    assert type(rebuilt) is type(task)
    assert rebuilt.name == task.name
    assert rebuilt.labels == task.labels
    assert rebuilt.dropout == task.dropout
    assert rebuilt.get_config() == config
    assert "kind" in config  # from_config must not consume the caller's dict


def test_from_config_keeps_threshold_and_unset_labels():
    rebuilt = kmtl.tasks.from_config(MultiLabelClassification("t", threshold=0.3).get_config())
    assert rebuilt.threshold == 0.3 and rebuilt.labels is None
    assert "labels" not in Regression("r").get_config()


def test_from_config_unknown_kind():
    with pytest.raises(ValueError, match="unknown task kind 'clf'.*classification"):
        kmtl.tasks.from_config({"kind": "clf", "name": "x"})


def test_kinds_registry():
    assert set(kmtl.tasks.KINDS) == {
        "classification", "pair_classification", "multilabel", "regression", "pair_regression", "tagging",
        "relation", "span_qa", "masked_lm",
    }


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ["Sentiment", "1task", "my-task", "", "a b", "_x", None, 3])
@pytest.mark.parametrize("cls", [Classification, Regression, Tagging])
def test_invalid_task_names(cls, name):
    with pytest.raises(ValueError, match="not valid"):
        cls(name)


@pytest.mark.parametrize("name", ["a", "sentiment", "ner_2", "x1_y"])
def test_valid_task_names(name):
    assert Classification(name).name == name


def test_duplicate_or_empty_labels():
    with pytest.raises(ValueError, match="duplicates"):
        Classification("t", labels=["a", "b", "a"])
    with pytest.raises(ValueError, match="empty"):
        Classification("t", labels=[])


def test_regression_takes_no_labels():
    with pytest.raises(ValueError, match="no labels"):
        Regression("r", labels=["a"])
