"""Keras callbacks that kmtl provides (re-exported for ``kmtl.callbacks.X``)."""

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

__all__ = ["TaskWeighting", "StepWeighting", "StaticWeighting", "LinearWeighting", "DynamicWeightAverage",
           "UncertaintyWeighting", "GradNorm", "PCGrad", "RandomLossWeighting"]
