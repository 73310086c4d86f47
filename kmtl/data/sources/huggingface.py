"""Hugging Face ``datasets``: examples from a `datasets.Dataset` already in memory."""

from __future__ import annotations

from typing import List, Optional

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, require_examples, require_text
from kmtl.errors import DataError


class HuggingFaceSource(Source):
    """Examples from a Hugging Face `datasets.Dataset` (or any table with ``column_names``,
    ``features`` and row iteration), columns mapped by name.

    ``ClassLabel`` columns become their label *names* (``-1``, "no label", becomes ``None``),
    a ``Sequence(ClassLabel)`` of tags becomes a tuple of names, strings and numbers stay as
    they are. ``where`` is ``"hf:<name>#<row>"``. The dataset is read as given: load or
    slice it with ``datasets`` first (``load_dataset(...)["train"].select(range(1000))``).
    kmtl does not import ``datasets`` itself.

    Args:
        dataset: the `datasets.Dataset` (one split).
        text: the column with the text (sentence-level tasks).
        text_pair: the column with the second text (pair tasks).
        label: the column with the label.
        tokens: the column with the words of a sentence (tagging).
        tags: the column with one tag per token (becomes ``label``); give ``tokens`` too.
        name: a name for error messages (default: the dataset's ``info.dataset_name``).

    Example:
        >>> import datasets
        >>> table = datasets.Dataset.from_dict({"sentence": ["a fine film"], "label": [1]},
        ...     features=datasets.Features({"sentence": datasets.Value("string"),
        ...                                 "label": datasets.ClassLabel(names=["neg", "pos"])}))
        >>> HuggingFaceSource(table, text="sentence", label="label").read()[0].label
        'pos'
    """

    def __init__(self, dataset, text: Optional[str] = None, text_pair: Optional[str] = None,
                 label: Optional[str] = None, tokens: Optional[str] = None, tags: Optional[str] = None,
                 name: Optional[str] = None):
        if not hasattr(dataset, "column_names"):
            raise TypeError(f"HuggingFaceSource takes a datasets.Dataset (one split), got {type(dataset).__name__}; "
                            "for a DatasetDict pick a split: table['train']")
        if text is None and tokens is None:
            raise ValueError("give text= (the column with the text) or tokens= (the words, for tagging)")
        if tags is not None and tokens is None:
            raise ValueError("tags= needs tokens=: give the column with the words")
        self.dataset = dataset
        self.fields = {f: c for f, c in [("text", text), ("text_pair", text_pair), ("label", label),
                                          ("tokens", tokens), ("tags", tags)] if c is not None}
        info = getattr(dataset, "info", None)
        self.name = name or getattr(info, "dataset_name", None) or "dataset"
        missing = sorted(c for c in self.fields.values() if c not in dataset.column_names)
        if missing:
            raise DataError(f"hf:{self.name}", f"no column(s) {missing}; the dataset has {dataset.column_names}")

    def describe(self) -> str:
        return f"hf:{self.name}"

    def _names(self, column):
        """The label names of a ClassLabel column (or of a sequence of them), else None."""
        feature = self.dataset.features[column]
        feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) / List(ClassLabel)
        return list(feature.names) if hasattr(feature, "names") else None

    def read(self) -> List[Example]:
        label_col = self.fields.get("tags") or self.fields.get("label")
        names = self._names(label_col) if label_col else None

        def named(value):
            if names is None or not isinstance(value, int):
                return value
            return None if value < 0 else names[value]

        examples = []
        for index, row in enumerate(self.dataset):
            where = f"hf:{self.name}#{index}"
            fields = {}
            if "tokens" in self.fields:
                fields["tokens"] = tuple(str(t) for t in row[self.fields["tokens"]])
                if not fields["tokens"]:
                    raise DataError(where, "a sentence with no tokens; drop the row")
            for field in ("text", "text_pair"):
                if field in self.fields:
                    fields[field] = require_text(where, str(row[self.fields[field]]), self.fields[field])
            if label_col:
                value = row[label_col]
                fields["label"] = tuple(named(v) for v in value) if "tags" in self.fields else named(value)
            examples.append(Example(where=where, **fields))
        return require_examples(f"hf:{self.name}", examples, "the dataset has no rows")
