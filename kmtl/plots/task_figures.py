"""The evaluation figure of one task, from its dev examples and decoded predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from kmtl.plots.confusion import confusion_data, plot_confusion
from kmtl.plots.entity_f1 import entity_f1_data, plot_entity_f1


def figure_name(task) -> Optional[str]:
    """The PNG file name of ``task``'s evaluation figure, or ``None`` for a kind without one:
    ``<task>_confusion.png`` (classification, pair classification), ``<task>_entity_f1.png``
    (tagging).

    Example:
        >>> figure_name(kmtl.tasks.Tagging("ner"))
        'ner_entity_f1.png'
    """
    from kmtl.tasks import Classification, Tagging

    if isinstance(task, Classification):
        return f"{task.name}_confusion.png"
    if isinstance(task, Tagging):
        return f"{task.name}_entity_f1.png"
    return None


def plot_task(task, examples: Sequence, predictions: Sequence, folder) -> Optional[Path]:
    """Write ``task``'s evaluation figure into ``folder``: a confusion matrix for a
    classification task, precision/recall/F1 per entity type for a tagging task.

    Args:
        task: a `kmtl.tasks.Task`; other kinds (regression, multi-label) get no figure.
        examples: its labelled dev examples.
        predictions: ``task.decode`` output for them, in order (as ``task.evaluate`` takes).
        folder: where the PNG goes (the run folder, beside ``metrics.json``).

    Returns:
        the PNG's path, or ``None`` when the kind has no figure or there are no examples.

    Example:
        >>> plot_task(sentiment, dev["sentiment"], predict_task(model, sentiment, dev["sentiment"], pre), "runs/demo")
        PosixPath('runs/demo/sentiment_confusion.png')
    """
    name = figure_name(task)
    if name is None or not examples:
        return None
    path = Path(folder) / name
    if name.endswith("_confusion.png"):
        data = confusion_data([str(ex.label).strip() for ex in examples], [p["label"] for p in predictions],
                              task.labels)
        return plot_confusion(data, path, title=task.name)
    data = entity_f1_data([task.bio_tags(ex) for ex in examples], [p["tags"] for p in predictions])
    return plot_entity_f1(data, path, title=task.name)
