"""Task kinds: one class per kind of task, each owning its head, loss, metrics and codec."""

from kmtl.tasks.base import KINDS, Task, primary_metric
from kmtl.tasks.classification import Classification, PairClassification
from kmtl.tasks.masked_lm import MaskedLM
from kmtl.tasks.multilabel import MultiLabelClassification
from kmtl.tasks.regression import PairRegression, Regression
from kmtl.tasks.relation import Relation
from kmtl.tasks.span_qa import SpanQA
from kmtl.tasks.tagging import Tagging, bio_labels, entities_from_tags


def from_config(config: dict) -> Task:
    """Rebuild a task from `Task.get_config` output (or a config-file task section).

    Example:
        >>> from_config({"kind": "classification", "name": "sentiment", "labels": ["neg", "pos"]})
    """
    kind = config.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return KINDS[kind].from_config(config)


__all__ = [
    "Task", "Classification", "PairClassification", "MaskedLM", "MultiLabelClassification", "Regression",
    "PairRegression", "Relation", "SpanQA", "Tagging", "bio_labels", "entities_from_tags", "KINDS", "from_config",
    "primary_metric",
]
