"""Data: raw examples, sources, tokenization in tf.data, and the task mixture."""

from kmtl.data.example import Example
from kmtl.data.mixture import default_steps_per_epoch, mixture
from kmtl.data.pipeline import eval_dataset, task_dataset, validation_dataset
from kmtl.data.preprocessor import Preprocessor
from kmtl.data.sampling import get_sampler

__all__ = [
    "Example", "Preprocessor", "mixture", "default_steps_per_epoch", "task_dataset", "eval_dataset",
    "validation_dataset", "get_sampler",
]
