"""TF Serving's folder layout: ``<base>/<model>/<integer version>/``, written atomically.

Everything here is plain Python (no TensorFlow), so that a destination can be checked in
milliseconds, before any tracing starts (`check_export_target`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Optional

from kmtl.errors import ExportError

TMP_PREFIX = ".tmp-"
# ".tmp-<version>-<host hash>-<pid>-<random>": the exporting process, so that the next export
# can tell a folder a live export is writing from one a killed export left behind.
_TMP_NAME = re.compile(r"^\.tmp-(\d+)-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}$")
LEGACY_TMP_AGE_S = 24 * 3600  # older kmtl (tempfile.mkdtemp names, no owner): stale after a day
RENAME_TRIES = 20
SIZE_MARGIN = 1.1  # free space asked for: the estimate plus 10 %


class ExportTarget:
    """The temporary folder an export writes into and, once renamed, its version folder.

    ``final`` is the version folder the export will have; with an automatic version it can
    move to the next free number when a concurrent export took it first, so read it after
    the ``with`` block.
    """

    def __init__(self, tmp: Path, final: Path):
        self.tmp = tmp
        self.final = final


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


def check_model_name(name, what: str = "name") -> str:
    """``name`` if it is a single folder name (no ``/``, not ``..``, not absolute), else `ExportError`.

    Args:
        name: the model name, the folder under the base folder.
        what: how the caller calls it in the message (e.g. the CLI flag ``--name``).

    Example:
        >>> check_model_name("demo")
        'demo'
    """
    text = str(name) if name is not None else ""
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    if not text or text in (".", "..") or "\0" in text or any(s in text for s in seps) or os.path.isabs(text):
        raise ExportError(
            f"{what} {text!r} is not a single folder name; give a plain name such as 'demo' (no '/', "
            "not '.' or '..'): the export goes to <base folder>/<name>/<version>/, and the base folder "
            "is chosen separately (--dir / export.dir)"
        )
    return text


def check_version(version, what: str = "version") -> Optional[int]:
    """``version`` as an int (``None`` stays ``None``) if TF Serving accepts it, else `ExportError`.

    TF Serving reads version folders named by non-negative integers.

    Example:
        >>> check_version(3)
        3
    """
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ExportError(f"{what} {version!r} is not a version TF Serving reads; give a non-negative integer "
                          "(or leave it out to use the next free one)")
    return version


def check_export_target(base_dir, name, version=None, name_what="name", version_what="version") -> Path:
    """Validate a destination before any work: the name, the version, and that it is free.

    Returns the model folder ``<base_dir>/<name>``. Writes nothing.

    Example:
        >>> check_export_target("saved_models", "demo", 1)
        PosixPath('saved_models/demo')
    """
    model_dir = Path(base_dir) / check_model_name(name, name_what)
    _refuse_existing(model_dir, check_version(version, version_what), version_what)
    return model_dir


def _refuse_existing(model_dir: Path, version: Optional[int], what: str = "version") -> None:
    if version is not None and (model_dir / str(version)).exists():
        raise ExportError(
            f"{model_dir / str(version)} already exists; TF Serving versions are immutable. Choose another "
            f"{what} or leave it out to use the next free one"
        )


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(model_dir) -> list:
    """Remove the temporary folders that killed exports left in ``model_dir``; return them.

    A temporary folder is stale when the process that wrote it (recorded in its name) no
    longer runs on this machine. Folders of live processes, and of other machines (a shared
    file system), are left alone; nameless-owner folders of older kmtl versions are removed
    once untouched for a day.

    Example:
        >>> clean_stale_temporaries("saved_models/demo")
        [PosixPath('saved_models/demo/.tmp-3-5f2c9a01-4242-0b1e77aa')]
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    host, removed = _host_tag(), []
    for path in model_dir.iterdir():
        if not path.name.startswith(TMP_PREFIX) or not path.is_dir():
            continue
        match = _TMP_NAME.match(path.name)
        if match:
            stale = match.group(2) == host and not _pid_alive(int(match.group(3)))
        else:
            try:
                stale = time.time() - path.stat().st_mtime > LEGACY_TMP_AGE_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _make_tmp(model_dir: Path, version: int) -> Path:
    """A new folder with the usual permissions (``0o777`` less the umask, unlike ``mkdtemp``'s 0700)."""
    for _ in range(100):
        path = model_dir / f"{TMP_PREFIX}{version}-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise ExportError(f"could not create a temporary folder in {model_dir}")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _megabytes(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def check_free_space(model_dir, size_bytes: Optional[int]) -> None:
    """`ExportError` when the file system of ``model_dir`` has less free space than the export needs."""
    if not size_bytes:
        return
    where = _existing_ancestor(Path(model_dir))
    needed = int(size_bytes * SIZE_MARGIN)
    free = shutil.disk_usage(where).free
    if free < needed:
        raise ExportError(
            f"not enough space for the export into {model_dir}: it needs about {_megabytes(needed)}, "
            f"{_megabytes(free)} free on the file system of {where}; free some space or choose another folder"
        )


