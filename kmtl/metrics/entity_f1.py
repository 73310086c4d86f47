"""`EntityF1`: entity-level F1 of BIO tagging (seqeval's default, CoNLL style), in the graph."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from kmtl.metrics.macro_f1 import f1_from_counts

# the first character of a tag, as seqeval's chunk rules tell them apart
O, B, I, E, S, DOT, OTHER = range(7)
_PREFIX = {"O": O, "B": B, "I": I, "E": E, "S": S, ".": DOT}


def tag_codes(labels: Sequence[str]):
    """``(prefix, type)`` int arrays, one entry per label, parsed as seqeval parses a tag:
    prefix = the first character, type = what follows ``<prefix>-`` (``"_"`` when nothing)."""
    prefixes, types, type_ids = [], [], {"_": 0}
    for label in labels:
        label = str(label)
        prefixes.append(_PREFIX.get(label[:1], OTHER))
        kind = label[1:].split("-", 1)[-1] or "_"
        types.append(type_ids.setdefault(kind, len(type_ids)))
    return np.array(prefixes, np.int32), np.array(types, np.int32)


def _in(x, *codes):
    return tf.reduce_any(tf.stack([tf.equal(x, c) for c in codes]), axis=0)


def _chunk_ends(prefix, kind, next_prefix, next_kind):
    """seqeval's ``end_of_chunk(prev, tag)``, asked at each word about the word after it."""
    return (_in(prefix, E, S)
            | (_in(prefix, B, I) & _in(next_prefix, B, S, O))
            | (~_in(prefix, O, DOT) & tf.not_equal(kind, next_kind)))


def _chunk_starts(prev_prefix, prev_kind, prefix, kind):
    """seqeval's ``start_of_chunk(prev, tag)``."""
    return (_in(prefix, B, S)
            | (_in(prev_prefix, E, S, O) & _in(prefix, E, I))
            | (~_in(prefix, O, DOT) & tf.not_equal(prev_kind, kind)))


def _left_align(values, keep):
    """Each row's ``values`` where ``keep``, moved to the front in order (static shapes: no
    boolean_mask, so the step still compiles with XLA)."""
    position = tf.broadcast_to(tf.range(tf.shape(values)[1])[None, :], tf.shape(values))
    order = tf.argsort(tf.where(keep, position, position + tf.shape(values)[1]), axis=1, stable=True)
    return tf.gather(values, order, batch_dims=1)


def _chunks(prefix, kind):
    """Chunks of each row of word tags (``[batch, words]``; rows padded with O, type 0):
    whether a chunk ends at each word, the word it began at, and its type."""
    outside, none = tf.fill(tf.shape(prefix[:, :1]), O), tf.zeros_like(kind[:, :1])  # the O around sentences
    prev_prefix, prev_kind = tf.concat([outside, prefix[:, :-1]], 1), tf.concat([none, kind[:, :-1]], 1)
    next_prefix, next_kind = tf.concat([prefix[:, 1:], outside], 1), tf.concat([kind[:, 1:], none], 1)
    ends = _chunk_ends(prefix, kind, next_prefix, next_kind)
    starts = _chunk_starts(prev_prefix, prev_kind, prefix, kind)
    # a chunk ending at word i began at the last start at or before i (seqeval: 0 before any start)
    position = tf.broadcast_to(tf.range(tf.shape(prefix)[1])[None, :], tf.shape(prefix))
    start_positions = _left_align(position, starts)
    count = tf.cumsum(tf.cast(starts, tf.int32), axis=1)
    begins = tf.where(count > 0, tf.gather(start_positions, tf.maximum(count - 1, 0), batch_dims=1), 0)
    return ends, begins, kind


@keras.saving.register_keras_serializable(package="kmtl")
class EntityF1(keras.metrics.Metric):
    """Entity-level (chunk) F1 of a tagging head, computed inside the train/eval step.

    The words are the positions whose sample weight is > 0 — kmtl's pipelines give weight 1
    to the first word piece of each word of the examples the task owns (0 to other pieces,
    padding and other tasks' examples) — read in order, each example a sentence. Gold and
    predicted (arg-max) tags are cut into chunks with seqeval's default (conlleval) rules:
    ``B-X`` starts a chunk, ``I-X`` continues an ``X`` chunk and otherwise starts one (an
    ``I-`` after ``O`` or after another type), a chunk runs on to the end of its sentence
    when nothing closes it; ``E-``/``S-`` (BIOES) follow seqeval too. A predicted chunk is
    right when a gold chunk has the same type, first and last word. True positives, gold and
    predicted chunks are counted in variables over the epoch; the result is
    ``2·TP / (gold + predicted)``, i.e. seqeval's micro F1 (``zero_division=0``), the
    ``entity_f1`` of `kmtl.tasks.Tagging.evaluate` — except that words cut off by
    ``max_length`` are not seen here, while `evaluate` counts their gold chunks as missed.
    A sample weight only marks words (> 0); its size does not scale the counts. Direction: up.

    Args:
        labels: the task's tag set, in the head's output order (e.g. ``bio_labels(["PER"])``).
        name: logged as ``<task>_<name>``.

    Example:
        >>> f1 = EntityF1(["O", "B-PER", "I-PER"])
        >>> gold = [[1, 2, 0, 1]]                          # B-PER I-PER O B-PER
        >>> logits = tf.one_hot([[1, 2, 0, 0]], 3)         # B-PER I-PER O O
        >>> f1.update_state(gold, logits)
        >>> float(f1.result())                             # TP 1, gold 2, predicted 1
        0.6666...
    """

    def __init__(self, labels: Sequence[str], name: str = "entity_f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.labels = [str(label) for label in labels]
        if not self.labels:
            raise ValueError("EntityF1 needs the task's tag set (labels=...)")
        self._direction = "up"
        self._prefix, self._type = tag_codes(self.labels)
        self.true_positives = self.add_variable((), "zeros", dtype="float32", name="true_positives")
        self.true_count = self.add_variable((), "zeros", dtype="float32", name="true_count")
        self.predicted_count = self.add_variable((), "zeros", dtype="float32", name="predicted_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        gold = tf.cast(y_true, tf.int32)
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        words = (tf.ones_like(gold, tf.bool) if sample_weight is None
                 else tf.cast(sample_weight, tf.float32) > 0)
        # each example's words, in order and left-aligned; the rest of the row is O
        words_aligned = _left_align(words, words)
        prefix_table, type_table = tf.constant(self._prefix), tf.constant(self._type)

        def chunks(tags):
            tags = _left_align(tags, words)
            prefix = tf.where(words_aligned, tf.gather(prefix_table, tags), O)
            kind = tf.where(words_aligned, tf.gather(type_table, tags), 0)
            return _chunks(prefix, kind)

        gold_ends, gold_begins, gold_kind = chunks(gold)
        pred_ends, pred_begins, pred_kind = chunks(predicted)
        hits = gold_ends & pred_ends & tf.equal(gold_begins, pred_begins) & tf.equal(gold_kind, pred_kind)
        self.true_positives.assign_add(tf.reduce_sum(tf.cast(hits, tf.float32)))
        self.true_count.assign_add(tf.reduce_sum(tf.cast(gold_ends, tf.float32)))
        self.predicted_count.assign_add(tf.reduce_sum(tf.cast(pred_ends, tf.float32)))

    def result(self):
        return f1_from_counts(self.true_positives, self.true_count, self.predicted_count)

    def get_config(self):
        return {**super().get_config(), "labels": self.labels}
