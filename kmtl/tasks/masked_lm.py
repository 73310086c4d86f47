"""Masked-language modelling as an auxiliary task: BERT's masked-token objective on unlabelled text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from keras.src.utils.tracking import DotNotTrackScope  # private: see build_head
from pydantic import Field
from scipy.special import logsumexp

from kmtl.tasks.base import Task

EVALUATION_PASS = -1
"""The pass number whose masks `MaskedLM.encode_inputs` gives evaluation data (training passes
count from 0): one fixed mask per text, whatever the batch or the run."""


@dataclass(frozen=True)
class MaskVocabulary:
    """The token ids masking needs, read from a `kmtl.data.Preprocessor`'s tokenizer.

    Attributes:
        mask_id: the id of ``[MASK]``.
        special_ids: ids never masked (``[PAD]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, ``[UNK]``).
        size: the vocabulary size.
        tokens: the vocabulary, id order (what `MaskedLM.decode` names predictions with).
    """

    mask_id: int
    special_ids: Tuple[int, ...]
    size: int
    tokens: Tuple[str, ...]

    @classmethod
    def of(cls, preprocessor) -> "MaskVocabulary":
        tokenizer = preprocessor.tokenizer
        mask_token = getattr(tokenizer, "mask_token", None) or "[MASK]"
        try:
            mask_id = int(tokenizer.token_to_id(mask_token))
        except (KeyError, ValueError):
            raise ValueError(f"the tokenizer's vocabulary has no {mask_token!r} token, which masked-LM tasks "
                             "need; use a BERT WordPiece vocabulary (it has [MASK])") from None
        special = {preprocessor.pad_id, preprocessor.cls_id, preprocessor.sep_id, preprocessor.unk_id, mask_id}
        return cls(mask_id, tuple(sorted(special)), int(tokenizer.vocabulary_size()),
                   tuple(str(t) for t in tokenizer.get_vocabulary()))

    @property
    def replacement_ids(self) -> np.ndarray:
        """The ids a masked token may be replaced with at random: all but the special ones."""
        ids = np.arange(self.size, dtype=np.int32)
        return ids[~np.isin(ids, self.special_ids)]


def mask_tokens(token_ids, seed, vocabulary: MaskVocabulary, rate: float = 0.15):
    """BERT's masking of one sequence, drawn with stateless random ops from ``seed``.

    ``round(rate · n)`` of the sequence's ``n`` maskable pieces (at least one when ``n > 0``;
    never a special token of ``vocabulary``) are chosen; each chosen piece becomes ``[MASK]``
    with probability 0.8, a random non-special piece with 0.1, and stays itself with 0.1
    (Devlin et al., NAACL 2019). The same ``token_ids`` and ``seed`` give the same mask.

    Args:
        token_ids: ``[L]`` int token ids.
        seed: ``[2]`` int seed (`tf.random.stateless_uniform`'s).
        vocabulary: the `MaskVocabulary`.
        rate: the share of maskable pieces to predict.

    Returns:
        ``(inputs, labels, weights)``, each ``[L]``: the masked ids; the original id at chosen
        positions and 0 elsewhere (int32); 1.0 at chosen positions and 0.0 elsewhere.

    Example:
        >>> ids, labels, weights = mask_tokens(x["token_ids"][0], tf.constant([0, 7]), MaskVocabulary.of(pre))
    """
    token_ids = tf.cast(token_ids, tf.int32)
    length = tf.shape(token_ids)[0]
    special = tf.constant(vocabulary.special_ids, tf.int32)
    maskable = tf.reduce_all(tf.not_equal(token_ids[:, None], special[None, :]), axis=1)
    n = tf.reduce_sum(tf.cast(maskable, tf.float32))
    count = tf.where(n > 0, tf.maximum(tf.round(rate * n), 1.0), 0.0)
    pick, kind, replace = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    scores = tf.where(maskable, tf.random.stateless_uniform([length], pick), 2.0)  # maskable pieces first
    rank = tf.math.invert_permutation(tf.argsort(scores, stable=True))
    chosen = tf.cast(rank, tf.float32) < count
    draw = tf.random.stateless_uniform([length], kind)
    candidates = tf.constant(vocabulary.replacement_ids)
    random_ids = tf.gather(candidates, tf.random.stateless_uniform([length], replace, maxval=int(candidates.shape[0]),
                                                                   dtype=tf.int32))
    inputs = tf.where(chosen & (draw < 0.8), vocabulary.mask_id,
                      tf.where(chosen & (draw < 0.9), random_ids, token_ids))
    return inputs, tf.where(chosen, token_ids, 0), tf.cast(chosen, tf.float32)


def sequence_seed(token_ids, seed: int, passes):
    """``[..., 2]`` stateless seeds for sequences ``[..., L]``: the fingerprint of ``seed`` and
    the sequence's ids, and the pass number ``passes`` (``[...]``); nothing else (not the batch,
    not the order)."""
    ids = tf.cast(token_ids, tf.int32)
    salt = tf.bitcast(tf.constant(seed, tf.int64), tf.int32)  # [2]
    salted = tf.concat([tf.broadcast_to(salt, tf.concat([tf.shape(ids)[:-1], [2]], 0)), ids], axis=-1)
    prints = tf.bitcast(tf.fingerprint(tf.reshape(salted, [-1, tf.shape(salted)[-1]])), tf.int64)  # [N]
    prints = tf.reshape(prints, tf.shape(ids)[:-1])
    return tf.stack([prints, tf.cast(passes, tf.int64) + tf.zeros_like(prints)], axis=-1)


@keras.saving.register_keras_serializable(package="kmtl")
def gelu_approximate(x):
    """GELU, tanh approximation: as the keras-hub BERT encoder's layers, and without ``Erfc``,
    which tf2onnx cannot convert."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="kmtl")
