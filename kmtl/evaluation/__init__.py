"""Evaluation: per-task dev metrics, printed as a table and saved as JSON; Δ/Δm between two
sets of metrics (`delta.py`) and what old tasks kept when a task was added (`retention.py`)."""

from kmtl.evaluation.evaluate import evaluate_tasks, format_table, write_json
from kmtl.evaluation.predict import predict_task

__all__ = ["evaluate_tasks", "format_table", "write_json", "predict_task"]
