"""The `Task` base class: what every task kind knows about itself."""

from __future__ import annotations

import abc
import re
from typing import Annotated, ClassVar, Dict, List, Optional, Sequence

import keras
import numpy as np
from pydantic import Field

from kmtl.data.example import Example
from kmtl.errors import DataError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

KINDS: Dict[str, type] = {}
"""The task-kind registry, ``{kind: Task subclass}``: every subclass that sets ``kind`` is in it
(a user's own kind too, once its module is imported), and the config's ``kind:`` reads it."""


def primary_metric(kind: str) -> str:
    """The `Task.evaluate` metric that tables show first and `kmtl compare` judges by."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind].primary_metric


class Task(abc.ABC):
    """One named output of the multi-task model.

    A task kind knows its head (a small stack of Keras layers on the shared encoder), its
    per-example loss, its training metrics, how to encode raw labels into arrays, and how to
    turn model outputs back into something a human reads. Subclasses set ``kind`` and
    ``input_fields`` (which `Example` fields the task reads: ``("text",)``,
    ``("text", "text_pair")`` or ``("tokens",)``).

    Args:
        name: the task's name; becomes the Keras output name and the TF Serving output key,
            so it must match ``[a-z][a-z0-9_]*``.
        labels: the label vocabulary, or ``None`` to infer it from the training examples
            with `fit_labels` (sorted, so inference is deterministic).
        dropout: dropout rate before the head's output layer.
    """

    kind: ClassVar[str] = ""
    #: the `evaluate` metric that tables show first and `kmtl compare` judges by
    primary_metric: ClassVar[str] = ""
    #: what the head emits, as ONNX and the ``ids`` signature document it: ``logits`` or ``score``
    raw_output: ClassVar[str] = "logits"
    input_fields: ClassVar[tuple] = ("text",)
    #: the source field the labels come from (``label``; ``tags`` for word-level kinds):
    #: with ``input_fields``, what a YAML source must give this kind (`kmtl.data.sources.Source.fields`)
    label_field: ClassVar[str] = "label"
    #: the names of `metrics` (``<task>_<name>`` in the logs), as literals the config reads
    #: without TensorFlow to check ``early_stopping.monitor`` (a test keeps them equal)
    logged_metrics: ClassVar[tuple] = ()
    token_level: ClassVar[bool] = False
    #: labels and sample weights carry the sequence axis ([B, T], one per word piece): kmtl's
    #: pipelines cut them with the inputs, and a label left out of ``y`` gets a weight per token
    sequence_labels: ClassVar[bool] = False
    has_labels: ClassVar[bool] = True
    #: `encode_inputs` gives one row per example (``False``: a kind that cuts long texts into
    #: windows; kmtl's pipelines then count the rows)
    one_row_per_example: ClassVar[bool] = True
    #: ``None``: the task's serving signature ``<task>`` reads ``text`` (and ``text_pair``), as
    #: the model's other inputs do. Else the names of its own string inputs (span QA:
    #: ``("question", "context")``): the signature runs `serve`, and the task stays out of
    #: ``serving_default`` and of ``model.predict`` on raw text
    serving_inputs: ClassVar[Optional[tuple]] = None
    #: ``None``, or a method ``augment(x, y, w) -> (x, y, w)`` that `kmtl.data.task_dataset` maps
    #: over this task's encoded examples after its cache (a new draw each pass over the data:
    #: dynamic masking); ``y``/``w`` hold every task's entry, the method changes its own
    augment = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind:
            known = KINDS.get(kind)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(f"task kind {kind!r} is taken by {known.__module__}.{known.__qualname__}; "
                                f"give {cls.__qualname__} another `kind`")
            KINDS[kind] = cls

    def __init__(self, name: str, labels: Optional[Sequence[str]] = None, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"task name {name!r} is not valid: use lower-case letters, digits and '_', "
                "starting with a letter (it becomes a Keras output name)"
            )
        if labels is not None:
            labels = [str(label) for label in labels]
            if len(set(labels)) != len(labels):
                raise ValueError(f"task {name!r}: labels contain duplicates: {labels}")
            if not labels:
                raise ValueError(f"task {name!r}: labels must not be empty")
        self.name = name
        self.labels: Optional[List[str]] = labels
        self.dropout = dropout

    # ----------------------------------------------------------------- labels
    @property
    def num_outputs(self) -> int:
        """Width of the head's output layer."""
        self._require_labels()
        return len(self.labels)

    def fit_labels(self, examples: Sequence[Example]) -> None:
        """Infer the label vocabulary from training examples when none was given."""
        if self.labels is not None or not self.has_labels:
            return
        seen = set()
        for ex in examples:
            seen.update(self._raw_label_values(ex))
        if not seen:
            raise DataError("", f"task {self.name!r}: no labels found in the training data")
        self.labels = sorted(seen)

    def _raw_label_values(self, ex: Example):
        return [] if ex.label is None else [str(ex.label).strip()]

    def _require_labels(self):
        if self.has_labels and self.labels is None:
            raise ValueError(
                f"task {self.name!r} has no label set yet: pass labels=... or call "
                "fit_labels(train_examples) first"
            )

    def _label_index(self, value, where: str) -> int:
        if getattr(self, "_index_of", None) is not self.labels:
            self._index = {label: i for i, label in enumerate(self.labels)}
            self._index_of = self.labels
        index = self._index.get(str(value).strip())
        if index is None:
            shown = ", ".join(self.labels[:20]) + (" ..." if len(self.labels) > 20 else "")
            raise DataError(
                where,
                f"label {value!r} is not in the label set of task {self.name!r} ({shown}); "
                "fix the label or add it to the task's `labels`",
            )
        return index

    def check_inputs(self, ex: Example) -> None:
        """Raise `DataError` when the example lacks a field this task reads."""
        for field in self.input_fields:
            value = getattr(ex, field)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(
                    ex.where, f"task {self.name!r} needs a non-empty {field!r}; this example has none"
                )

    @property
    def position_outputs(self) -> bool:
        """Whether the head emits a row per position, ``[B, T, num_outputs]`` (tagging, masked-LM,
        span QA's start/end logits), not one per example (what ONNX metadata says)."""
        return self.token_level or self.sequence_labels

    @property
    def served(self) -> bool:
        """Whether exports (SavedModel signatures, the ``ids`` outputs, ONNX) carry this task;
        an auxiliary kind (masked-LM) answers ``False`` unless asked to be served."""
        return True

    def model_text(self, text):
        """The text the encoder reads for this task, from a ``[batch]`` string tensor of
        `Example.text` in TF ops (training pipelines and serving graphs both run it); default:
        ``text`` itself (`kmtl.tasks.Relation` turns its entity markers into marker tokens)."""
        return text

    @abc.abstractmethod
    def encode_labels(self, examples: Sequence[Example]) -> np.ndarray:
        """Turn the raw labels of ``examples`` into one array (one row per example)."""

    # ------------------------------------------------------------- tf.data
    def input_tensors(self, examples: Sequence[Example]) -> dict:
        """The task's raw inputs of ``examples`` as tensors for ``from_tensor_slices`` (kmtl's
        pipelines batch them with ``ragged_batch`` when one is ragged). Default: one string
        tensor per `input_fields` entry."""
        import tensorflow as tf

        return {field: tf.constant([getattr(ex, field) for ex in examples]) for field in self.input_fields}

    def label_tensor(self, examples: Sequence[Example]):
        """`encode_labels` as ``from_tensor_slices`` takes it (default: the array itself)."""
        return self.encode_labels(examples)

    def encode_inputs(self, preprocessor, raw: dict, labels=None):
        """A batch of raw inputs (`input_tensors`, batched) → ``(x, y, w, aux)``, in the graph.

        ``x`` holds the model inputs (``token_ids``, ``segment_ids``, ``padding_mask``);
        ``y``/``w`` this task's labels and sample weights (``None`` without ``labels``);
        ``aux`` what `decode` needs besides the outputs (eval datasets keep it; ``{}``).
        A kind may return more rows than it was given (one per window of a long text), as
        long as ``x``, ``y``, ``w`` and ``aux`` agree. Default: the text (and text pair)
        packed by ``preprocessor.encode_text``, one weight per example.
        """
        import tensorflow as tf

        x = dict(preprocessor.encode_text(raw["text"], raw.get("text_pair")))
        if labels is None:
            return x, None, None, {}
        return x, labels, tf.ones([tf.shape(labels)[0]], tf.float32), {}

    # ------------------------------------------------------------------ model
    @abc.abstractmethod
    def build_head(self, features: Dict):
        """Build the head on symbolic ``features`` (``sequence`` [B, T, d], ``pooled`` [B, d], and
        ``inputs``: the model's own inputs, ``token_ids``, ``segment_ids``, ``padding_mask``);
        return the output.

        The returned tensor must come from a layer named ``self.name``.
        """

    @abc.abstractmethod
    def per_example_loss(self, y_true, y_pred):
        """Unreduced loss, the same shape as this task's sample weights ([B] or [B, T])."""

    def metrics(self) -> list:
        """Keras metrics tracked during training (weighted by the task's sample weights)."""
        return []

    def placeholder_label(self, y_pred):
        """A zero label shaped for ``y_pred``, for examples this task does not own (weight 0).

        Default: one label index per output row (classification, tagging); kinds whose
        labels have the output's shape (regression, multi-label) return ``zeros_like``.
        """
        return keras.ops.zeros(keras.ops.shape(y_pred)[:-1], dtype="int32")

    def label_spec(self, length: int):
        """``(label shape, label dtype, sample-weight shape)`` of one example, without the batch
        axis, as kmtl's `tf.data` pipelines carry it (``length``: the padded sequence length).
        Default: one label index per example."""
        return [], "int32", []

    def serving_outputs(self, output, text=None, words_info=None) -> dict:
        """The task's outputs in the raw-text serving signatures (and `kmtl.export.decode`),
        named ``<task>_<field>``, from its head's raw ``output`` for a batch. Token tasks also
        get the batch's ``text`` and ``words_info`` (`kmtl.model.raw_text.word_inputs`)."""
        raise NotImplementedError(f"{type(self).__name__} defines no serving outputs")

    def serve(self, run, preprocessor, **inputs) -> dict:
        """The ``<task>`` signature of a kind that sets `serving_inputs`, in TF ops: ``inputs`` are
        ``[batch]`` strings named as `serving_inputs`; ``run(x)`` gives this task's raw head output
        for model inputs ``x`` (``token_ids``, ``segment_ids``, ``padding_mask``; any number of
        rows); returns the named outputs (``<task>_<field>``)."""
        raise NotImplementedError(f"{type(self).__name__} sets serving_inputs but defines no serve()")

    def serving_sample(self) -> dict:
        """``{input: values}``: a valid warm-up request of a `serving_inputs` kind's signature."""
        return {name: ["text"] for name in self.serving_inputs or ()}

    def serving_variants(self) -> dict:
        """More serving signatures of this task: ``{suffix: (inputs, to_text, sample)}`` gives a
        signature ``<task>_<suffix>`` whose ``inputs`` (named `tf.TensorSpec` s) ``to_text`` turns
        into the ``[batch]`` text the task's own signature reads, in TF ops; ``sample`` is
        ``{input name: values}`` of a valid warm-up request (`kmtl.export.warmup`). Default: none."""
        return {}

    def conform_label(self, y_true, y_pred):
        """A label as a Keras user may give it, in the form the loss and metrics expect
        (default: as it is)."""
        return y_true

    # ----------------------------------------------------------- distillation
    def teacher_targets(self, outputs: np.ndarray) -> np.ndarray:
        """What a student learns from a teacher's raw head ``outputs`` (NumPy): probabilities
        (softmax, or sigmoid for multi-label) or, for regression, the score itself."""
        return np.asarray(outputs, dtype=np.float32)

    def soft_target(self, gold, teacher, lam):
        """The annealed target ``λ·gold + (1-λ)·teacher`` (Clark et al., ACL 2019)."""
        return lam * keras.ops.cast(gold, "float32") + (1.0 - lam) * keras.ops.cast(teacher, "float32")

    def soft_loss(self, target, y_pred):
        """Per-example loss against a soft ``target`` (default: `per_example_loss`, which takes
        soft targets for squared error and sigmoid cross-entropy)."""
        return self.per_example_loss(target, y_pred)

    def distillation_loss(self, y_true, y_pred, lam=1.0):
        """Per-example loss when ``y_true`` is ``{"gold": labels, "teacher": teacher targets}``:
        `soft_loss` against `soft_target` with λ = ``lam``.

        `MultiTaskModel` calls it for every target given as such a dict, with its own
        ``teacher_lambda`` variable (moved by `kmtl.distill.TeacherAnnealing`), so a model
        whose dataset carries teacher targets (`kmtl.distill.with_teachers`) distils without
        any change to its train step.
        """
        lam = keras.ops.cast(lam, "float32")
        return self.soft_loss(self.soft_target(y_true["gold"], y_true["teacher"], lam), y_pred)

    # ---------------------------------------------------------------- outputs
    @abc.abstractmethod
    def decode(self, outputs: np.ndarray, examples: Sequence[Example] = None, **info) -> list:
        """Human-readable predictions for a batch of model outputs."""

    @abc.abstractmethod
    def evaluate(self, examples: Sequence[Example], predictions: list) -> Dict[str, float]:
        """Dev-set metrics from gold ``examples`` and decoded ``predictions``."""

    # ------------------------------------------------------------ persistence
    def get_config(self) -> dict:
        """JSON-able description; `kmtl.tasks.from_config` rebuilds the task from it."""
        return {"kind": self.kind, "name": self.name, "labels": self.labels, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: dict) -> "Task":
        """The task `get_config` describes (Keras calls this for a registered kind).

        On `Task` itself the ``kind`` key picks the class (`kmtl.tasks.from_config`); on a
        kind it must name that kind. ``config`` is not changed.

        Example:
            >>> Task.from_config(Classification("s", ["a", "b"]).get_config())
            Classification(name='s', labels=['a', 'b'])
        """
        config = dict(config)
        kind = config.pop("kind", cls.kind or None)
        if not cls.kind:
            from kmtl.tasks import from_config

            return from_config({**config, "kind": kind})
        if kind != cls.kind:
            raise ValueError(f"a {kind!r} task config given to {cls.__name__}.from_config (kind {cls.kind!r}); "
                             "use kmtl.tasks.from_config, which picks the class from 'kind'")
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, labels={self.labels!r})"
