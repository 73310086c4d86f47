"""The ``Source`` interface and the line reader that the file sources share.

A source is where raw examples come from: it reads a file (or a TFDS dataset) and returns
:class:`~kmtl.data.example.Example` records. It knows nothing about models or label sets.
"""

from __future__ import annotations

import abc
import codecs
import os
from pathlib import Path
from typing import Iterator, List, Tuple

from kmtl.data.example import Example
from kmtl.errors import DataError

UTF8_HINT = "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 old.txt > new.txt`)"


class Source(abc.ABC):
    """Where raw examples come from.

    Subclasses implement :meth:`read` (all examples, in file order) and :meth:`describe`
    (a short name such as ``"tsv:data/train.tsv"`` for logs and error messages). Bad input
    raises :class:`kmtl.errors.DataError` naming ``path:line`` and the fix.

    A subclass that sets ``format`` (``format = "tsv"``) is a YAML source: the config's
    ``train:``/``dev:`` sections read it from `kmtl.registry.SOURCES`, with one key per
    ``__init__`` parameter (annotate paths `kmtl.registry.FilePath`, columns
    `kmtl.registry.Column`; ``config_keys`` / ``config_defaults`` as in `kmtl.registry`).
    ``fields`` says which inputs the source can give a task — ``{field: the options that
    give it}``, or ``True`` when it always does — so the config can tell a source that cannot
    feed a task kind (the kind's ``input_fields`` and ``label_field``) before anything is
    read; ``kinds`` narrows a format to the kinds it is made for.
    """

    #: ``{field: option keys that give it (any one set), or True}``; fields: ``text``,
    #: ``text_pair``, ``label``, ``tokens``, ``tags``, ``answers`` (span QA's, in ``label``)
    fields = {"text": ("text",), "text_pair": ("text_pair",), "label": ("label",)}
    #: the task kinds this format feeds (``()``: any kind whose fields it gives)
    kinds = ()

    @abc.abstractmethod
    def read(self) -> List[Example]:
        """Returns all examples, in file order."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Returns a short description, e.g. ``"tsv:data/train.tsv"``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def read_lines(path) -> Iterator[Tuple[int, str]]:
    """Yields ``(line_number, line)`` for each line of a UTF-8 text file (1-based numbers).

    The file is read as bytes and decoded line by line, so that a bad byte is reported with
    its line and column. Line endings (``\\n`` or ``\\r\\n``) are removed and a UTF-8 BOM at
    the start of the file is dropped. Missing, unreadable and empty files fail right away;
    encoding errors fail when their line is reached.

    Raises:
        DataError: the file is missing, not a file, unreadable, empty, or not UTF-8.
    """
    where = str(path)
    p = Path(path)
    if not p.exists():
        raise DataError(
            where,
            f"no such file; check the path (relative paths start from the current "
            f"directory, {os.getcwd()})",
        )
    if not p.is_file():
        raise DataError(where, "is not a file (a directory?); give the path of a data file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DataError(where, f"cannot read the file ({e.strerror}); check its permissions") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if not data.strip():
        raise DataError(where, "no examples in file; the file is empty: fill it in or fix the path")
    return _decode_lines(where, data)


def _decode_lines(where: str, data: bytes) -> Iterator[Tuple[int, str]]:
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the file ends with a newline
    for number, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            column = len(raw[: e.start].decode("utf-8")) + 1
            raise DataError(
                f"{where}:{number}",
                f"is not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); {UTF8_HINT}",
            ) from None
        yield number, line


def require_examples(where: str, examples: List[Example], hint: str) -> List[Example]:
    """Returns ``examples``, or raises DataError ``"no examples in file; <hint>"`` if empty."""
    if not examples:
        raise DataError(where, f"no examples in file; {hint}")
    return examples


def require_text(where: str, value: str, field: str) -> str:
    """Returns ``value`` stripped, or raises DataError if it is empty."""
    value = value.strip()
    if not value:
        raise DataError(where, f"empty text in {field}; fill it in or delete this example")
    return value


def parse_label(where: str, value: str, separator, field: str) -> object:
    """A label cell as a string (stripped), or a tuple of strings when ``separator`` is set.

    With a separator, an empty cell is an example with no labels (an empty tuple); without
    one, an empty cell is an error.
    """
    if separator is not None:
        return tuple(part.strip() for part in value.split(separator) if part.strip())
    value = value.strip()
    if not value:
        raise DataError(
            where,
            f"empty label in {field}; fill it in, or read the file without labels (label=None)",
        )
    return value
