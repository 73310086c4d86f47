"""A matplotlib figure that needs no display, and saving it so that no reader sees half a PNG.

kmtl draws on `matplotlib.figure.Figure` objects directly (the Agg renderer, no ``pyplot``):
no global backend is switched, so a notebook's own plotting is left alone, and nothing needs
a display.
"""

from __future__ import annotations

from pathlib import Path

from kmtl.files import atomic_path

DPI = 110


def new_figure(width: float, height: float):
    """A `matplotlib.figure.Figure` of ``width`` × ``height`` inches, laid out by matplotlib's
    constrained layout (long tick labels and titles are kept inside the image).

    Example:
        >>> fig = new_figure(6, 4)
        >>> ax = fig.subplots()
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_png(fig, path) -> Path:
    """Save ``fig`` as a PNG at ``path`` through a temporary file beside it, then rename.

    Example:
        >>> save_png(fig, "runs/demo/sentiment_confusion.png")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def message(ax, text: str) -> None:
    """Write ``text`` in the middle of an empty ``ax`` (a panel with nothing to draw says why)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
