"""Tag schemes (issue 15): BIO, IOB1 and BIOES data all read as BIO with an explicit ``O``;
tags outside the scheme are errors at their file:line; a scheme not given is detected and reported."""

import numpy as np
import pytest

from kmtl.config import config_from_dict
from kmtl.data.example import Example
from kmtl.data.sources import ConllSource
from kmtl.errors import ConfigError, DataError
from kmtl.tasks import Tagging, from_config
from kmtl.tasks.tag_schemes import bio_label_set, detect_scheme, to_bio


def sent(tags, where="train.conll:1"):
    return Example(tokens=tuple(f"w{i}" for i in range(len(tags))), label=tuple(tags), where=where)


def conll(tmp_path, text, name="train.conll"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return ConllSource(path).read(), path


# --- the conversions -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme, tags, bio", [
    ("iob1", ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"], ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]),
    ("bioes", ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-ORG", "E-ORG"],
     ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC", "B-ORG", "I-ORG"]),
    ("bio", ["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    ("bio", ["O", "I-PER"], ["O", "B-PER"]),  # a stray I- begins a chunk, as conlleval reads it
    ("plain", ["NN", "VB"], ["NN", "VB"]),
])
def test_to_bio(scheme, tags, bio):
    assert to_bio(tags, scheme) == bio
    assert to_bio(bio, scheme) == bio  # BIO is a fixed point of every conversion


@pytest.mark.parametrize("sentences, scheme", [
    ([["B-PER", "I-PER", "O"], ["O"]], "bio"),
    ([["B-PER", "O"], ["O", "I-LOC"]], "iob1"),
    ([["B-PER", "E-PER", "O"]], "bioes"),
    ([["S-PER"]], "bioes"),
    ([["NN", "VB"], ["DT"]], "plain"),
])
def test_detect_scheme(sentences, scheme):
    assert detect_scheme(sentences)[0] == scheme


def test_bio_label_set_keeps_order_and_is_idempotent():
    assert bio_label_set(["O", "I-PER", "I-LOC"], "iob1") == ["O", "I-PER", "B-PER", "I-LOC", "B-LOC"]
    assert bio_label_set(["B-PER", "I-PER", "E-PER", "S-PER", "O"], "bioes") == ["B-PER", "I-PER", "O"]
    assert bio_label_set(["B-PER", "I-PER"], "bio") == ["B-PER", "I-PER", "O"]  # the outside label added
    labels = ["O", "B-LOC", "B-PER", "I-LOC"]
    assert bio_label_set(labels, "iob1") == labels and bio_label_set(labels, "bioes") == labels


# --- the task reads every scheme as BIO ------------------------------------------------------


def test_iob1_file_is_detected_reported_and_read_as_bio(tmp_path):
    examples, path = conll(tmp_path, "John I-PER\nSmith I-PER\nvisited O\nParis I-LOC\n\nBerlin I-LOC\nBonn B-LOC\n")
    task = Tagging("ner")
    task.fit_labels(examples)
    assert task.tag_scheme == "iob1"
    assert task.detected_scheme.startswith(f"task 'ner': tag scheme iob1 detected ('I-PER' begins a chunk "
                                           f"({path}:1, word 1)); read as BIO")
    assert task.labels == ["O", "B-LOC", "B-PER", "I-PER"]
    y = task.encode_labels(examples)
    np.testing.assert_array_equal(y[0], [2, 3, 0, 1])   # B-PER I-PER O B-LOC
    np.testing.assert_array_equal(y[1], [1, 1])         # B-LOC B-LOC: two chunks, as IOB1 means
    gold_as_predicted = [{"tags": to_bio(ex.label, "iob1")} for ex in examples]
    assert task.evaluate(examples, gold_as_predicted)["entity_f1"] == 1.0  # gold read as BIO too


def test_bioes_given_scheme_and_labels_become_bio():
    task = Tagging("ner", labels=["O", "B-PER", "I-PER", "E-PER", "S-PER"], tag_scheme="bioes")
    assert task.labels == ["O", "B-PER", "I-PER"]
    y = task.encode_labels([sent(["S-PER", "O", "B-PER", "E-PER"])])
    np.testing.assert_array_equal(y[0], [1, 0, 1, 2])
    assert task.detected_scheme is None  # given, not detected


@pytest.mark.parametrize("text, scheme, bad_line, tag", [
    ("John B-PER\nlives O\nhere X-WEIRD\n", None, 3, "X-WEIRD"),       # unknown prefix beside BIO tags
    ("John B-PER\nSmith E-PER\n", "bio", 2, "E-PER"),                  # BIOES tag in a BIO task
    ("John B-PER\n\nParis U-LOC\n", "bioes", 3, "U-LOC"),              # BILOU is not BIOES
])
def test_tag_outside_the_scheme_is_a_data_error_at_its_line(tmp_path, text, scheme, bad_line, tag):
    examples, path = conll(tmp_path, text)
    with pytest.raises(DataError) as info:
        Tagging("ner", tag_scheme=scheme).fit_labels(examples)
    assert info.value.where == f"{path}:{bad_line}"
    assert f"tag {tag!r} is not a" in info.value.message and "tag_scheme" in info.value.message


def test_dev_tags_are_checked_when_encoded(tmp_path):
    task = Tagging("ner", tag_scheme="bio")
    task.fit_labels([sent(["B-PER", "O"])])
    with pytest.raises(DataError, match=r"dev.conll:8: word 2 \('w1'\) of task 'ner': tag 'Z-PER'"):
        task.encode_labels([sent(["O", "Z-PER"], where="dev.conll:7")])


def test_outside_label_is_explicit_without_o_in_the_data():
    task = Tagging("ner")
    task.fit_labels([sent(["B-PER", "I-PER"]), sent(["B-LOC"])])
    assert task.labels == ["O", "B-LOC", "B-PER", "I-PER"] and task.outside_label == "O"
    # a word cut off by max_length (first piece -1) is predicted O, not labels[0]
    logits = np.zeros((1, 4, 4), np.float32)
    logits[0, 1, 2] = 5.0  # piece 1: B-PER
    out = task.decode(logits, [sent(["B-PER", "B-PER"])], first_piece=np.array([[1, -1]]))
    assert out[0]["tags"] == ["B-PER", "O"]


def test_a_dataset_outside_tag_is_read_as_o():
    task = Tagging("ner", outside_tag="OUT")
    task.fit_labels([sent(["B-PER", "OUT", "I-LOC"])])
    assert task.tag_scheme == "iob1" and task.labels == ["O", "B-LOC", "B-PER"]
    np.testing.assert_array_equal(task.encode_labels([sent(["OUT", "B-PER"])])[0], [0, 2])


def test_plain_tags_stay_as_they_are():
    task = Tagging("pos")
    task.fit_labels([sent(["DT", "NN"]), sent(["VB"])])
    assert task.tag_scheme == "plain" and task.labels == ["DT", "NN", "VB"]


def test_config_round_trip_keeps_scheme_and_label_order():
    task = Tagging("ner")
    task.fit_labels([sent(["I-PER", "O", "I-LOC", "I-LOC"])])
    again = from_config(task.get_config())
    assert (again.labels, again.tag_scheme, again.outside_tag) == (task.labels, "iob1", "O")
    legacy = from_config({"kind": "tagging", "name": "ner", "labels": ["B-PER", "I-PER"], "dropout": 0.1})
    assert legacy.labels == ["B-PER", "I-PER"]  # saved before tag schemes: the head's labels stay


# --- the config ------------------------------------------------------------------------------


def test_config_tag_scheme_and_outside_tag_reach_the_task(tmp_path, capsys):
    from kmtl.training.trainer import make_tasks

    examples, path = conll(tmp_path, "John S-PER\nlives OUT\n")
    data = {"tasks": [{"name": "ner", "kind": "tagging", "tag_scheme": "bioes", "outside_tag": "OUT",
                       "train": {"format": "conll", "path": str(path)}}]}
    lines = []
    [task] = make_tasks(config_from_dict(data, tmp_path), {"ner": examples}, echo=lines.append)
    assert (task.tag_scheme, task.outside_tag, task.labels, lines) == ("bioes", "OUT", ["O", "B-PER"], [])
    del data["tasks"][0]["tag_scheme"]
    [task] = make_tasks(config_from_dict(data, tmp_path), {"ner": examples}, echo=lines.append)
    assert task.tag_scheme == "bioes" and lines == [task.detected_scheme]


@pytest.mark.parametrize("change, expected", [
    ({"tag_scheme": "bilou"}, "tasks[0].tag_scheme: 'bilou' is not one of: bio, iob1, bioes, plain"),
    ({"kind": "classification", "tag_scheme": "bio",
      "train": {"format": "tsv", "path": "train.tsv", "text": "sentence"}},
     "tasks[0].tag_scheme: only tagging tasks read tag_scheme (this task is classification)"),
    ({"outside_tag": "B-O"}, "tasks[0].outside_tag: 'B-O' cannot be the outside tag"),
])
def test_config_tag_scheme_errors(tmp_path, change, expected):
    (tmp_path / "train.conll").write_text("a O\n")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\tb\n")
    task = {"name": "ner", "kind": "tagging", "train": {"format": "conll", "path": "train.conll"}, **change}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"tasks": [task]}, tmp_path)
    assert expected in str(info.value)
