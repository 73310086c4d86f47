"""A run's per-epoch curves read back from its TensorBoard event files, as a Keras ``History``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List

SPLITS = {"train": "", "validation": "val_"}
"""Keras' TensorBoard callback (and `kmtl.training.tensorboard.TaskTensorBoard`) writes ``logs/train``
and ``logs/validation``; History names the second one's keys with ``val_``."""


def read_history(logdir) -> Dict[str, List[float]]:
    """``{name: [value per epoch]}`` from the ``epoch_*`` scalars of a run's TensorBoard logs.

    Unlike ``History.history`` of one ``fit`` call this covers a whole run, resumed parts
    included (a resumed run appends to the same logs; an epoch written twice keeps its last
    value). Epochs with no value are NaN. A folder without logs gives ``{}``.

    Args:
        logdir: the run's ``logs/`` folder (``<run_dir>/logs``).

    Example:
        >>> read_history("runs/demo/logs")["val_sentiment_accuracy"]
        [0.71, 0.78]
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    history = {}
    for split, prefix in SPLITS.items():
        folder = Path(logdir) / split
        if not folder.is_dir():
            continue
        events = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})  # 0: keep every epoch
        events.Reload()
        tags = events.Tags()
        for kind, read in (("tensors", lambda e: make_ndarray(e.tensor_proto)), ("scalars", lambda e: e.value)):
            for tag in tags.get(kind, []):
                name = log_name(tag)
                if name is None:
                    continue
                by_step = {}
                for event in getattr(events, kind.capitalize())(tag):
                    try:
                        by_step[event.step] = float(read(event))
                    except (TypeError, ValueError):  # not a number (a layout, a text summary)
                        break
                else:
                    history[prefix + name] = _dense(by_step)
    return history


def log_name(tag: str):
    """The Keras log name (without ``val_``) of an epoch-level TensorBoard tag, or ``None`` for
    other tags (batch-level, ``..._vs_iterations``, layouts).

    Reads both Keras' own tags (``epoch_<name>``) and `kmtl.training.tensorboard`'s grouped
    ones (``<task>/<metric>``, ``run/<name>``, ``loss_weights/<task>``).

    Example:
        >>> log_name("epoch_sentiment_accuracy"), log_name("sentiment/accuracy"), log_name("run/loss")
        ('sentiment_accuracy', 'sentiment_accuracy', 'loss')
    """
    if tag.startswith("epoch_") and "/" not in tag:
        return tag[len("epoch_"):]
    section, _, name = tag.partition("/")
    if not name or "/" in name or name.startswith("batch_") or section == "evaluation_vs_iterations":
        return None
    if section in ("run", "run-level"):  # kmtl/training/tensorboard.py's RUN section (renamed when a task is "run")
        return name
    if section in ("loss_weights", "loss-weights"):  # its LOSS_WEIGHTS section
        return f"loss_weight_{name}"
    return f"{section}_{name}"


def _dense(by_step: Dict[int, float]) -> List[float]:
    if not by_step:
        return []
    return [by_step.get(step, math.nan) for step in range(max(by_step) + 1)]
