"""Data sources: where raw examples come from (files, TFDS, a Hugging Face dataset), as ``Example`` records.

Every source has ``read() -> list[Example]`` and ``describe() -> str``, and raises
:class:`kmtl.errors.DataError` naming ``file:line`` and the fix for bad input.

Example:
    >>> from kmtl.data.sources import TsvSource, ConllSource
    >>> TsvSource("../shared/data/sst2/train.tsv", text="sentence", label="label").read()
    >>> ConllSource("../shared/data/conll2003/train.txt").read()
    >>> HuggingFaceSource(hf_table, text="sentence", label="label").read()   # a datasets.Dataset
    >>> TextSource("../shared/data/wikitext2/valid.txt").read()              # paragraphs, for masked_lm
    >>> SquadSource("../shared/data/squad_v1.1/dev-v1.1.json").read()        # questions, for span_qa
    >>> QaJsonlSource("qa.jsonl", question="question", context="context", answers="answers").read()
"""

from kmtl.data.sources.base import Source, read_lines
from kmtl.data.sources.conll import ConllSource
from kmtl.data.sources.delimited import CsvSource, DelimitedSource, TsvSource
from kmtl.data.sources.huggingface import HuggingFaceSource
from kmtl.data.sources.jsonl import JsonlSource
from kmtl.data.sources.relations import RelationDocumentsSource, RelationJsonlSource
from kmtl.data.sources.semeval import SemevalSource
from kmtl.data.sources.squad import QaJsonlSource, SquadSource
from kmtl.data.sources.text import TextSource
from kmtl.data.sources.tfds import TfdsSource

__all__ = [
    "ConllSource",
    "CsvSource",
    "DelimitedSource",
    "HuggingFaceSource",
    "JsonlSource",
    "QaJsonlSource",
    "RelationDocumentsSource",
    "RelationJsonlSource",
    "SemevalSource",
    "Source",
    "SquadSource",
    "TextSource",
    "TfdsSource",
    "TsvSource",
    "read_lines",
]
