"""Writing files so that a reader never sees half of one; fingerprints of the files a run read."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Dict, Tuple

_DIGESTS: Dict[Tuple[str, int, int], str] = {}


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` to write; renamed onto ``path`` when the block
    ends, removed if it raises, so a reader never sees half a file.

    Example:
        >>> with atomic_path("runs/demo/curves.png") as tmp:
        ...     figure.savefig(tmp, format="png")
    """
    path = Path(path)
    tmp = path.with_name("tmp." + path.name)  # keeps the suffix: h5py and savefig read it
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it, then rename.

    Example:
        >>> write_atomic("runs/demo/run.json", "{}\\n")
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_safe(value):
    """``value`` with NaN floats replaced by ``None`` (JSON has no NaN), through dicts and lists."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def without_none(value):
    """``value`` (JSON-like data) with every ``None``-valued mapping entry left out, at any depth.

    Settings hashes (a run's config hash, the baseline cache's keys) hash this, so that a new
    optional setting, ``None`` by default, leaves the hashes of configs that do not set it alone.

    Example:
        >>> without_none({"a": 1, "b": None, "c": {"d": None}, "e": [None, {"f": None}]})
        {'a': 1, 'c': {}, 'e': [None, {}]}
    """
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def file_digest(path) -> str:
    """The SHA-256 of the file's bytes (16 hex digits): what a cache key holds of a data file.

    Its content, not its modification time: a copy, a fresh clone or a restored backup of the
    same data keeps the key (an mtime changes with each of them), an edit changes it. Hashed
    once a process per (path, size, mtime), so asking again costs a ``stat``.

    Example:
        >>> file_digest("../shared/data/sst2/dev.tsv")
        '92353770071a2a88'
    """
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()[:16]
    return _DIGESTS[memo]
