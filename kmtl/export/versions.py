"""TF Serving's folder layout: ``<base>/<model>/<integer version>/``, written atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from kmtl.errors import ExportError


def existing_versions(model_dir) -> list:
    """Integer version folders under ``model_dir``, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir) -> int:
    """One more than the highest existing version (1 for a new model)."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


@contextlib.contextmanager
def atomic_version_dir(model_dir, version: Optional[int] = None):
    """Yield a temporary folder; on success rename it to ``model_dir/<version>``.

    TF Serving watches ``model_dir`` and loads any integer folder that appears, so the export
    is written beside it under a hidden name and renamed into place only when complete. An
    existing version is never overwritten; on error the temporary folder is removed.

    Example:
        >>> with atomic_version_dir("saved_models/demo") as (tmp, final):
        ...     tf.saved_model.save(module, str(tmp))
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(
            f"{final} already exists; TF Serving versions are immutable. Choose another version "
            "or leave it out to use the next free one"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        yield tmp, final
        try:
            os.rename(tmp, final)
        except OSError as err:
            raise ExportError(f"could not move the export into {final}: {err}") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
