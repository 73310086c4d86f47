"""TensorFlow's start-up lines, filtered: the CLI imports TensorFlow with its C++ stderr noise cut.

Why ``import tensorflow`` prints its start-up lines twice (TF 2.21, 8 lines per command with
the two runtime ones below): two shared libraries each link their own copy of TSL's logging
and of absl's, and each logs from its static initializers —
``tensorflow/libtensorflow_framework.so.2`` when TensorFlow loads, and
``tensorflow/python/profiler/internal/_pywrap_profiler_plugin.so``, which ``import tensorflow``
itself loads through ``tf.compat.v2.profiler.experimental.client``. Each copy prints::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.

``TF_CPP_MIN_LOG_LEVEL`` cannot hide them: they are written by absl before
``absl::InitializeLog()``, and absl then writes every message to stderr whatever the threshold
(abseil/abseil-cpp PR 1718, closed unmerged, and PR 1957, open; tensorflow/tensorflow PR 102212).
No environment variable reaches them, so `install` has the CLI run the import with file
descriptor 2 sent to a temporary file, then writes back every line except absl's preamble and
the oneDNN notice (kmtl turns oneDNN on deliberately, `kmtl/__init__.py`), and only the first
copy of a repeated line.

What remains: ``cudart_stub.cc] Could not find cuda drivers ... GPU will not be used`` once
(it says why a GPU is not used), and what ``TF_CPP_MIN_LOG_LEVEL=2`` (kmtl's default) lets
through on purpose, errors, printed after the import (so outside this filter), once per process:
``cuda_platform.cc] failed call to cuInit`` (a CUDA runtime without a driver or a GPU: the
line that says why a GPU is not used) and, on CPUs without AVX-512 with oneDNN on,
``util.cc] oneDNN supports DT_INT64 only on platforms with AVX-512``.

Example:
    >>> install()          # kmtl.cli.main: the next `import tensorflow` is filtered
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

NOISE = (
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(rb"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\."),
)
"""Lines dropped from ``import tensorflow``'s stderr (any other line is kept, once)."""


def filter_lines(data: bytes) -> bytes:
    """``data`` without the `NOISE` lines and without second copies of a line (timestamps aside).

    Example:
        >>> filter_lines(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        b''
    """
    kept, seen = [], set()
    for line in data.splitlines(keepends=True):
        text = line.rstrip(b"\r\n")
        if any(p.search(text) for p in NOISE):
            continue
        key = re.sub(rb"^([IWEF])\d{4} [\d:.]+ +\d+ ", rb"\1 ", text)  # absl's date, time and thread id
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def filtered_stderr():
    """Send file descriptor 2 (C++ and Python stderr alike) to a temporary file, then write
    it back through `filter_lines`. Where fd 2 cannot be redirected, nothing is filtered."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = filter_lines(tmp.read())
            if kept:
                os.write(2, kept)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of the ``tensorflow`` package inside `filtered_stderr`."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_resource_reader, get_data...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self.loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders, and wraps its loader in `_QuietLoader` (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Filter the next ``import tensorflow``, whoever makes it (the CLI imports TensorFlow
    lazily, after validating its input). Does nothing when TensorFlow is already imported."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())


def uninstall() -> None:
    """Remove the finder `install` added, if any."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]
