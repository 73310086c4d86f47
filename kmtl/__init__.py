"""kmtl: multi-task learning for NLP with Keras 3, keras-hub and TensorFlow.

One shared pretrained BERT encoder, one named output head per task, trained together with
`model.fit`, watched in TensorBoard, exported as one SavedModel for TF Serving.

Example:
    >>> import kmtl
    >>> encoder = kmtl.load_backbone("minilm-l6")
    >>> tasks = [kmtl.tasks.Classification("sentiment", labels=["negative", "positive"])]
    >>> model = kmtl.build_model(encoder, tasks)
"""

import importlib
import os

# Keras must run on TensorFlow (tf.data pipelines, TF Text ops, SavedModel export), and oneDNN
# makes CPU training several times faster on machines where TF leaves it off. Both must be set
# before TensorFlow is imported.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from kmtl.errors import ConfigError, DataError, ExportError, KmtlError  # noqa: E402  (no TF)
from kmtl.keras_registration import install as _install_keras_registration  # noqa: E402  (no TF)

# `keras.saving.load_model("m.keras")` after a bare `import kmtl`: kmtl's Keras classes are
# registered as soon as Keras is imported (now, if it already is), without importing TF here.
_install_keras_registration()

# TensorFlow takes seconds to import: the rest loads on first use, so that `kmtl train` can
# reject a bad config before any TF work.
_LAZY = {
    "data": ("kmtl.data", None),
    "tasks": ("kmtl.tasks", None),
    "callbacks": ("kmtl.callbacks", None),
    "weighting": ("kmtl.weighting", None),
    "metrics": ("kmtl.metrics", None),
    "sharing": ("kmtl.sharing", None),
    "evaluation": ("kmtl.evaluation", None),
    "export": ("kmtl.export", None),
    "serving": ("kmtl.serving", None),
    "training": ("kmtl.training", None),
    "config": ("kmtl.config", None),
    "Encoder": ("kmtl.backbone", "Encoder"),
    "load_backbone": ("kmtl.backbone", "load_backbone"),
    "MultiTaskModel": ("kmtl.model", "MultiTaskModel"),
    "build_model": ("kmtl.model", "build_model"),
    "precision_scope": ("kmtl.model.precision", "precision_scope"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'kmtl' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["KmtlError", "ConfigError", "DataError", "ExportError", "__version__", *_LAZY]
