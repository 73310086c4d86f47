"""Data sources: where raw examples come from (files or TFDS), as ``Example`` records.

Every source has ``read() -> list[Example]`` and ``describe() -> str``, and raises
:class:`kmtl.errors.DataError` naming ``file:line`` and the fix for bad input.

Example:
    >>> from kmtl.data.sources import TsvSource, ConllSource
    >>> TsvSource("sst2/train.tsv", text="sentence", label="label").read()
    >>> ConllSource("conll2003/train.txt").read()
"""

from kmtl.data.sources.base import Source, read_lines
from kmtl.data.sources.conll import ConllSource
from kmtl.data.sources.delimited import CsvSource, DelimitedSource, TsvSource
from kmtl.data.sources.jsonl import JsonlSource
from kmtl.data.sources.tfds import TfdsSource

__all__ = [
    "ConllSource",
    "CsvSource",
    "DelimitedSource",
    "JsonlSource",
    "Source",
    "TfdsSource",
    "TsvSource",
    "read_lines",
]
