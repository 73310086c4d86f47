"""TSV/CSV files: one example a row, columns chosen by header name or 0-based number."""

from __future__ import annotations

import csv
from typing import Iterator, List, Optional, Sequence, Tuple

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, parse_label, read_lines, require_examples, require_text
from kmtl.errors import ConfigError, DataError
from kmtl.registry import Column, FilePath


class DelimitedSource(Source):
    """Examples from a delimited text file (TSV by default, CSV with ``CsvSource``).

    Each non-blank row is one example. Rows must all have the same number of columns as the
    header (or as the first row when ``header=False``). Texts and labels are stripped of
    surrounding whitespace.

    Args:
        path: the file (UTF-8; ``\\r\\n`` line endings and a BOM are fine).
        text: the text column: a header name, or a 0-based column number.
        text_pair: the second text's column, for sentence-pair tasks; ``None`` if none.
        label: the label column; ``None`` reads unlabelled examples (``label=None``).
        delimiter: the column separator (``"\\t"`` by default).
        header: whether the first line names the columns. Without a header, columns must be
            given by number.
        quoting: ``False`` (default): quote characters are ordinary text, as in most TSV
            files. ``True``: standard CSV quoting (a field in ``"..."`` may contain the
            separator, ``""`` is a literal quote, a quoted field may span lines).
        label_separator: if set (e.g. ``"|"``), the label cell is split on it into a tuple of
            strings (multi-label; an empty cell means no labels). Otherwise the label is the
            cell's string.

    Example:
        >>> src = DelimitedSource("../shared/data/sst2/train.tsv", text="sentence", label="label")
        >>> src.read()[0]
        Example(text='when are bears bears and', ..., label='1', where='../shared/data/sst2/train.tsv:2')
        >>> DelimitedSource("../shared/data/ag_news/test.tsv", text=0, label=1, header=False)
    """

    config_keys = {"delimiter": None}  # the format sets it (kmtl.registry)
    config_defaults = {"text": "text", "label": "label"}  # YAML: labelled, columns named text and label

    def __init__(
        self,
        path: FilePath,
        text: Column,
        text_pair: Optional[Column] = None,
        label: Optional[Column] = None,
        delimiter: str = "\t",
        header: bool = True,
        quoting: bool = False,
        label_separator: Optional[str] = None,
    ):
        self.path = str(path)
        self.text = text
        self.text_pair = text_pair
        self.label = label
        self.delimiter = delimiter
        self.header = header
        self.quoting = quoting
        self.label_separator = label_separator
        self._check_config()

    def describe(self) -> str:
        kind = {"\t": "tsv", ",": "csv"}.get(self.delimiter, "delimited")
        return f"{kind}:{self.path}"

    def read(self) -> List[Example]:
        rows = self._rows()
        names = None
        first = next(rows, None)
        if first is None:
            raise DataError(self.path, "no examples in file; it has only blank lines")
        first_line, first_row = first
        if self.header:
            names = [name.strip() for name in first_row]
        else:
            rows = _chain(first, rows)
        width = len(first_row)
        columns = {
            field: self._column_index(field, column, names, width, first_line)
            for field, column in self._fields()
        }
        examples = [
            self._example(f"{self.path}:{line}", row, columns, width) for line, row in rows
        ]
        return require_examples(
            self.path, examples, "the file has a header but no rows: add rows or fix the path"
        )

    # -- helpers ---------------------------------------------------------------------------

    def _fields(self) -> List[Tuple[str, Column]]:
        pairs = [("text", self.text), ("text_pair", self.text_pair), ("label", self.label)]
        return [(field, column) for field, column in pairs if column is not None]

    def _check_config(self) -> None:
        problems = []
        if not isinstance(self.delimiter, str) or not self.delimiter:
            problems.append(("delimiter", "must be a non-empty string, e.g. '\\t' or ','"))
        elif self.quoting and len(self.delimiter) != 1:
            problems.append(("delimiter", "must be one character when quoting=True"))
        for field, column in self._fields():
            if isinstance(column, bool) or not isinstance(column, (str, int)):
                problems.append(
                    (field, f"must be a column name or a 0-based column number, not {column!r}")
                )
            elif isinstance(column, str) and not self.header:
                problems.append(
                    (
                        field,
                        f"column {column!r} is a name but header=False; give a 0-based column "
                        "number, or set header=True if the first line names the columns",
                    )
                )
        if problems:
            raise ConfigError(problems)

    def _rows(self) -> Iterator[Tuple[int, List[str]]]:
        """Yields ``(line_number, cells)`` for each non-blank row."""
        lines = read_lines(self.path)
        if self.quoting:
            rows = self._quoted_rows(lines)
        else:
            rows = ((number, line.split(self.delimiter)) for number, line in lines)
        return ((number, row) for number, row in rows if not _is_blank(row))

    def _quoted_rows(self, lines) -> Iterator[Tuple[int, List[str]]]:
        reader = csv.reader((line + "\n" for _, line in lines), delimiter=self.delimiter)
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(
                    f"{self.path}:{reader.line_num}",
                    f"bad CSV quoting ({e}); balance the quotes (write \"\" for a literal quote) "
                    "or set quoting=False if quotes are ordinary text",
                ) from None
            yield start, row
            start = reader.line_num + 1

    def _column_index(self, field, column, names, width, line) -> int:
        where = f"{self.path}:{line}"
        if isinstance(column, str):
            if column not in names:
                raise DataError(
                    where,
                    f"no column {column!r} in header {names}; use one of these names for "
                    f"{field} (or a 0-based column number with header=False)",
                )
            return names.index(column)
        if not -width <= column < width:
            raise DataError(
                where,
                f"column {column} (for {field}) is out of range: the rows have {width} columns "
                f"separated by {self.delimiter!r}, numbered 0 to {width - 1}; fix the number "
                "or the delimiter",
            )
        return column

    def _example(self, where, row, columns, width) -> Example:
        if len(row) != width:
            source = "the header" if self.header else "the first row"
            if self.quoting:
                hint = (
                    "check for a stray separator or an unbalanced quote in this row (an "
                    "unclosed quote swallows the lines after it)"
                )
            else:
                hint = (
                    "check for a stray or missing separator in this row; if the file quotes "
                    "fields that contain the separator, set quoting=True"
                )
            raise DataError(
                where,
                f"expected {width} columns separated by {self.delimiter!r} (as in {source}), "
                f"found {len(row)}; {hint}",
            )

        def cell(field):
            return row[columns[field]] if field in columns else None

        label = cell("label")
        if label is not None:
            label = parse_label(where, label, self.label_separator, f"column {self.label!r}")
        pair = cell("text_pair")
        if pair is not None:
            pair = require_text(where, pair, f"column {self.text_pair!r} (text_pair)")
        return Example(
            text=require_text(where, cell("text"), f"column {self.text!r}"),
            text_pair=pair,
            label=label,
            where=where,
        )


