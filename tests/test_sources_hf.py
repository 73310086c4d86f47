"""Hugging Face `datasets` tables as a source: label names, tags, errors, and fit end to end."""

import numpy as np
import pytest

datasets = pytest.importorskip("datasets", reason="the `datasets` package is not installed (pip install datasets)")

import keras  # noqa: E402

import kmtl  # noqa: E402
from kmtl.backbone import tiny_encoder  # noqa: E402
from kmtl.data.sources import HuggingFaceSource  # noqa: E402
from kmtl.errors import DataError  # noqa: E402


def _sentiment():
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"sentence": ["a fine film", "dull", "great acting", "no"],
                                       "label": [1, 0, 1, -1]}, features=features)


def _ner():
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))})
    return datasets.Dataset.from_dict({"tokens": [["john", "smith", "ran"], ["it", "rained"]],
                                       "ner_tags": [[1, 2, 0], [0, 0]]}, features=features)


def test_class_labels_become_names_and_tags_become_tuples():
    rows = HuggingFaceSource(_sentiment(), text="sentence", label="label").read()
    assert [r.label for r in rows] == ["positive", "negative", "positive", None]
    assert rows[0].text == "a fine film" and rows[0].where.endswith("#0")
    ner = HuggingFaceSource(_ner(), tokens="tokens", tags="ner_tags", name="toy").read()
    assert ner[0].tokens == ("john", "smith", "ran") and ner[0].label == ("B-PER", "I-PER", "O")
    assert ner[1].where == "hf:toy#1"


def test_bad_columns_and_a_dataset_dict_are_clear_errors():
    with pytest.raises(DataError, match=r"no column\(s\) \['text'\]; the dataset has \['sentence', 'label'\]"):
        HuggingFaceSource(_sentiment(), text="text", label="label")
    with pytest.raises(TypeError, match="pick a split"):
        HuggingFaceSource({"train": _sentiment()}, text="sentence")


def test_a_hugging_face_table_trains_through_the_kmtl_pipeline():
    tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
             kmtl.tasks.Tagging("ner", ["O", "B-PER", "I-PER"])]
    train = {"sentiment": HuggingFaceSource(_sentiment().select(range(3)), text="sentence", label="label").read(),
             "ner": HuggingFaceSource(_ner(), tokens="tokens", tags="ner_tags").read()}
    encoder = tiny_encoder(seed=0)
    model = kmtl.build_model(encoder, tasks)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = kmtl.data.mixture(tasks, train, model.preprocessor, batch_size=4)
    history = model.fit(data, epochs=1, steps_per_epoch=2, verbose=0).history
    assert np.isfinite(history["sentiment_loss"][0]) and np.isfinite(history["ner_loss"][0])
