"""Progress of the slow phases (evaluate, export, compare): a bar on a terminal, a line elsewhere.

One `Progress` per phase. Where it writes (standard error by default, so that what a command
prints on standard output stays clean for pipes) decides how:

* a terminal: a bar redrawn in place (``\\r``), at most every ``min_interval`` seconds;
* anything else (a file, a pipe, CI logs, a notebook cell): one line per phase when it ends,
  with its size and duration, never a stream of redraws;
* ``mode="off"`` (the CLI's ``--quiet``, or `set_default_mode`): nothing.

No dependency: Keras' ``Progbar`` always writes to ``sys.stdout``, and a phase without a
known size (tracing a graph) is one call that cannot be polled.

Example:
    >>> with Progress("evaluate sentiment", total=14, unit="batch") as bar:
    ...     for batch in batches:
    ...         bar.update()
    evaluate sentiment: 14 batch in 3.2 s
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

MODES = ("auto", "bar", "lines", "off")
_default_mode = "auto"


def set_default_mode(mode: str) -> None:
    """Set the mode of every `Progress` created without one (``"off"``: the CLI's ``--quiet``).

    Example:
        >>> set_default_mode("off")    # nothing is printed from now on
    """
    global _default_mode
    _default_mode = _check_mode(mode)


def default_mode() -> str:
    """The mode a `Progress` created without one uses (``"auto"`` unless `set_default_mode` changed it)."""
    return _default_mode


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of: {', '.join(MODES)}")
    return mode


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (``isatty()``; False when it cannot say)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """The progress of one phase: a bar on a terminal, one line when it ends elsewhere, or nothing.

    Args:
        label: what the phase does, e.g. ``"evaluate sentiment"``.
        total: the number of steps, or ``None`` for a phase of one step (the bar then shows
            ``label ...`` and its duration when it ends).
        unit: the name of a step, printed after the counts.
        mode: ``"auto"`` (bar on a terminal, lines elsewhere), ``"bar"``, ``"lines"``, ``"off"``;
            ``None``: `default_mode`.
        stream: where to write (default: ``sys.stderr`` at creation time).
        min_interval: seconds between two redraws of the bar.

    Example:
        >>> with Progress("export SavedModel"):
        ...     export_saved_model(model, pre, "saved_models", "demo")
        export SavedModel: 12.0 s
    """

    WIDTH = 24

    def __init__(self, label: str, total: Optional[int] = None, *, unit: str = "step", mode: Optional[str] = None,
                 stream: Optional[TextIO] = None, min_interval: float = 0.1):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        mode = _check_mode(default_mode() if mode is None else mode)
        if mode == "auto":
            mode = "bar" if is_terminal(self.stream) else "lines"
        self.mode = mode
        self.min_interval = min_interval
        self.count = 0
        self.start = time.perf_counter()
        self._drawn = 0.0
        self._closed = False
        if self.mode == "bar":
            self._draw()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps done (redraws the bar at most every ``min_interval`` seconds)."""
        self.count += n
        if self.mode == "bar" and (time.perf_counter() - self._drawn >= self.min_interval
                                   or (self.total is not None and self.count >= self.total)):
            self._draw()

    def close(self) -> None:
        """End the phase: the bar's final state and a newline, or the phase's one line."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "bar":
            self._draw(final=True)
        elif self.mode == "lines":
            self._write(f"{self._summary()}\n")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _summary(self) -> str:
        seconds = time.perf_counter() - self.start
        done = f"{self.count} {self.unit} in " if self.total is not None or self.count else ""
        return f"{self.label}: {done}{seconds:.1f} s"

    def _draw(self, final: bool = False) -> None:
        self._drawn = time.perf_counter()
        elapsed = self._drawn - self.start
        if self.total is None:
            text = self._summary() if final else f"{self.label} ..."
        else:
            share = min(self.count / self.total, 1.0) if self.total else 1.0
            filled = int(round(share * self.WIDTH))
            bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * (self.WIDTH - filled - 1)
            eta = elapsed / share - elapsed if 0 < share < 1 else 0.0
            timing = f"{elapsed:.1f} s" if final or share >= 1 else f"{elapsed:.1f} s, ~{eta:.0f} s left"
            text = f"{self.label} [{bar[:self.WIDTH]}] {self.count}/{self.total} {self.unit} ({timing})"
        self._write("\r" + text + "\x1b[K" + ("\n" if final else ""))  # \x1b[K: erase the old bar's tail

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def phase(label: str, **options) -> Progress:
    """A `Progress` for a phase of one step (tracing, writing, loading): ``with phase("load run"): ...``.

    Example:
        >>> with phase("load run"):
        ...     model, pre, info = load_run("runs/demo")
        load run: 2.1 s
    """
    return Progress(label, None, **options)
