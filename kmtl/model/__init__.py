"""The multi-task Keras model and its builder."""

from kmtl.keras_registration import register_pending
from kmtl.model.build import build_model
from kmtl.model.multitask_model import MultiTaskModel
from kmtl.model.pooling import MaskedMeanPooling

__all__ = ["build_model", "MultiTaskModel", "MaskedMeanPooling"]

register_pending(__name__)  # kmtl.keras_registration: Keras may have arrived while this package was importing
