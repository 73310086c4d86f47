"""Sentence vectors from the encoder's token vectors."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kmtl")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the token vectors under the padding mask (how MiniLM/sentence-transformers pool).

    Call args:
        sequence: ``[batch, length, hidden]`` token vectors.
        padding_mask: ``[batch, length]``, 1 for real tokens.

    Example:
        >>> pooled = MaskedMeanPooling()(sequence_output, padding_mask)
    """

    def call(self, sequence, padding_mask):
        mask = ops.cast(ops.expand_dims(padding_mask, -1), sequence.dtype)
        total = ops.sum(sequence * mask, axis=1)
        count = ops.maximum(ops.sum(mask, axis=1), 1.0)
        return total / count
