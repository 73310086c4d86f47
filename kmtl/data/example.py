"""The raw example record that sources produce and tasks encode."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Example:
    """One raw labelled (or unlabelled) example, as read from a source.

    Sources know nothing about models: they fill the fields that the data has and record where
    the example came from, so that a later error (a label outside the label set, say) can name
    ``file:line``.

    Args:
        text: the sentence (sentence-level tasks).
        text_pair: the second sentence (pair tasks).
        tokens: the words of a sentence (tagging tasks).
        label: the raw label: a string for classification, a string or float for regression,
            a tuple of strings for multi-label classification, a tuple of tag strings (one per
            token) for tagging. ``None`` when unlabelled.
        where: ``"path:line"`` of the example's first line, for error messages.

    Example:
        >>> Example(text="a great film", label="pos", where="train.tsv:2")
    """

    text: Optional[str] = None
    text_pair: Optional[str] = None
    tokens: Optional[Tuple[str, ...]] = None
    label: Any = None
    where: str = ""
