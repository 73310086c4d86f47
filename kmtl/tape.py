"""Whether an op runs in training: the switch of kmtl's training-only kernels.

`kmtl.layer_norm` and `kmtl.activations` replace Keras' ops by faster ones only while a gradient
tape records (training); inference graphs (``predict``, the SavedModel's signatures, the ONNX
graph) keep Keras' plain ops, which serving runtimes recognise and fuse. `kmtl.dense` is the
converse: its fused form only while no tape records.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.eager import record

FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def training_tensor(x) -> bool:
    """True when ``x`` is a dense floating-point tensor and a gradient tape may be recording.

    Example:
        >>> training_tensor(tf.ones([2]))
        False
        >>> with tf.GradientTape():
        ...     training_tensor(tf.ones([2]))
        True
    """
    # TF's private record.could_possibly_record: there is no public "is a tape watching" check
    return (tf.is_tensor(x) and not isinstance(x, tf.SparseTensor) and x.dtype in FLOAT_DTYPES
            and record.could_possibly_record())
