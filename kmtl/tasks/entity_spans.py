"""BIO tags → entity spans, as TF ops (the serving graph's counterpart of `entities_from_tags`)."""

from __future__ import annotations

import tensorflow as tf


def bio_tables(labels):
    """Per label: kind (0 outside, 1 begin, 2 inside) and type index; plus the type names."""
    types, kinds, type_ids = [], [], []
    for label in labels:
        prefix, _, kind = label.partition("-")
        if prefix in ("B", "I") and kind:
            if kind not in types:
                types.append(kind)
            kinds.append(1 if prefix == "B" else 2)
            type_ids.append(types.index(kind))
        else:
            kinds.append(0)
            type_ids.append(-1)
    return kinds, type_ids, types


def entity_spans(tag_ids, word_count, labels):
    """Entities of each row: ``(type_names, first_word, last_word)``, ragged ``[batch, (entities)]``.

    ``tag_ids``: ``[batch, words]`` label indices; words at or past ``word_count`` are padding.
    An ``I-X`` that does not continue an ``X`` entity starts a new one (conlleval's rule).
    """
    kinds_c, types_c, names = bio_tables(labels)
    valid = tf.sequence_mask(word_count, tf.shape(tag_ids)[1])
    kind = tf.where(valid, tf.gather(tf.constant(kinds_c, tf.int32), tag_ids), 0)
    kind_type = tf.gather(tf.constant(types_c, tf.int32), tag_ids)
    shift = lambda t, fill: tf.concat([tf.fill([tf.shape(t)[0], 1], fill), t[:, :-1]], axis=1)  # noqa: E731
    inside = kind > 0
    starts = inside & ((kind == 1) | (shift(kind, 0) == 0) | (shift(kind_type, -1) != kind_type))
    next_starts = tf.concat([starts[:, 1:], tf.ones_like(starts[:, :1])], axis=1)
    next_inside = tf.concat([inside[:, 1:], tf.zeros_like(inside[:, :1])], axis=1)
    ends = inside & (next_starts | ~next_inside)
    position = tf.broadcast_to(tf.range(tf.shape(tag_ids)[1])[None, :], tf.shape(tag_ids))
    type_names = tf.gather(tf.constant(names + [""]), tf.ragged.boolean_mask(kind_type, starts))
    return type_names, tf.ragged.boolean_mask(position, starts), tf.ragged.boolean_mask(position, ends)
