"""Raw text → words with character offsets, in the serving graph (no Python at run time)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

_PUNCT = r"[\pP\pS]"


def clean_text(text):
    """Make any bytes valid UTF-8 (invalid sequences become U+FFFD) so no text op can fail."""
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)


def split_words(text):
    """``[batch]`` strings → ``(words, byte_starts, byte_ends)``, ragged ``[batch, (words)]``.

    Splits on whitespace, then splits punctuation off the start and end of each piece:
    ``"a fine, (moving) film."`` → ``a | fine | , | ( | moving | ) | film | .`` — close to
    CoNLL tokenization; inner punctuation stays (``"U.S.-based"`` is one word). Uses TF Text's
    ``RegexSplitWithOffsets`` (already needed by the WordPiece tokenizer) and core TF ops.
    """
    tokens, starts, _ = tf_text.regex_split_with_offsets(text, r"\s+")
    flat, flat_starts = tokens.flat_values, tokens.with_flat_values(starts.flat_values).flat_values
    size = tf.strings.length(flat)
    lead = tf.strings.length(tf.strings.regex_replace(flat, rf"^({_PUNCT}*).*$", r"\1"))
    rest = tf.strings.substr(flat, lead, size - lead)
    trail = tf.strings.length(tf.strings.regex_replace(rest, rf"^.*?({_PUNCT}*)$", r"\1"))
    trail = tf.where(lead == size, 0, trail)
    # three candidate parts per token: leading punctuation, the core, trailing punctuation
    part_pos = tf.stack([tf.zeros_like(lead), lead, size - trail], axis=1)
    part_len = tf.stack([lead, size - lead - trail, trail], axis=1)
    keep = part_len > 0
    parts = tf.strings.substr(tf.repeat(flat[:, None], 3, axis=1), part_pos, part_len)
    per_token = tf.ragged.boolean_mask(parts, keep)
    part_starts = tf.ragged.boolean_mask(part_pos + tf.cast(flat_starts, part_pos.dtype)[:, None], keep)
    part_ends = tf.ragged.boolean_mask(part_pos + part_len + tf.cast(flat_starts, part_pos.dtype)[:, None], keep)
    rows = tokens.row_lengths()
    merge = lambda t: tf.RaggedTensor.from_row_lengths(t, rows).merge_dims(1, 2)  # noqa: E731
    return merge(per_token), merge(part_starts), merge(part_ends)


def char_offsets(text, byte_offsets):
    """Byte offsets into UTF-8 ``text`` ``[batch]`` → character offsets (same shape, dense)."""
    rows = tf.broadcast_to(text[:, None], tf.shape(byte_offsets))
    return tf.strings.length(tf.strings.substr(rows, tf.zeros_like(byte_offsets), byte_offsets), unit="UTF8_CHAR")