def _is_disk_full(err: BaseException) -> bool:
    """ENOSPC from Python, or TensorFlow's ResourceExhaustedError / IO errors for a full disk."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return type(err).__name__ == "ResourceExhaustedError" or "No space left on device" in text \
        or "Disk quota exceeded" in text


def _rename_into_place(tmp: Path, model_dir: Path, version: int, automatic: bool) -> Path:
    for _ in range(RENAME_TRIES):
        final = model_dir / str(version)
        try:
            if final.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(final))
            os.rename(tmp, final)  # fails (ENOTEMPTY / EEXIST) when a concurrent export took it first
            return final
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise ExportError(f"could not move the export into {final}: {err}") from err
            if not automatic:
                raise ExportError(
                    f"{final} already exists (written while this export ran); TF Serving versions are "
                    "immutable. Choose another version or leave it out to use the next free one"
                ) from None
            version = max(version + 1, next_version(model_dir))
    raise ExportError(f"could not find a free version in {model_dir} after {RENAME_TRIES} tries")


@contextlib.contextmanager
def atomic_version_dir(model_dir, version: Optional[int] = None, size_bytes: Optional[int] = None):
    """Yield an `ExportTarget`; on success its temporary folder becomes ``model_dir/<version>``.

    TF Serving watches ``model_dir`` and loads any integer folder that appears, so the export
    is written beside it under a hidden name and renamed into place only when complete.

    * An existing version is never overwritten. With ``version=None`` (the next free one), an
      export that loses the number to a concurrent export moves to the next free number.
    * Folders get the usual permissions (honouring the umask), so a server running as another
      user can read them.
    * Temporary folders that killed exports left behind are removed first
      (`clean_stale_temporaries`); on any error this export's own is removed.
    * ``size_bytes`` (an estimate of the export's size) is checked against the free space
      before anything is written; a full disk while writing becomes one `ExportError` naming
      the folder and the size.

    Example:
        >>> with atomic_version_dir("saved_models/demo") as target:
        ...     tf.saved_model.save(module, str(target.tmp))
        >>> target.final
        PosixPath('saved_models/demo/1')
    """
    model_dir = Path(model_dir)
    version = check_version(version)
    _refuse_existing(model_dir, version)
    check_free_space(model_dir, size_bytes)
    automatic = version is None
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(model_dir)
    version = next_version(model_dir) if automatic else int(version)
    target = ExportTarget(_make_tmp(model_dir, version), model_dir / str(version))
    try:
        try:
            yield target
        except Exception as err:
            if _is_disk_full(err):
                size = f"about {_megabytes(size_bytes * SIZE_MARGIN)}" if size_bytes else "more space"
                raise ExportError(
                    f"the disk filled up while writing the export into {model_dir}: it needs {size} "
                    f"({_megabytes(shutil.disk_usage(model_dir).free)} free now); nothing was left behind. "
                    "Free some space or choose another folder"
                ) from err
            raise
        target.final = _rename_into_place(target.tmp, model_dir, version, automatic)
    finally:
        if target.tmp.exists():
            shutil.rmtree(target.tmp, ignore_errors=True)
