"""TensorFlow Datasets: examples from a TFDS dataset split, fields mapped by feature name."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, require_examples, require_text
from kmtl.errors import ConfigError, DataError
from kmtl.registry import FolderPath

CATALOG = "https://www.tensorflow.org/datasets/catalog/overview"


class TfdsSource(Source):
    """Examples from a TensorFlow Datasets split.

    The split is loaded with ``tfds.load(name, split=split, data_dir=data_dir)`` (which
    downloads and prepares it on first use, into ``data_dir`` or ``~/tensorflow_datasets``)
    and read with ``tfds.as_numpy``. Byte strings are decoded as UTF-8, ``ClassLabel``
    features become their label *names* (e.g. ``'positive'``; ``-1``, the "no label" of GLUE
    test splits, becomes ``None``), a ``Sequence(ClassLabel)`` becomes a tuple of names, and
    float or int features (e.g. a regression score) stay numbers. ``where`` is
    ``"tfds:NAME/SPLIT#INDEX"``. ``tensorflow_datasets`` is imported only when :meth:`read`
    runs, since it is slow to import.

    Offline use: point ``data_dir`` at a folder where the dataset was already prepared (no
    network is needed then; ``tfds.load`` does not try GCS by default). In tests, wrap the
    call in ``tfds.testing.mock_data(num_examples=N)``: it patches GCS lookups to fail,
    makes ``download_and_prepare`` a no-op, takes the features from the dataset's code, and
    yields random examples (or your own through its ``as_dataset_fn`` argument).

    Args:
        name: the TFDS name, with its config if any, e.g. ``"glue/sst2"``, ``"conll2003"``.
        split: the split, e.g. ``"train"``, ``"validation"``, ``"train[:10%]"``.
        text: the feature with the text (sentence-level tasks).
        text_pair: the feature with the second text (pair tasks).
        label: the feature with the label.
        tokens: the feature with the words of a sentence (a sequence of strings).
        tags: the feature with one tag per token (becomes ``label``); give ``tokens`` too.
        data_dir: where TFDS keeps its data; ``None`` for the TFDS default.
        limit: read at most this many examples (``None``: all).

    Example:
        >>> TfdsSource("glue/sst2", "train", text="sentence", label="label").read()[0]
        Example(text='hide new secretions from the parental units', label='negative',
                where='tfds:glue/sst2/train#0')
        >>> TfdsSource("conll2003", "train", tokens="tokens", tags="ner", limit=100)
    """

    format = "tfds"
    choice_order = 4
    fields = {"text": ("text",), "text_pair": ("text_pair",), "label": ("label",), "tokens": ("tokens",),
              "tags": ("tags",)}
    config_keys = {"limit": None}  # kmtl passes the task's `limit` (kmtl.registry)

    def __init__(
        self,
        name: str,
        split: str,
        text: Optional[str] = None,
        text_pair: Optional[str] = None,
        label: Optional[str] = None,
        tokens: Optional[str] = None,
        tags: Optional[str] = None,
        data_dir: Optional[FolderPath] = None,
        limit: Optional[int] = None,
    ):
        self.name = name
        self.split = split
        self.fields = {
            field: key
            for field, key in [
                ("text", text), ("text_pair", text_pair), ("label", label),
                ("tokens", tokens), ("tags", tags),
            ]
            if key is not None
        }
        self.data_dir = None if data_dir is None else str(data_dir)
        self.limit = limit
        problems = []
        if text is None and tokens is None:
            problems.append(("text", "give the feature with the text (or tokens= for tagging)"))
        if tags is not None and tokens is None:
            problems.append(("tokens", "tags= needs tokens=: give the feature with the words"))
        if tags is not None and label is not None:
            problems.append(("label", "give label= or tags=, not both (tags become the label)"))
        if limit is not None and (type(limit) is not int or limit < 1):
            problems.append(("limit", f"must be a positive number of examples, not {limit!r}"))
        if problems:
            raise ConfigError(problems)

    def describe(self) -> str:
        return f"tfds:{self.name}/{self.split}"

    def read(self) -> List[Example]:
        import tensorflow_datasets as tfds  # slow to import: only when needed

        try:
            ds, info = tfds.load(
                self.name, split=self.split, data_dir=self.data_dir, with_info=True
            )
        except tfds.core.DatasetNotFoundError:
            raise DataError(
                f"tfds:{self.name}",
                f"no TFDS dataset named {self.name!r}; check the name and config (e.g. "
                f"'glue/sst2') in the catalog, {CATALOG}",
            ) from None
        features = info.features
        present = sorted(features.keys())
        for key in self.fields.values():
            if key not in present:
                raise DataError(
                    self.describe(),
                    f"no feature {key!r} in the dataset; features present: {present}; "
                    "name one of them",
                )
        if self.limit is not None:
            ds = ds.take(self.limit)
        examples = [
            self._example(f"{self.describe()}#{index}", record, features)
            for index, record in enumerate(tfds.as_numpy(ds))
        ]
        return require_examples(self.describe(), examples, "the split is empty: pick another split")

    def _example(self, where: str, record: dict, features) -> Example:
        values = {
            field: _to_python(where, key, record[key], features[key])
            for field, key in self.fields.items()
        }

        def text(field):
            if field not in values:
                return None
            key = self.fields[field]
            return require_text(where, _string(where, key, values[field]), f"feature {key!r}")

        def strings(field):
            key = self.fields[field]
            return tuple(_string(where, key, item) for item in _sequence(where, key, values[field]))

        tokens = strings("tokens") if "tokens" in values else None
        label = values.get("label")
        if "tags" in values:
            label = strings("tags")
            if len(label) != len(tokens):
                raise DataError(
                    where,
                    f"{len(tokens)} tokens but {len(label)} tags; tokens= and tags= must name "
                    "features with one entry per word",
                )
        return Example(
            text=text("text"), text_pair=text("text_pair"), tokens=tokens, label=label, where=where
        )


def _to_python(where: str, key: str, value, feature):
    """A numpy value from ``tfds.as_numpy`` as plain Python (label names for ClassLabel)."""
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.ClassLabel):
        return _class_name(feature, value)
    if isinstance(feature, tfds.features.Sequence) and isinstance(
        feature.feature, tfds.features.ClassLabel
    ):
        return tuple(_class_name(feature.feature, v) for v in value)
    return _plain(where, key, value)


def _class_name(feature, value) -> Optional[str]:
    index = int(value)
    return None if index < 0 else feature.int2str(index)


def _plain(where: str, key: str, value):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                where,
                f"feature {key!r} is not valid UTF-8 (byte 0x{value[e.start]:02x}); pick a text "
                "feature",
            ) from None
    if isinstance(value, np.ndarray):
        return tuple(_plain(where, key, v) for v in value.tolist())
    if isinstance(value, np.float32):
        return float(str(value))  # 2.4, not 2.4000000953674316
    if isinstance(value, np.generic):
        return value.item()
    return value


def _string(where: str, key: str, value) -> str:
    if not isinstance(value, str):
        raise DataError(
            where, f"feature {key!r} is {type(value).__name__}, not text; name a text feature"
        )
    return value


def _sequence(where: str, key: str, value) -> tuple:
    if not isinstance(value, tuple):
        raise DataError(
            where,
            f"feature {key!r} is {type(value).__name__}, not a sequence; name a Sequence "
            "feature (one entry per word)",
        )
    return value
