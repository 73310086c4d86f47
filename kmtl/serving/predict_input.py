"""`kmtl predict`'s input: texts or JSON objects, one per line or per argument, one output row each."""

from __future__ import annotations

import json
from typing import List

from kmtl.errors import KmtlError

INPUT_MODES = ("auto", "text", "jsonl")
"""``auto``: a line that starts with ``{`` is a JSON object, any other a text; ``text``: every
line is a text (``{`` included); ``jsonl``: every line is a JSON object."""


def decode_bytes(data: bytes) -> str:
    """UTF-8 text with invalid bytes replaced by U+FFFD, as the serving signatures do.

    Example:
        >>> decode_bytes(b"caf\\xe9")
        'caf\\ufffd'
    """
    return data.decode("utf-8", errors="replace")


def clean_argument(text: str) -> str:
    """A command-line argument with the invalid UTF-8 bytes Python smuggled in as lone surrogates
    (``surrogateescape``) replaced by U+FFFD, so that TensorFlow and ``print`` accept it.

    Example:
        >>> clean_argument("caf\\udce9")
        'caf\\ufffd'
    """
    return decode_bytes(text.encode("utf-8", errors="surrogateescape"))


def split_lines(text: str) -> List[str]:
    """The lines of ``text`` split on ``\\n`` only (``\\r\\n`` too), blank lines kept, without the
    empty piece after a final newline: one item per input line.

    Example:
        >>> split_lines("a\\n\\nb\\r\\n")
        ['a', '', 'b']
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_item(line: str, mode: str = "auto", where: str = "input"):
    """One input item: a text, or a dict ``{"text": ..., "text_pair": ...}`` from a JSON object.

    A blank line is the empty text in every mode (one output row per input line).

    Args:
        line: the line (or argument), without its newline.
        mode: one of `INPUT_MODES`.
        where: the place named in errors, e.g. ``"<stdin>:3"``.

    Example:
        >>> parse_item('{"text": "a"}')
        {'text': 'a'}
        >>> parse_item('{not json', mode="text")
        '{not json'
    """
    if mode not in INPUT_MODES:
        raise ValueError(f"input mode must be one of {', '.join(INPUT_MODES)}, got {mode!r}")
    if mode == "text" or not line.strip() or (mode == "auto" and not line.lstrip().startswith("{")):
        return line
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        hint = "one JSON object a line (--jsonl)" if mode == "jsonl" else \
            "one JSON object or one text a line; --text reads every line as a text"
        raise KmtlError(f"{where}: not valid JSON ({err.msg}); give {hint}") from None
    if not isinstance(item, dict):
        raise KmtlError(f"{where}: expected a JSON object with a 'text' field, got {type(item).__name__}")
    return item


def parse_stdin(data: bytes, mode: str = "auto") -> List:
    """The items of ``kmtl predict``'s standard input (bytes, decoded with `decode_bytes`).

    Example:
        >>> parse_stdin(b'a\\n\\n{"text": "b"}\\n')
        ['a', '', {'text': 'b'}]
    """
    return [parse_item(line, mode, f"<stdin>:{n}") for n, line in enumerate(split_lines(decode_bytes(data)), 1)]


def parse_arguments(texts: List[str], mode: str = "auto") -> List:
    """The items of ``kmtl predict``'s text arguments: texts, or JSON objects with ``--jsonl``
    (``auto`` reads arguments as texts: a shell argument is one text).

    Example:
        >>> parse_arguments(['{"text": "a"}'], mode="jsonl")
        [{'text': 'a'}]
    """
    mode = "text" if mode == "auto" else mode
    return [parse_item(clean_argument(t), mode, f"argument {n}") for n, t in enumerate(texts, 1)]
