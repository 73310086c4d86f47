"""Token classification (NER, POS, chunking) with word-to-wordpiece alignment."""

from __future__ import annotations

import re
from typing import Annotated, Dict, List, Literal, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from pydantic import Field

from kmtl.data.words import char_offsets
from kmtl.errors import DataError
from kmtl.tasks.base import Task
from kmtl.tasks.entity_spans import entity_spans
from kmtl.tasks.tag_schemes import OUTSIDE, SCHEMES, bio_label_set, detect_scheme, scheme_problem, split_tag, to_bio


def bio_labels(types: Sequence[str]) -> List[str]:
    """The BIO tag set for entity ``types``: ``["O", "B-T1", "I-T1", ...]``.

    Example:
        >>> bio_labels(["PER", "LOC"])
        ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']
    """
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]


@keras.saving.register_keras_serializable(package="kmtl")
class Tagging(Task):
    """Token classification: named entities and chunks (BIO, IOB1 or BIOES tags), or plain tags (POS).

    Each word is split into word pieces; the word's tag is the label of its *first* piece and
    the other pieces carry zero sample weight, so the loss and token accuracy count words, not
    pieces. Predictions are read off first pieces and mapped back to words; words cut off by
    ``max_length`` are predicted ``O`` (and counted as misses in evaluation). Dev metrics:
    entity-level precision/recall/F1 (seqeval, CoNLL style) and word accuracy.

    Tags are read in the task's ``tag_scheme`` (`kmtl.tasks.tag_schemes`: ``bio``, ``iob1``,
    ``bioes`` or ``plain``; detected from the training split by `fit_labels` when ``None``) and
    turned into BIO with ``O`` outside as they are encoded, so the head, decoding, metrics and
    serving see BIO only; a tag outside the scheme is a `DataError` naming its ``file:line``.
    With a chunk scheme the label set always holds ``O``, the tag of words cut off by
    ``max_length``.

    Args:
        name: task name.
        labels: the tag set (use `bio_labels`), in the data's scheme (converted to BIO);
            inferred from the training split when ``None`` (``O`` is then put first).
        dropout: dropout rate before the output layer.
        tag_scheme: ``"bio"``, ``"iob1"``, ``"bioes"``, ``"plain"`` or ``None`` (detect).
        outside_tag: the data's tag for words outside entities (default ``"O"``); read as ``O``.

    Example:
        >>> task = Tagging("ner", labels=bio_labels(["PER", "ORG", "LOC", "MISC"]))
        >>> task = Tagging("ner", tag_scheme="iob1")         # original CoNLL-2003 files
        >>> task.fit_labels(train_examples)                   # I-PER at a chunk start -> B-PER
    """

    kind = "tagging"
    input_fields = ("tokens",)
    token_level = True
    sequence_labels = True
    label_field = "tags"
    primary_metric = "entity_f1"
    logged_metrics = ("accuracy", "entity_f1")

    def __init__(self, name: str, labels: Optional[Sequence[str]] = None, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
                 tag_scheme: Optional[Literal["bio", "iob1", "bioes", "plain"]] = None, outside_tag: str = OUTSIDE):
        super().__init__(name, labels=labels, dropout=dropout)
        if tag_scheme is not None and tag_scheme not in SCHEMES:
            raise ValueError(f"task {name!r}: tag_scheme {tag_scheme!r} is not one of: {', '.join(SCHEMES)}")
        if not isinstance(outside_tag, str) or not outside_tag.strip() or split_tag(outside_tag):
            raise ValueError(f"task {name!r}: outside_tag {outside_tag!r} must be the data's tag for words "
                             "outside entities, such as 'O'")
        self.tag_scheme = tag_scheme
        self.outside_tag = outside_tag
        #: how `fit_labels` found the scheme when none was given (``None`` otherwise)
        self.detected_scheme: Optional[str] = None
        chunk_labels = any(split_tag(label) or label in (outside_tag, OUTSIDE) for label in self.labels or ())
        if self.labels is not None and tag_scheme != "plain" and (tag_scheme is not None or chunk_labels):
            # final before a model is built on them: every chunk scheme gives the same BIO label set
            self.labels = bio_label_set(self.labels, tag_scheme or "bio", outside_tag)

    def _settle_scheme(self, examples) -> None:
        """Detect the tag scheme from ``examples`` when none was given."""
        if self.tag_scheme is not None:
            return
        tagged = [ex for ex in examples if ex.label is not None]
        scheme, reason = detect_scheme([[str(t).strip() for t in ex.label] for ex in tagged], self.outside_tag,
                                       [ex.where for ex in tagged])
        if scheme == "plain" and any(split_tag(label) for label in self.labels or ()):
            scheme, reason = "bio", "the given labels have B-/I- prefixes"
        self.tag_scheme = scheme
        read = "; read as BIO" if scheme in ("iob1", "bioes") else ""
        self.detected_scheme = (f"task {self.name!r}: tag scheme {scheme} detected ({reason}){read}; "
                                f"set tag_scheme: {scheme} to confirm, or the scheme the data uses")

    def bio_tags(self, ex) -> List[str]:
        """The example's tags in the internal scheme (BIO with ``O``; plain tags as they are).

        Raises:
            DataError: at the word's ``file:line`` for a tag outside the task's scheme.
        """
        tags = [str(tag).strip() for tag in ex.label]
        for i, tag in enumerate(tags):
            problem = scheme_problem(tag, self.tag_scheme, self.outside_tag)
            if problem:
                token = ex.tokens[i] if ex.tokens and i < len(ex.tokens) else None
                raise DataError(_word_place(ex.where, i),
                                f"word {i + 1} ({token!r}) of task {self.name!r}: {problem}")
        return to_bio(tags, self.tag_scheme, self.outside_tag)

    def fit_labels(self, examples):
        """Detect the tag scheme (when not given), check every tag against it and, when no
        labels were given, infer them: the BIO tags seen, sorted, ``O`` first (and present
        whatever the data holds, unless the tags are plain)."""
        self._settle_scheme(examples)
        tags = [self.bio_tags(ex) for ex in examples if ex.label is not None]
        if self.labels is not None:  # given labels keep their order
            return
        seen = {tag for sentence in tags for tag in sentence}
        if not seen:
            raise DataError("", f"task {self.name!r}: no labels found in the training data")
        if self.tag_scheme != "plain":
            seen.add(OUTSIDE)
        self.labels = sorted(seen)
        if OUTSIDE in self.labels:  # "O" first: the padding label of truncated words
            self.labels = [OUTSIDE] + [label for label in self.labels if label != OUTSIDE]

    def check_inputs(self, ex) -> None:
        super().check_inputs(ex)
        if not ex.tokens:
            raise DataError(ex.where, f"task {self.name!r} needs at least one token; this sentence has none")
        if ex.label is not None and len(ex.label) != len(ex.tokens):
            raise DataError(ex.where, f"{len(ex.tokens)} tokens but {len(ex.label)} tags; give one tag per token")

    def encode_labels(self, examples: Sequence) -> List[np.ndarray]:
        self._require_labels()
        self._settle_scheme(examples)
        out = []
        for ex in examples:
            if ex.label is None:
                raise DataError(ex.where, "missing tags; every training/dev sentence needs one tag per token")
            out.append(np.array([self._label_index(tag, ex.where) for tag in self.bio_tags(ex)], dtype=np.int32))
        return out

    def input_tensors(self, examples) -> dict:
        """``{"tokens": ragged [N, (words)] strings}``."""
        return {"tokens": tf.ragged.constant([list(ex.tokens) for ex in examples], dtype=tf.string)}

    def label_tensor(self, examples):
        """Tag ids as a ragged ``[N, (words)]`` tensor."""
        labels = self.encode_labels(examples)
        return tf.RaggedTensor.from_row_lengths(
            np.concatenate(labels) if labels else np.zeros([0], np.int32), [len(l) for l in labels])

    def encode_inputs(self, preprocessor, raw, labels=None):
        """Words → word pieces (`kmtl.data.Preprocessor.encode_words`): labels on each word's
        first piece (weight 1 there, 0 elsewhere); ``aux["first_piece"]`` maps words to pieces."""
        enc = preprocessor.encode_words(raw["tokens"], labels)
        x = {name: enc[name] for name in ("token_ids", "segment_ids", "padding_mask")}
        aux = {"first_piece": enc["first_piece"]}
        if labels is None:
            return x, None, None, aux
        return x, enc["piece_labels"], enc["first_piece_mask"], aux

    def build_head(self, features: Dict):
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(features["sequence"])
        return keras.layers.Dense(self.num_outputs, name=self.name)(x)

    def per_example_loss(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    def label_spec(self, length):
        return [length], "int32", [length]

    def serving_outputs(self, output, text=None, words_info=None) -> dict:
        """Word tags and entity spans with character offsets into ``text``: ``<task>_words`` /
        ``<task>_tags`` [B, W], ``<task>_word_count`` [B], ``<task>_entity_type`` / ``_text``
        [B, E] strings, ``<task>_entity_start`` / ``_end`` [B, E] character offsets (end
        exclusive; -1 pads), ``<task>_entity_count`` [B]."""
        name = self.name
        words, byte_starts, byte_ends = words_info["words"], words_info["byte_starts"], words_info["byte_ends"]
        best = tf.argmax(output, axis=-1, output_type=tf.int32)
        first = words_info["first_piece"]
        count = tf.cast(words.row_lengths(), tf.int32)
        outside = self.labels.index(self.outside_label)
        tag_ids = tf.where(first >= 0, tf.gather(best, tf.maximum(first, 0), batch_dims=1), outside)
        valid = tf.sequence_mask(count, tf.shape(first)[1])
        tags = tf.where(valid, tf.gather(tf.constant(self.labels), tag_ids), "")

        types, first_word, last_word = entity_spans(tag_ids, count, self.labels)
        b_start = tf.gather(byte_starts.to_tensor(0), first_word.to_tensor(0), batch_dims=1)
        b_end = tf.gather(byte_ends.to_tensor(0), last_word.to_tensor(0), batch_dims=1)
        has = tf.sequence_mask(types.row_lengths(), tf.shape(b_start)[1])
        rows = tf.broadcast_to(text[:, None], tf.shape(b_start))
        return {
            f"{name}_words": words.to_tensor(""),
            f"{name}_tags": tags,
            f"{name}_word_count": count,
            f"{name}_entity_type": types.to_tensor(""),
            f"{name}_entity_text": tf.where(has, tf.strings.substr(rows, b_start, b_end - b_start), ""),
            f"{name}_entity_start": tf.where(has, char_offsets(text, b_start), -1),
            f"{name}_entity_end": tf.where(has, char_offsets(text, b_end), -1),
            f"{name}_entity_count": tf.cast(types.row_lengths(), tf.int32),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "tag_scheme": self.tag_scheme, "outside_tag": self.outside_tag}

    @classmethod
    def from_config(cls, config: dict) -> "Tagging":
        task = super().from_config(config)
        if "tag_scheme" not in config and config.get("labels") is not None:
            task.labels = [str(label) for label in config["labels"]]  # saved before tag schemes: the head's labels
        return task

    def teacher_targets(self, outputs):
        z = np.exp(outputs - np.max(outputs, axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)

    def soft_target(self, gold, teacher, lam):
        gold = keras.ops.one_hot(keras.ops.cast(gold, "int32"), self.num_outputs)
        return lam * gold + (1.0 - lam) * keras.ops.cast(teacher, "float32")

    def soft_loss(self, target, y_pred):
        return keras.losses.categorical_crossentropy(target, y_pred, from_logits=True)

    def metrics(self) -> list:
        """Word accuracy and entity F1 (`kmtl.metrics.EntityF1`, seqeval's chunks, in the graph):
        ``<task>_accuracy``, ``<task>_entity_f1``."""
        from kmtl.metrics import EntityF1

        self._require_labels()
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), EntityF1(self.labels)]

    @property
    def outside_label(self) -> str:
        """The label of words outside entities and of words cut off by ``max_length``: ``O``
        (always in the label set of a chunk scheme); plain tags have none, so the first label."""
        return OUTSIDE if OUTSIDE in self.labels else self.labels[0]

    def decode(self, outputs, examples=None, first_piece=None, **info) -> list:
        """Word tags from piece logits.

        Args:
            outputs: ``[batch, pieces, num_labels]`` logits.
            examples: the examples (their ``tokens`` give the words).
            first_piece: ``[batch, max_words]`` position of each word's first piece, ``-1`` for
                words that were truncated away or padding.

        Returns:
            one ``{"tags": [...], "entities": [{"type", "start", "end", "text"}]}`` per example,
            where ``start``/``end`` are word indices (end exclusive).
        """
        best = np.asarray(outputs).argmax(axis=-1)
        results = []
        for row, ex in enumerate(examples):
            tags = []
            for w in range(len(ex.tokens)):
                pos = int(first_piece[row, w]) if w < first_piece.shape[1] else -1
                tags.append(self.labels[best[row, pos]] if pos >= 0 else self.outside_label)
            results.append({"tags": tags, "entities": entities_from_tags(tags, ex.tokens)})
        return results

    def evaluate(self, examples, predictions) -> Dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score

        self._settle_scheme(examples)
        gold = [self.bio_tags(ex) for ex in examples]
        pred = [p["tags"] for p in predictions]
        flat_gold = [t for s in gold for t in s]
        flat_pred = [t for s in pred for t in s]
        return {
            "entity_f1": float(f1_score(gold, pred, zero_division=0)),
            "entity_precision": float(precision_score(gold, pred, zero_division=0)),
            "entity_recall": float(recall_score(gold, pred, zero_division=0)),
            "word_accuracy": float(np.mean([g == p for g, p in zip(flat_gold, flat_pred)])),
        }


def _word_place(where: str, index: int) -> str:
    """The place of word ``index`` of a sentence at ``where``: its own line for ``file:LINE``
    (CoNLL files hold one word a line), else ``where`` and the word number."""
    found = re.fullmatch(r"(.*):(\d+)", where or "")
    return f"{found.group(1)}:{int(found.group(2)) + index}" if found else where


def entities_from_tags(tags: Sequence[str], tokens: Sequence[str]) -> List[dict]:
    """Spans of a BIO tag sequence: ``[{"type", "start", "end", "text"}]`` (word indices).

    An ``I-X`` that does not continue an ``X`` entity starts a new one (as conlleval does).
    """
    spans, current = [], None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, kind = tag.partition("-")
        continues = current is not None and prefix == "I" and kind == current["type"]
        if current is not None and not continues:
            current["end"] = i
            current["text"] = " ".join(tokens[current["start"]:i])
            spans.append(current)
            current = None
        if prefix in ("B", "I") and kind and not continues:
            current = {"type": kind, "start": i}
    return spans