class TsvSource(DelimitedSource):
    """A tab-separated file: a :class:`DelimitedSource` with its defaults (``format: tsv``).

    Args: as :class:`DelimitedSource` (without ``delimiter``).

    Example:
        >>> TsvSource("../shared/data/sst2/train.tsv", text="sentence", label="label").read()
    """

    format = "tsv"
    choice_order = 0  # position in lists of formats (kmtl.registry)

    def __init__(self, path: FilePath, text: Column, text_pair: Optional[Column] = None,
                 label: Optional[Column] = None, header: bool = True, quoting: bool = False,
                 label_separator: Optional[str] = None):
        super().__init__(path, text, text_pair, label, "\t", header, quoting, label_separator)


class CsvSource(DelimitedSource):
    """A :class:`DelimitedSource` with CSV defaults: ``delimiter=","`` and ``quoting=True``.

    Args: as :class:`DelimitedSource`.

    Example:
        >>> CsvSource("reviews.csv", text="review", label="stars").read()
    """

    format = "csv"
    choice_order = 1

    def __init__(
        self,
        path: FilePath,
        text: Column,
        text_pair: Optional[Column] = None,
        label: Optional[Column] = None,
        delimiter: str = ",",
        header: bool = True,
        quoting: bool = True,
        label_separator: Optional[str] = None,
    ):
        super().__init__(
            path, text, text_pair, label, delimiter, header, quoting, label_separator
        )


def _is_blank(row: Sequence[str]) -> bool:
    return len(row) <= 1 and not "".join(row).strip()


def _chain(first, rest):
    yield first
    yield from rest
