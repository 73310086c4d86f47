"""Plain text files: one paragraph a line, unlabelled (masked-LM training text)."""

from __future__ import annotations

import re
from typing import List

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, read_lines, require_examples
from kmtl.errors import DataError
from kmtl.registry import FilePath

_HEADING = re.compile(r"^\s*(=+)\s.*\s\1\s*$")
"""A WikiText heading line: `` = Title = ``, `` = = Section = = ``..."""


class TextSource(Source):
    """Unlabelled paragraphs from a plain text file, one paragraph a line.

    Blank lines are skipped, and so are WikiText's heading lines (`` = Valkyria Chronicles = ``,
    `` = = Gameplay = = ``; Merity et al., "Pointer Sentinel Mixture Models", ICLR 2017) unless
    ``skip_headings`` is off. Each other line becomes ``Example(text=<the line, stripped>,
    where="path:LINE")``: the text of a `kmtl.tasks.MaskedLM` task (kmtl does not undo
    WikiText's own tokenisation: ``@-@``, ``<unk>`` stay as they are).

    Args:
        path: the file (UTF-8).
        min_chars: lines shorter than this (after stripping) are skipped.
        skip_headings: skip WikiText heading lines (`` = Title = ``).

    Raises:
        DataError: the file is missing, not UTF-8, or holds no paragraph (empty, or only
            blank lines, headings and lines under ``min_chars``).

    Example:
        >>> TextSource("../shared/data/wikitext2/valid.txt").read()[0]
        Example(text='Homarus gammarus , known as the European lobster ...', where='.../valid.txt:4')
    """

    format = "text"
    choice_order = 5
    fields = {"text": True}

    def __init__(self, path: FilePath, min_chars: int = 1, skip_headings: bool = True):
        if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 1:
            raise ValueError(f"TextSource min_chars must be a whole number of at least 1, got {min_chars!r}")
        self.path = str(path)
        self.min_chars = min_chars
        self.skip_headings = bool(skip_headings)

    def describe(self) -> str:
        return f"text:{self.path}"

    def read(self) -> List[Example]:
        examples, skipped = [], 0
        for number, line in read_lines(self.path):
            text = line.strip()
            if not text:
                continue
            if (self.skip_headings and _HEADING.match(line)) or len(text) < self.min_chars:
                skipped += 1
                continue
            examples.append(Example(text=text, where=f"{self.path}:{number}"))
        if not examples and skipped:
            raise DataError(self.path, f"no paragraphs in file: all {skipped} non-blank lines are headings "
                                       f"(' = Title = ') or shorter than min_chars={self.min_chars}; give a file "
                                       "with one paragraph a line, or set skip_headings: false / a lower min_chars")
        return require_examples(self.path, examples, "the file has only blank lines: write one paragraph a line")
