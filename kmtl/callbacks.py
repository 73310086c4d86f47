"""Keras callbacks that kmtl provides (re-exported for ``kmtl.callbacks.X``)."""

from kmtl.training.affinity import TaskAffinity
from kmtl.training.early_stopping import RunEarlyStopping, TaskEarlyStopping
from kmtl.training.tensorboard import TaskTensorBoard
from kmtl.weighting import (
    DynamicWeightAverage,
    GradNorm,
    LinearWeighting,
    PCGrad,
    RandomLossWeighting,
    StaticWeighting,
    StepWeighting,
    TaskWeighting,
    UncertaintyWeighting,
)

__all__ = ["TaskAffinity", "TaskEarlyStopping", "RunEarlyStopping", "TaskTensorBoard",
           "TaskWeighting", "StepWeighting", "StaticWeighting", "LinearWeighting",
           "DynamicWeightAverage", "UncertaintyWeighting", "GradNorm", "PCGrad", "RandomLossWeighting"]
