"""SemEval-2010 Task 8 files: relation classification between two marked nominals."""

from __future__ import annotations

import re
from typing import List

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, read_lines, require_examples
from kmtl.data.sources.relations import check_marked
from kmtl.errors import DataError
from kmtl.registry import FilePath

_SENTENCE = re.compile(r"^\s*(\d+)\t(.*)$")


class SemevalSource(Source):
    """Relation examples from SemEval-2010 Task 8's own files (Hendrickx et al., SemEval 2010).

    A record is four lines (CRLF in the released files; LF works too)::

        1<TAB>"The system ... an arrayed <e1>configuration</e1> of antenna <e2>elements</e2>."
        Component-Whole(e2,e1)
        Comment: Not a collection: there is structure here, organisation.
        <blank line>

    The sentence keeps its ``<e1>``/``<e2>`` markers (kmtl's canonical form; ``e1`` comes
    first in SemEval sentences and the label's ``(e2,e1)`` says which way the relation goes)
    and loses only its outer pair of quotes: quotes inside it are text. The label line is
    optional (the unlabelled ``TEST_FILE.txt`` has one sentence line after another; its
    examples get ``label=None``); the ``Comment`` line is skipped. ``where`` is the sentence
    line.

    Args:
        path: the file (``TRAIN_FILE.TXT``, ``TEST_FILE_FULL.TXT``; UTF-8 or ASCII).

    Example:
        >>> SemevalSource("../shared/data/semeval2010_task8/TRAIN_FILE.TXT").read()[0]
        Example(text='The system as described above has its greatest application in an arrayed
        <e1>configuration</e1> of antenna <e2>elements</e2>.', label='Component-Whole(e2,e1)',
        where='../shared/data/semeval2010_task8/TRAIN_FILE.TXT:1')
    """

    format = "semeval"
    fields = {"text": True, "label": True}
    kinds = ("relation",)  # texts with entity markers: for relation tasks only

    def __init__(self, path: FilePath):
        self.path = str(path)

    def describe(self) -> str:
        return f"semeval:{self.path}"

    def read(self) -> List[Example]:
        records, seen = [], {}
        current = None  # [line number, text, label] of the record being read
        for number, line in read_lines(self.path):
            where = f"{self.path}:{number}"
            sentence = _SENTENCE.match(line)
            if sentence:
                if current is not None:
                    records.append(current)
                ident = sentence.group(1)
                if ident in seen:
                    raise DataError(where, f"sentence id {ident} is used again (first at line {seen[ident]}); "
                                           "give every record its own id")
                seen[ident] = number
                current = [number, _sentence(where, sentence.group(2)), None]
            elif not line.strip():
                if current is not None:
                    records.append(current)
                current = None
            elif line.lstrip().startswith("Comment"):
                continue
            elif current is None:
                raise DataError(where, f"{line.strip()!r} is outside a record; a record starts with "
                                       "'<id><TAB>\"<sentence>\"' (check for a missing id or a stray line)")
            elif current[2] is not None:
                raise DataError(where, f"a second label line ({line.strip()!r}) in the record of line "
                                       f"{current[0]}; give one label, then 'Comment:', then a blank line")
            else:
                current[2] = line.strip()
        if current is not None:
            records.append(current)
        examples = [Example(text=text, label=label, where=f"{self.path}:{number}") for number, text, label in records]
        return require_examples(self.path, examples, "no '<id><TAB>\"<sentence>\"' line found: is it a "
                                "SemEval-2010 Task 8 file?")


def _sentence(where: str, cell: str) -> str:
    """The sentence of a record's first line: its outer quotes removed, its markers checked."""
    cell = cell.strip()
    if len(cell) < 2 or not (cell.startswith('"') and cell.endswith('"')):
        raise DataError(where, 'the sentence must be in double quotes: <id><TAB>"<sentence>"')
    text = cell[1:-1].strip()
    if not text:
        raise DataError(where, "empty sentence; fill it in or delete the record")
    return check_marked(where, text)
