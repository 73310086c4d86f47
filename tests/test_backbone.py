"""Backbones: the offline MiniLM (a Hugging Face folder), local keras-hub preset folders, tiny."""

import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import load_backbone, minilm_path
from kmtl.errors import KmtlError


def _encode(encoder, texts):
    x = encoder.preprocessor(16).encode_text(tf.constant(texts))
    return encoder.backbone(x)["sequence_output"].numpy(), x


def test_minilm_loads_offline_from_its_package_as_a_hugging_face_folder():
    path = minilm_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    encoder = load_backbone("minilm-l6")
    assert encoder.backbone.hidden_dim == 384 and encoder.backbone.num_layers == 6
    assert encoder.tokenizer.vocabulary_size() == 30522
    # uncased WordPiece: known ids of bert-base-uncased's vocabulary
    x = encoder.preprocessor(8).encode_text(tf.constant(["Hello world"]))
    assert x["token_ids"].numpy()[0, :4].tolist() == [101, 7592, 2088, 102]
    # the same folder given as a path loads the same weights
    same = load_backbone(str(path))
    a, _ = _encode(encoder, ["a quiet film"])
    b, _ = _encode(same, ["a quiet film"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # pretrained, not random: related sentences are closer than unrelated ones
    vec = lambda t: _encode(encoder, [t])[0][0].mean(0)  # noqa: E731
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
    cat, kitten, tax = vec("a cat sits on the mat"), vec("a kitten is sitting on a rug"), vec("quarterly tax filing deadline")
    assert cos(cat, kitten) > cos(cat, tax) + 0.1


def test_local_keras_hub_preset_folder_round_trips(tiny, tmp_path):
    tiny.backbone.save_to_preset(str(tmp_path))
    tiny.tokenizer.save_to_preset(str(tmp_path))
    loaded = load_backbone(str(tmp_path))
    a, xa = _encode(tiny, ["the new story"])
    b, xb = _encode(loaded, ["the new story"])
    assert np.array_equal(xa["token_ids"].numpy(), xb["token_ids"].numpy())
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(KmtlError, match="does not exist"):
        load_backbone(str(tmp_path / "nope"))


def test_tiny_is_deterministic():
    a = kmtl.load_backbone("tiny", seed=3).backbone.get_weights()
    b = kmtl.load_backbone("tiny", seed=3).backbone.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_training_from_a_tfds_source_offline(tmp_path):
    """A config naming TFDS datasets trains under tfds.testing.mock_data (no network)."""
    import tensorflow_datasets as tfds

    from kmtl.config import config_from_dict
    from kmtl.training import train

    data = {
        "name": "tfds",
        "backbone": "tiny",
        "max_length": 32,
        "tasks": [
            {"name": "sst2", "kind": "classification",
             "train": {"format": "tfds", "name": "glue/sst2", "split": "train", "text": "sentence", "label": "label"},
             "dev": {"format": "tfds", "name": "glue/sst2", "split": "validation", "text": "sentence", "label": "label"}},
            {"name": "news", "kind": "classification",
             "train": {"format": "tfds", "name": "ag_news_subset", "split": "train", "text": "description",
                       "label": "label"}},
        ],
        "training": {"epochs": 1},
        "output_dir": str(tmp_path / "runs"),
        "export": {"enabled": False},
    }
    with tfds.testing.mock_data(num_examples=12):
        result = train(config_from_dict(data, tmp_path), verbose=0)
    assert result.metrics["sst2"]["examples"] == 12
    assert {t.name: t.labels for t in result.model.tasks}["news"] == sorted(
        ["Business", "Sci/Tech", "Sports", "World"]
    )
