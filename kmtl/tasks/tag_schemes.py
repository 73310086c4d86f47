"""Tag schemes of token classification data, all read into one internal scheme: BIO with ``O``.

A tagging task's data comes in one of these schemes (``tag_scheme`` in the config):

* ``bio`` (IOB2): ``B-X`` begins every chunk, ``I-X`` continues it (CoNLL-2003 as most copies
  ship it, WNUT-17);
* ``iob1``: ``I-X`` begins a chunk too; ``B-X`` only where a chunk follows another of the same
  type (the original CoNLL-2003 files);
* ``bioes`` (IOBES): also ``E-X`` ends a chunk of several words and ``S-X`` is a one-word chunk;
* ``plain``: tags without chunk prefixes (part-of-speech tags: ``NN``, ``VB``...); kept as
  they are.

Every tag other than the outside label must read ``<prefix>-<type>`` with a prefix of the
scheme; `to_bio` rewrites a sentence's tags to BIO with ``O`` outside (``I-X`` that does not
continue an ``X`` chunk becomes ``B-X``, as conlleval reads it; ``E-X`` → ``I-X``, ``S-X`` →
``B-X``), so that training, decoding, metrics and serving only ever see BIO. `detect_scheme`
names the scheme of data whose config does not.

Example:
    >>> to_bio(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], "iob1")
    ['B-PER', 'I-PER', 'O', 'B-LOC', 'B-LOC']
    >>> to_bio(["S-PER", "O", "B-LOC", "E-LOC"], "bioes")
    ['B-PER', 'O', 'B-LOC', 'I-LOC']
    >>> detect_scheme([["O", "I-PER", "I-PER"]])
    ('iob1', "'I-PER' begins a chunk (word 2)")
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Tuple

SCHEMES = ("bio", "iob1", "bioes", "plain")
OUTSIDE = "O"
"""The internal outside label: what words outside entities, and words cut off by
``max_length``, are tagged."""
PREFIXES = {"bio": "BI", "iob1": "BI", "bioes": "BIES", "plain": ""}
_CHUNK_TAG = re.compile(r"([BIES])-(.+)")


def split_tag(tag: str) -> Optional[Tuple[str, str]]:
    """``(prefix, type)`` of a chunk tag such as ``B-PER``, else ``None``."""
    found = _CHUNK_TAG.fullmatch(tag)
    return (found.group(1), found.group(2)) if found else None


def scheme_problem(tag: str, scheme: str, outside: str = OUTSIDE) -> Optional[str]:
    """Why ``tag`` is not a tag of ``scheme`` (with ``outside`` as the outside label), or ``None``."""
    if scheme == "plain" or tag in (outside, OUTSIDE):
        return None
    parts = split_tag(tag)
    if parts is not None and parts[0] in PREFIXES[scheme]:
        return None
    allowed = ", ".join(f"{p}-<type>" for p in PREFIXES[scheme])
    return (f"tag {tag!r} is not a {scheme} tag: use {allowed} or the outside label {outside!r} (set the "
            "task's tag_scheme to bio, iob1 or bioes to match the data, or outside_label to its outside tag)")


def to_bio(tags: Sequence[str], scheme: str, outside: str = OUTSIDE) -> List[str]:
    """One sentence's ``tags`` in ``scheme`` rewritten to BIO with ``O`` (``plain``: unchanged).

    Tags must pass `scheme_problem`; ``I-X`` (or ``E-X``) that does not continue an open ``X``
    chunk begins one (``B-X``).
    """
    if scheme == "plain":
        return list(tags)
    out, open_type = [], None
    for tag in tags:
        parts = split_tag(tag) if tag not in (outside, OUTSIDE) else None
        if parts is None:
            out.append(OUTSIDE)
            open_type = None
            continue
        prefix, kind = parts
        begins = prefix in "BS" or open_type != kind
        out.append(f"{'B' if begins else 'I'}-{kind}")
        open_type = kind if prefix in "BI" else None  # E- and S- close their chunk
    return out


def bio_label_set(labels: Sequence[str], scheme: str, outside: str = OUTSIDE) -> List[str]:
    """A label set given in ``scheme`` as the BIO labels its data becomes, order kept.

    The outside label becomes ``O`` (added at the end if missing); ``E-X`` → ``I-X``,
    ``S-X`` → ``B-X``, duplicates dropped; ``B-X`` is added after the last ``X`` label where
    only ``I-X`` is listed (an ``I-X`` that begins a chunk becomes ``B-X``). BIO labels are
    returned as they are, so converting twice changes nothing. ``plain`` labels are unchanged.

    Example:
        >>> bio_label_set(["O", "I-PER", "I-LOC"], "iob1")
        ['O', 'I-PER', 'B-PER', 'I-LOC', 'B-LOC']
    """
    if scheme == "plain":
        return list(labels)
    out: List[str] = []
    for label in labels:
        parts = split_tag(label) if label not in (outside, OUTSIDE) else None
        mapped = [OUTSIDE] if parts is None else [f"{'B' if parts[0] in 'BS' else 'I'}-{parts[1]}"]
        if parts is not None and mapped[0].startswith("I-") and f"B-{parts[1]}" not in labels:
            mapped.append(f"B-{parts[1]}")
        out.extend(m for m in mapped if m not in out)
    if OUTSIDE not in out:
        out.append(OUTSIDE)
    return out


def detect_scheme(sentences: Iterable[Sequence[str]], outside: str = OUTSIDE,
                  where: Optional[Sequence[str]] = None) -> Tuple[str, str]:
    """The scheme of tagged ``sentences`` and the evidence for it: ``(scheme, reason)``.

    ``bioes`` when an ``E-``/``S-`` tag occurs, else ``iob1`` when an ``I-X`` begins a chunk
    (first word, after the outside label or after another type), else ``bio`` when any tag
    has a ``B-``/``I-`` prefix or is the outside label, else ``plain``. ``where``: each
    sentence's place (``file:line``), named in the reason.
    """
    first_i_start, has_chunks, has_outside = None, False, False
    for n, tags in enumerate(sentences):
        place = f"{where[n]}, " if where is not None else ""
        open_type = None
        for i, tag in enumerate(tags):
            parts = split_tag(tag) if tag not in (outside, OUTSIDE) else None
            has_outside = has_outside or tag in (outside, OUTSIDE)
            if parts is None:
                open_type = None
                continue
            has_chunks = True
            prefix, kind = parts
            if prefix in "ES":
                return "bioes", f"{tag!r} occurs ({place}word {i + 1})"
            if prefix == "I" and open_type != kind and first_i_start is None:
                first_i_start = f"{tag!r} begins a chunk ({place}word {i + 1})"
            open_type = kind
    if first_i_start is not None:
        return "iob1", first_i_start
    if has_chunks or has_outside:
        return "bio", "every chunk begins with B-"
    return "plain", "no tag has a B-/I-/E-/S- prefix"
