"""The multi-task Keras model and its builder."""

from kmtl.model.build import build_model
from kmtl.model.multitask_model import MultiTaskModel
from kmtl.model.pooling import MaskedMeanPooling

__all__ = ["build_model", "MultiTaskModel", "MaskedMeanPooling"]
