"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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