class TokenPositions(keras.layers.Layer):
    """Every position of a batch of sequences, ``[B, T]`` int32 (``0 .. T-1`` on each row): the
    ``mask_positions`` that make keras-hub's ``MaskedLMHead`` predict at every piece."""

    def call(self, token_ids):
        shape = keras.ops.shape(token_ids)
        return keras.ops.broadcast_to(keras.ops.arange(shape[1], dtype="int32")[None, :], shape)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")


def find_token_embedding(tensor):
    """The backbone's token embedding (a ``ReversibleEmbedding``) behind a symbolic ``tensor``.

    Walks the Keras graph back from ``tensor`` (the model's ``sequence`` feature) to the first
    operation that is a keras-hub backbone (it has ``token_embedding``) or the token-embedding
    layer itself (sharing modes that re-run the backbone's graph layer by layer, such as
    per-task adapters, call it directly).

    Raises:
        ValueError: no such layer is behind ``tensor``.
    """
    seen, stack = set(), [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        if history is None or id(history.operation) in seen:
            continue
        operation = history.operation
        seen.add(id(operation))
        found = getattr(operation, "token_embedding", None)
        if found is None and operation.name == "token_embedding" and hasattr(operation, "input_dim"):
            found = operation
        if found is not None:
            return found
        stack.extend(operation._inbound_nodes[history.node_index].input_tensors)
    raise ValueError("a masked_lm head ties its output layer to the backbone's token embedding, and no layer "
                     "named 'token_embedding' (or backbone with a `token_embedding`) is behind the encoder's "
                     "output; use a keras-hub BERT-style backbone (kmtl.load_backbone)")


@keras.saving.register_keras_serializable(package="kmtl")
class MaskedLM(Task):
    """Masked-language modelling on unlabelled text, as an auxiliary task beside labelled ones.

    BERT's pre-training objective (Devlin et al., "BERT: Pre-training of Deep Bidirectional
    Transformers for Language Understanding", NAACL 2019) with RoBERTa's dynamic masking (Liu et
    al., "RoBERTa: A Robustly Optimized BERT Pretraining Approach", arXiv 2019): mixed into
    training with its own loss weight, it keeps the encoder a language model while the other
    heads fine-tune it (an auxiliary LM loss, as in Chronopoulou et al., "An Embarrassingly
    Simple Approach for Transfer Learning from Pretrained Language Models", NAACL 2019).

    Data: paragraphs of text (`kmtl.data.sources.TextSource`, ``format: text``), no labels. Each
    training pass masks anew (`augment`, `mask_tokens`): ``mask_rate`` of the maskable pieces
    (never ``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``) are chosen; 80 % become ``[MASK]``, 10 % a
    random piece, 10 % stay. Draws are stateless: a sequence's mask is a function of ``seed``,
    its ids and how many times this task object has masked it (its pass; a lookup table of the
    task counts them), so a run reproduces whatever tf.data's parallelism (unless one text comes
    twice among the elements tf.data maps at once: a task with fewer texts than parallel calls,
    or a repeated paragraph, may swap those masks between passes). The ``val_<task>_*`` figures
    of ``fit`` are masked the same way; evaluation data (`encode_inputs` without labels,
    `evaluate`) gets one fixed mask per text (pass `EVALUATION_PASS`), so dev figures compare
    across runs. Long paragraphs are cut at the preprocessor's ``max_length``. Labels are the
    original ids at the chosen pieces (weight 1 there, 0 elsewhere: the loss and metrics count
    masked pieces only).

    Head: keras-hub's ``MaskedLMHead`` (dense + GELU + LayerNorm, then the *transposed token
    embedding* of the backbone and a bias: tied weights, Press & Wolf, "Using the Output
    Embedding to Improve Language Models", EACL 2017; no vocabulary-sized kernel), predicting at
    every piece: logits ``[B, T, vocabulary]``. That is large (30,522 columns for BERT): every
    batch, and every ``model.predict``, computes them for all its examples.

    Metrics: masked-piece ``accuracy`` and ``perplexity`` (exp of the mean cross-entropy over
    masked pieces; lower is better, the primary metric), in training and in `evaluate`.

    Not served by default: `serving_outputs` is empty unless ``serve`` is set (then the most
    likely piece id and its probability at every piece). Distillation does not apply: a teacher's
    targets would be a distribution over the whole vocabulary at every piece (``distillable =
    False``; `teacher_targets` and `distillation_loss` raise).

    Args:
        name: task name (Keras output name).
        labels: must be ``None`` (the task reads no labels).
        dropout: dropout on the token vectors before the head (BERT uses none).
        mask_rate: the share of maskable pieces to predict (BERT: 0.15).
        seed: the masking seed.
        serve: give ``<task>_top_ids`` / ``<task>_top_probability`` in the serving signatures.

    Example:
        >>> mlm = MaskedLM("mlm")
        >>> texts = TextSource("../shared/data/wikitext2/valid.txt").read()
        >>> model = kmtl.build_model(kmtl.load_backbone(), [Classification("sst2", ["0", "1"]), mlm])
        >>> train = kmtl.data.mixture(model.tasks, {"sst2": sst2, "mlm": texts}, model.preprocessor)
        >>> model.compile(optimizer="adamw", loss_weights={"mlm": 0.1})
    """

    kind = "masked_lm"
    input_fields = ("text",)
    label_field = None
    has_labels = False
    sequence_labels = True
    primary_metric = "perplexity"
    logged_metrics = ("accuracy", "perplexity")
    distillable = False

    def __init__(self, name: str, labels: Optional[Sequence[str]] = None, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0,
                 mask_rate: float = 0.15, seed: int = 0, serve: bool = False):
        if labels is not None:
            raise ValueError(f"task {name!r}: masked_lm tasks read no labels; remove labels")
        if isinstance(mask_rate, bool) or not isinstance(mask_rate, (int, float)) or not 0.0 < mask_rate < 1.0:
            raise ValueError(f"task {name!r}: mask_rate must be between 0 and 1 (BERT: 0.15), got {mask_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"task {name!r}: seed must be a whole number, got {seed!r}")
        super().__init__(name, None, dropout)
        self.mask_rate, self.seed, self.serve = float(mask_rate), seed, bool(serve)
        self.vocabulary: Optional[MaskVocabulary] = None  # read from the preprocessor by encode_inputs
        self.vocabulary_size: Optional[int] = None  # the head's, once built
        self._passes = None  # {sequence fingerprint: passes masked} (a tf table) and its lock, made by augment

    @property
    def served(self) -> bool:
        """Only with ``serve=True``: a vocabulary-wide output at every piece is training's business."""
        return self.serve

    @property
    def num_outputs(self) -> int:
        """The vocabulary size (known once the head is built or data encoded)."""
        size = self.vocabulary_size or (self.vocabulary.size if self.vocabulary else None)
        if size is None:
            raise ValueError(f"task {self.name!r}: the vocabulary size is known once the model is built")
        return size

    # ----------------------------------------------------------------- labels
    def encode_labels(self, examples) -> np.ndarray:
        """No labels: a zero per example (the masks, drawn each pass, are the labels)."""
        return np.zeros([len(examples)], np.int32)

    def label_spec(self, length):
        return [length], "int32", [length]

    # ------------------------------------------------------------- tf.data
    def encode_inputs(self, preprocessor, raw: dict, labels=None):
        """Pack the texts (`kmtl.data.Preprocessor.encode_text`).

        With ``labels`` (training pipelines): unmasked inputs and zero labels and weights, which
        `augment` fills in each pass. Without (evaluation): inputs masked once and for all
        (pass `EVALUATION_PASS`); ``aux`` carries ``masked_labels`` and ``masked_weights`` for
        `decode`.
        """
        self.vocabulary = MaskVocabulary.of(preprocessor)
        x = dict(preprocessor.encode_text(raw["text"]))
        if labels is not None:
            zeros = tf.zeros_like(x["token_ids"])
            return x, zeros, tf.cast(zeros, tf.float32), {}
        seeds = sequence_seed(x["token_ids"], self.seed, EVALUATION_PASS)
        vocabulary, rate = self.vocabulary, self.mask_rate
        ids, labels, weights = tf.map_fn(lambda a: mask_tokens(a[0], a[1], vocabulary, rate), (x["token_ids"], seeds),
                                         fn_output_signature=(tf.int32, tf.int32, tf.float32))
        x["token_ids"] = ids
        return x, None, None, {"masked_labels": labels, "masked_weights": weights}

    def augment(self, x, y, w):
        """Dynamic masking of one encoded training example (`kmtl.data.task_dataset` maps it
        after its cache): a new mask each pass over the data, seeded by `sequence_seed`."""
        if self.vocabulary is None:
            raise RuntimeError(f"task {self.name!r}: augment masks what encode_inputs made; build the dataset with "
                               "kmtl.data.task_dataset (or kmtl.data.mixture)")
        seed = sequence_seed(x["token_ids"], self.seed, self._next_pass(x["token_ids"]))
        ids, labels, weights = mask_tokens(x["token_ids"], seed, self.vocabulary, self.mask_rate)
        x = {**x, "token_ids": tf.cast(ids, x["token_ids"].dtype)}
        return x, {**y, self.name: labels}, {**w, self.name: weights}

    def _next_pass(self, token_ids):
        """How many times this task has masked ``token_ids`` before (a scalar), counted up at once."""
        if self._passes is None:
            with tf.init_scope():  # the task's own, outside the dataset function that captures them
                self._passes = (tf.lookup.experimental.MutableHashTable(tf.int64, tf.int64, default_value=0),
                                tf.CriticalSection(name=f"{self.name}_passes"))
        table, lock = self._passes
        key = tf.bitcast(tf.fingerprint(tf.cast(token_ids, tf.int32)[None]), tf.int64)  # [1]

        def count():  # look up and count up in one step, whatever tf.data runs in parallel
            seen = table.lookup(key)
            with tf.control_dependencies([table.insert(key, seen + 1)]):
                return tf.identity(seen[0])

        return lock.execute(count)

    # ------------------------------------------------------------------ model
    def build_head(self, features: Dict):
        """keras-hub's ``MaskedLMHead`` on every piece, tied to the backbone's token embedding
        (`find_token_embedding`): logits ``[B, T, vocabulary]``."""
        import keras_hub

        embedding = find_token_embedding(features["sequence"])
        self.vocabulary_size = int(embedding.input_dim)
        x = features["sequence"]
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(x)
        positions = TokenPositions(name=f"{self.name}_positions")(features["inputs"]["token_ids"])
        # untracked: the embedding stays the backbone's weight only (one copy in the head's
        # `weights`, parameter counts and saved files: the backbone's), the head just reads it
        with DotNotTrackScope():
            head = keras_hub.layers.MaskedLMHead(
                token_embedding=embedding, intermediate_activation=gelu_approximate,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name=self.name)
        return head(x, positions)

    def per_example_loss(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    def metrics(self) -> list:
        """Masked-piece accuracy and perplexity (keras-hub's): ``<task>_accuracy``, ``<task>_perplexity``."""
        import keras_hub

        perplexity = keras_hub.metrics.Perplexity(from_logits=True, name="perplexity")
        perplexity._direction = "down"  # what Keras' callbacks read (kmtl.metrics.TaskMetric)
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), perplexity]

    def serving_outputs(self, output, text=None, words_info=None) -> dict:
        """Nothing, unless ``serve``: then ``<task>_top_ids`` [B, T] (the most likely piece id,
        an index into the tokenizer's vocabulary) and ``<task>_top_probability`` [B, T]."""
        if not self.serve:
            return {}
        probs = tf.nn.softmax(output, axis=-1)
        return {f"{self.name}_top_ids": tf.argmax(probs, axis=-1, output_type=tf.int32),
                f"{self.name}_top_probability": tf.reduce_max(probs, axis=-1)}

    # ----------------------------------------------------------- distillation
    def teacher_targets(self, outputs):
        raise ValueError(f"task {self.name!r}: masked_lm tasks are not distilled (a teacher's target would be a "
                         "distribution over the whole vocabulary at every piece); remove its teacher")

    def distillation_loss(self, y_true, y_pred, lam=1.0):
        return self.teacher_targets(None)

    # ---------------------------------------------------------------- outputs
    def decode(self, outputs, examples=None, masked_labels=None, masked_weights=None, **info) -> list:
        """Predictions at the masked pieces of evaluation batches (`encode_inputs` without labels).

        Args:
            outputs: ``[batch, pieces, vocabulary]`` logits.
            masked_labels: ``[batch, >= pieces]`` original ids at masked pieces.
            masked_weights: ``[batch, >= pieces]`` 1.0 at masked pieces.

        Returns:
            one ``{"positions", "gold_ids", "predicted_ids", "predicted_tokens", "correct",
            "log_likelihood"}`` per example: the masked pieces' positions, their original and
            most likely ids (and tokens), how many were right, and the sum of log p(original).
        """
        if masked_labels is None or masked_weights is None:
            raise ValueError(f"task {self.name!r}: decoding needs the masks of the inputs (aux masked_labels and "
                             "masked_weights): predict with kmtl.evaluation.predict_task")
        outputs = np.asarray(outputs)
        width = outputs.shape[1]
        labels, weights = np.asarray(masked_labels)[:, :width], np.asarray(masked_weights)[:, :width]
        tokens = self.vocabulary.tokens if self.vocabulary is not None else None
        results = []
        for row in range(outputs.shape[0]):
            positions = np.flatnonzero(weights[row] > 0)
            logits = outputs[row, positions].astype(np.float64)  # [masked, vocabulary]
            gold = labels[row, positions]
            predicted = logits.argmax(axis=-1) if len(positions) else np.zeros(0, int)
            log_likelihood = logits[np.arange(len(positions)), gold] - logsumexp(logits, axis=-1)
            results.append({
                "positions": positions.tolist(),
                "gold_ids": gold.tolist(),
                "predicted_ids": predicted.tolist(),
                "predicted_tokens": [tokens[i] for i in predicted] if tokens else None,
                "correct": int(np.sum(predicted == gold)),
                "log_likelihood": float(np.sum(log_likelihood)),
            })
        return results

    def evaluate(self, examples, predictions) -> Dict[str, float]:
        """Masked-piece accuracy, perplexity (exp of the mean negative log-likelihood) and the
        number of masked pieces, over all ``predictions``; NaN when nothing was masked."""
        masked = sum(len(p["positions"]) for p in predictions)
        if not masked:
            return {"accuracy": float("nan"), "perplexity": float("nan"), "masked_tokens": 0}
        return {"accuracy": sum(p["correct"] for p in predictions) / masked,
                "perplexity": float(np.exp(-sum(p["log_likelihood"] for p in predictions) / masked)),
                "masked_tokens": masked}

    # ------------------------------------------------------------ persistence
    def get_config(self) -> dict:
        return {**super().get_config(), "mask_rate": self.mask_rate, "seed": self.seed, "serve": self.serve}

    def __repr__(self):
        return f"MaskedLM(name={self.name!r}, mask_rate={self.mask_rate}, seed={self.seed})"
