"""Figures (PNG) of a run and of a comparison, drawn with matplotlib's Agg renderer (no display).

| file | figure |
|---|---|
| `confusion.py` | `plot_confusion`: gold vs predicted label of a classification task |
| `entity_f1.py` | `plot_entity_f1`: precision / recall / F1 per entity type of a tagging task |
| `curves.py` | `plot_curves`: loss and metrics per epoch, one row per task, train and dev (`plot_run_curves`: a run's) |
| `deltas.py` | `plot_deltas`: `kmtl compare`'s per-task Δ and Δm, error bars over seeds |
| `affinity.py` | `plot_affinity`: `kmtl affinity`'s heat maps (gradient cosine, lookahead affinity) |
| `task_figures.py` | `plot_task`: the right evaluation figure for a task (`kmtl evaluate`, `kmtl train`) |
| `events.py` | `read_history`: a run's curves back from its TensorBoard logs |
| `figure.py` | a display-free figure and an atomic PNG save |

Each ``plot_x(data, path)`` writes one PNG and returns its path.

Example:
    >>> from kmtl.plots import curves_from_history, plot_curves, read_history
    >>> plot_curves(curves_from_history(read_history("runs/demo/logs")), "runs/demo/curves.png")
"""

from kmtl.plots.affinity import plot_affinity
from kmtl.plots.confusion import confusion_data, plot_confusion
from kmtl.plots.curves import CURVES_FILE, curves_from_history, history_tasks, merge_curves, plot_curves, plot_run_curves
from kmtl.plots.deltas import plot_deltas
from kmtl.plots.entity_f1 import entity_f1_data, plot_entity_f1
from kmtl.plots.events import read_history
from kmtl.plots.task_figures import figure_name, plot_task

__all__ = ["CURVES_FILE", "plot_run_curves",
           "confusion_data", "plot_confusion", "curves_from_history", "history_tasks", "merge_curves",
           "plot_curves", "plot_deltas", "entity_f1_data", "plot_entity_f1", "read_history", "figure_name",
           "plot_task", "plot_affinity"]
