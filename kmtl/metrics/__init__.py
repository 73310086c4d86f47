"""Streaming Keras metrics for kmtl's task kinds, and the containers that log them per task.

Every metric here is a `keras.metrics.Metric` computed inside the compiled train/eval step
from a task's outputs and sample weights (so only the examples a task owns count), carries
its direction (``_direction``) and is registered for Keras serialization:

* `MacroF1` — (pair) classification, ``<task>_macro_f1``;
* `MultiLabelF1` — multi-label classification, ``<task>_macro_f1`` / ``<task>_micro_f1``;
* `PearsonR` — regression, ``<task>_pearson`` (Spearman cannot be streamed: dev metrics only);
* `EntityF1` — tagging, ``<task>_entity_f1`` (seqeval's chunks, computed in the graph).

Each kind's `kmtl.tasks.Task.metrics` returns them, so they appear in ``logs`` as
``<task>_<metric>`` and ``val_<task>_<metric>`` for History, TensorBoard, EarlyStopping and
ModelCheckpoint. `TaskMetrics` and `TaskLossTrackers` name the compiled metrics and the
``<task>_loss`` trackers by their log keys, so those callbacks need no ``mode``.

Example:
    >>> model.fit(train, validation_data=val, epochs=5, callbacks=[
    ...     keras.callbacks.EarlyStopping(monitor="val_ner_entity_f1", patience=2)])
"""

from kmtl.keras_registration import register_pending
from kmtl.metrics.entity_f1 import EntityF1
from kmtl.metrics.macro_f1 import MacroF1
from kmtl.metrics.multilabel_f1 import MultiLabelF1
from kmtl.metrics.pearson import PearsonR
from kmtl.metrics.task_losses import LossMean, TaskLossTrackers
from kmtl.metrics.task_metric import TaskMetric
from kmtl.metrics.task_metrics import TaskMetrics

__all__ = ["EntityF1", "MacroF1", "MultiLabelF1", "PearsonR", "LossMean", "TaskLossTrackers", "TaskMetric",
           "TaskMetrics"]

register_pending(__name__)  # kmtl.keras_registration: Keras may have arrived while this package was importing
