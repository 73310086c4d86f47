"""JSON Lines files: one JSON object a line."""

from __future__ import annotations

import json
from typing import List, Optional

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, parse_label, read_lines, require_examples, require_text
from kmtl.errors import DataError
from kmtl.registry import FilePath


class JsonlSource(Source):
    """Examples from a JSON Lines file: one JSON object a line, blank lines skipped.

    Args:
        path: the file (UTF-8).
        text: the key of the text (a string).
        text_pair: the key of the second text, for sentence-pair tasks; ``None`` if none.
        label: the key of the label; ``None`` reads unlabelled examples. A string label is
            kept as a (stripped) string, a number as a number (for regression), a list as a
            tuple of strings (multi-label).
        label_separator: if set (e.g. ``"|"``), a string label is split on it into a tuple of
            strings.

    Example:
        >>> # reviews.jsonl:  {"text": "a great film", "label": "pos"}
        >>> JsonlSource("reviews.jsonl").read()[0]
        Example(text='a great film', ..., label='pos', where='reviews.jsonl:1')
        >>> JsonlSource("sts.jsonl", text="s1", text_pair="s2", label="score")
    """

    format = "jsonl"
    choice_order = 2

    def __init__(
        self,
        path: FilePath,
        text: str = "text",
        text_pair: Optional[str] = None,
        label: Optional[str] = "label",
        label_separator: Optional[str] = None,
    ):
        self.path = str(path)
        self.text = text
        self.text_pair = text_pair
        self.label = label
        self.label_separator = label_separator

    def describe(self) -> str:
        return f"jsonl:{self.path}"

    def read(self) -> List[Example]:
        examples = []
        for number, line in read_lines(self.path):
            if line.strip():
                examples.append(self._example(f"{self.path}:{number}", line))
        return require_examples(
            self.path, examples, "the file has only blank lines: add one JSON object a line"
        )

    def _example(self, where: str, line: str) -> Example:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                where,
                f"not valid JSON ({e.msg} at column {e.colno}); write one complete JSON object "
                'on each line, e.g. {"text": "...", "label": "..."}',
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                where,
                f"expected a JSON object, found {type(record).__name__}; write one object a line, "
                'e.g. {"text": "...", "label": "..."}',
            )
        pair = None
        if self.text_pair is not None:
            pair = self._text(where, record, self.text_pair)
        label = None
        if self.label is not None:
            label = self._label(where, record)
        return Example(
            text=self._text(where, record, self.text),
            text_pair=pair,
            label=label,
            where=where,
        )

    def _get(self, where: str, record: dict, key: str):
        if key not in record:
            raise DataError(
                where,
                f"missing field {key!r}; fields present: {sorted(record)}; add the field or "
                "name the right key in the source",
            )
        return record[key]

    def _text(self, where: str, record: dict, key: str) -> str:
        value = self._get(where, record, key)
        if not isinstance(value, str):
            raise DataError(
                where, f"field {key!r} must be a string, found {_json_type(value)}; quote it"
            )
        return require_text(where, value, f"field {key!r}")

    def _label(self, where: str, record: dict):
        value = self._get(where, record, self.label)
        if isinstance(value, str):
            return parse_label(where, value, self.label_separator, f"field {self.label!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
            return tuple(str(v).strip() for v in value)
        raise DataError(
            where,
            f"field {self.label!r} must be a string, a number or a list of strings, found "
            f"{_json_type(value)}; fix the label (or read without labels: label=None)",
        )


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
    return names.get(type(value), f"a {'number' if isinstance(value, (int, float)) else 'value'}")
