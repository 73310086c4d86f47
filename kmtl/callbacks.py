"""Keras callbacks that kmtl provides (re-exported for ``kmtl.callbacks.X``)."""

from kmtl.weighting import LinearWeighting, StaticWeighting, TaskWeighting

__all__ = ["TaskWeighting", "StaticWeighting", "LinearWeighting"]
