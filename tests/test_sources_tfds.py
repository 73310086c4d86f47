"""Tests of TfdsSource, offline: ``tfds.testing.mock_data`` replaces the data (no network)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kmtl.data.sources import TfdsSource
from kmtl.errors import ConfigError, DataError

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fails any attempt to open a Python socket, to prove the tests stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def records_dataset(records):
    """An ``as_dataset_fn`` for ``mock_data`` that yields the given feature dicts."""

    def as_dataset(self, split, **kwargs):
        spec = self.info.features.get_tensor_spec()
        records_ = records(self.info.features) if callable(records) else records
        return tf.data.Dataset.from_generator(lambda: iter(records_), output_signature=spec)

    return as_dataset


def test_glue_sst2_random_examples_get_label_names():
    with tfds.testing.mock_data(num_examples=5):
        src = TfdsSource("glue/sst2", "train", text="sentence", label="label", data_dir="/nowhere")
        examples = src.read()
    assert len(examples) == 5
    assert {e.label for e in examples} <= {"negative", "positive"}
    assert all(isinstance(e.text, str) and e.text == e.text.strip() and e.text for e in examples)
    assert [e.where for e in examples[:2]] == ["tfds:glue/sst2/train#0", "tfds:glue/sst2/train#1"]
    assert src.describe() == "tfds:glue/sst2/train"


def test_glue_sst2_label_mapping_and_unlabelled_test_split():
    records = [
        {"idx": 0, "sentence": "a great film", "label": 1},
        {"idx": 1, "sentence": "dull", "label": 0},
        {"idx": 2, "sentence": "no label here", "label": -1},  # GLUE test splits
    ]
    with tfds.testing.mock_data(as_dataset_fn=records_dataset(records)):
        examples = TfdsSource("glue/sst2", "test", text="sentence", label="label").read()
    assert [(e.text, e.label) for e in examples] == [
        ("a great film", "positive"),
        ("dull", "negative"),
        ("no label here", None),
    ]


def test_glue_stsb_pair_and_float_score():
    records = [{"idx": 0, "sentence1": "A man.", "sentence2": "A person.", "label": 2.4}]
    with tfds.testing.mock_data(as_dataset_fn=records_dataset(records)):
        (example,) = TfdsSource(
            "glue/stsb", "validation", text="sentence1", text_pair="sentence2", label="label"
        ).read()
    assert (example.text, example.text_pair, example.label) == ("A man.", "A person.", 2.4)


def test_ag_news_subset_with_limit():
    with tfds.testing.mock_data(num_examples=5):
        examples = TfdsSource("ag_news_subset", "test", text="description", label="label").read()
        limited = TfdsSource(
            "ag_news_subset", "test", text="description", label="label", limit=3
        ).read()
    assert len(examples) == 5
    assert {e.label for e in examples} <= {"World", "Sports", "Business", "Sci/Tech"}
    assert limited == examples[:3]


def test_conll2003_tokens_and_tag_names():
    sentences = [
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]

    def records(features):
        ner = features["ner"].feature
        return [
            {"tokens": tokens, "pos": [0] * len(tokens), "chunks": [0] * len(tokens),
             "ner": [ner.str2int(tag) for tag in tags]}
            for tokens, tags in sentences
        ]

    with tfds.testing.mock_data(as_dataset_fn=records_dataset(records)):
        examples = TfdsSource("conll2003", "train", tokens="tokens", tags="ner").read()
    assert [(e.tokens, e.label) for e in examples] == [
        (tuple(tokens), tuple(tags)) for tokens, tags in sentences
    ]
    assert examples[1].where == "tfds:conll2003/train#1"
    assert examples[0].text is None


def test_conll2003_tokens_and_tags_of_different_lengths():
    def records(features):
        return [{"tokens": ["EU", "rejects"], "pos": [0, 0], "chunks": [0, 0], "ner": [0]}]

    with tfds.testing.mock_data(as_dataset_fn=records_dataset(records)):
        with pytest.raises(DataError) as info:
            TfdsSource("conll2003", "train", tokens="tokens", tags="ner").read()
    assert info.value.where == "tfds:conll2003/train#0"
    assert "2 tokens but 1 tags" in info.value.message
    assert "one entry per word" in info.value.message


def test_missing_feature():
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(DataError) as info:
            TfdsSource("glue/sst2", "train", text="text", label="label").read()
    assert info.value.where == "tfds:glue/sst2/train"
    assert "no feature 'text'" in info.value.message
    assert "features present: ['idx', 'label', 'sentence']" in info.value.message


def test_unknown_dataset():
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(DataError) as info:
            TfdsSource("no_such_dataset_xyz", "train", text="text").read()
    assert info.value.where == "tfds:no_such_dataset_xyz"
    assert "no TFDS dataset named" in info.value.message and "catalog" in info.value.message


def test_config_errors():
    with pytest.raises(ConfigError, match="give the feature with the text"):
        TfdsSource("glue/sst2", "train", label="label")
    with pytest.raises(ConfigError, match="tags= needs tokens="):
        TfdsSource("conll2003", "train", text="x", tags="ner")
    with pytest.raises(ConfigError, match="not both"):
        TfdsSource("conll2003", "train", tokens="tokens", tags="ner", label="ner")
    with pytest.raises(ConfigError, match="positive number"):
        TfdsSource("glue/sst2", "train", text="sentence", limit=0)


def test_tfds_is_imported_lazily():
    code = (
        "import sys, kmtl.data.sources as s; "
        "s.TfdsSource('glue/sst2', 'train', text='sentence'); "
        "assert 'tensorflow_datasets' not in sys.modules"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
