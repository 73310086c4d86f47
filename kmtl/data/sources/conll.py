"""CoNLL-style files: one token a line, a blank line between sentences."""

from __future__ import annotations

from typing import List, Optional

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, read_lines, require_examples
from kmtl.errors import ConfigError, DataError
from kmtl.registry import FilePath


class ConllSource(Source):
    """Sentences from a CoNLL-style file, for tagging tasks.

    Each non-blank line is ``token<sep>tag`` (more columns are fine); a blank line ends a
    sentence (several blank lines in a row, and a missing blank line at the end, are fine).
    Lines starting with ``-DOCSTART-`` are document markers and are skipped. Each sentence
    becomes ``Example(tokens=(...), label=(tag, ...), where="path:LINE")`` where LINE is the
    sentence's first line.

    Args:
        path: the file (UTF-8).
        token_column: the 0-based column of the token (negative numbers count from the end).
        tag_column: the column of the tag (default: the last one); ``None`` reads untagged
            sentences (``label=None``).
        delimiter: the column separator; ``None`` (default) splits on any run of whitespace,
            ``"\\t"`` splits on tabs only (for tokens that contain spaces).

    Example:
        >>> # train.txt:  EU<TAB>B-ORG / rejects<TAB>O / ... / <blank line> / ...
        >>> ConllSource("../shared/data/conll2003/train.txt").read()[0]
        Example(tokens=('EU', 'rejects', ...), label=('B-ORG', 'O', ...), where='...train.txt:1')
        >>> ConllSource("train.conll", token_column=0, tag_column=3, delimiter=" ")
    """

    format = "conll"
    choice_order = 3
    fields = {"tokens": True, "tags": ("tag_column",)}

    def __init__(
        self,
        path: FilePath,
        token_column: int = 0,
        tag_column: Optional[int] = -1,
        delimiter: Optional[str] = None,
    ):
        self.path = str(path)
        self.token_column = token_column
        self.tag_column = tag_column
        self.delimiter = delimiter
        problems = []
        for name, value in [("token_column", token_column), ("tag_column", tag_column)]:
            if name == "tag_column" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append((name, f"must be a 0-based column number, not {value!r}"))
        if delimiter is not None and (not isinstance(delimiter, str) or not delimiter):
            problems.append(("delimiter", "must be a non-empty string such as '\\t', or None"))
        if problems:
            raise ConfigError(problems)

    def describe(self) -> str:
        return f"conll:{self.path}"

    def read(self) -> List[Example]:
        sentences = []
        tokens, tags, start = [], [], 0

        def end_sentence():
            if tokens:
                label = tuple(tags) if self.tag_column is not None else None
                sentences.append(
                    Example(tokens=tuple(tokens), label=label, where=f"{self.path}:{start}")
                )
                tokens.clear()
                tags.clear()

        for number, line in read_lines(self.path):
            if not line.strip() or line.startswith("-DOCSTART-"):
                end_sentence()
                continue
            if not tokens:
                start = number
            token, tag = self._split(f"{self.path}:{number}", line)
            tokens.append(token)
            tags.append(tag)
        end_sentence()
        return require_examples(
            self.path, sentences, "the file has only document markers: add tagged sentences"
        )

    def _split(self, where: str, line: str):
        cells = line.split(self.delimiter) if self.delimiter is not None else line.split()
        cells = [cell.strip() for cell in cells]
        columns = [self.token_column] + ([self.tag_column] if self.tag_column is not None else [])
        needed = max([2 if self.tag_column is not None else 1] + [_width(c) for c in columns])
        if len(cells) < needed:
            separator = "whitespace" if self.delimiter is None else repr(self.delimiter)
            what = "token and tag" if self.tag_column is not None else "token"
            raise DataError(
                where,
                f"expected at least {needed} columns ({what}) separated by {separator}, found "
                f"{len(cells)}; give every token a tag, put a blank line between sentences, and "
                "check the delimiter and column numbers",
            )
        token = cells[self.token_column]
        if not token:
            raise DataError(where, "empty token; remove the stray separator at the line start")
        tag = cells[self.tag_column] if self.tag_column is not None else None
        if tag == "":
            raise DataError(where, "empty tag; give the token a tag (e.g. 'O')")
        return token, tag


def _width(column: int) -> int:
    """How many columns a row needs for ``column`` to exist."""
    return column + 1 if column >= 0 else -column
