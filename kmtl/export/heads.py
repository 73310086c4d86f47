"""What each task kind returns in the serving signatures (dense tensors, stable names).

| kind | outputs |
|---|---|
| classification, pair_classification | ``<task>_label`` [B] string, ``<task>_probabilities`` [B, C] |
| multilabel | ``<task>_labels`` [B, C] strings (active labels first, padded with ""), ``<task>_probabilities`` [B, C] |
| regression, pair_regression | ``<task>_score`` [B] |
| tagging | ``<task>_words``/``<task>_tags`` [B, W], ``<task>_word_count`` [B], ``<task>_entity_type``/``_text`` [B, E] strings, ``<task>_entity_start``/``_end`` [B, E] character offsets (end exclusive; -1 pads), ``<task>_entity_count`` [B] |
"""

from __future__ import annotations

import tensorflow as tf

from kmtl.export.entities import entity_spans
from kmtl.export.words import char_offsets, split_words


def sentence_outputs(task, outputs) -> dict:
    """Outputs of a sentence-level task from its raw head output (logits or score)."""
    name = task.name
    if task.kind in ("classification", "pair_classification"):
        probs = tf.nn.softmax(outputs, axis=-1)
        return {f"{name}_label": tf.gather(tf.constant(task.labels), tf.argmax(probs, axis=-1)),
                f"{name}_probabilities": probs}
    if task.kind == "multilabel":
        probs = tf.sigmoid(outputs)
        names = tf.broadcast_to(tf.constant(task.labels)[None, :], tf.shape(probs))
        active = tf.ragged.boolean_mask(names, probs >= task.threshold)
        return {f"{name}_labels": active.to_tensor("", shape=[None, len(task.labels)]),
                f"{name}_probabilities": probs}
    return {f"{name}_score": tf.reshape(outputs, [-1])}


def encode_for_tagging(model, preprocessor, trim, text):
    """Split ``text`` into words, encode them, run the model once: what tagging heads need.

    ``model`` is the Keras model or any callable ``model(x, training=False) -> {task: output}``
    (`ServingGraph.run_model` routes per-task adapters).

    The word-piece ids equal `Preprocessor.encode_text`'s for the same text (the tokenizer
    splits at every boundary `split_words` does), so sentence heads can read these outputs
    too and the encoder runs once per call. (Exception: a "word" made only of characters the
    tokenizer drops becomes ``[UNK]`` here.)
    """
    words, byte_starts, byte_ends = split_words(text)
    enc = preprocessor.encode_words(words)
    x = trim({k: enc[k] for k in ("token_ids", "segment_ids", "padding_mask")})
    return {"words": words, "byte_starts": byte_starts, "byte_ends": byte_ends,
            "first_piece": enc["first_piece"], "outputs": model(x, training=False)}


def tagging_outputs(task, encoded, text) -> dict:
    """Word tags and entity spans (character offsets into ``text``) from `encode_for_tagging`."""
    name = task.name
    words, byte_starts, byte_ends = encoded["words"], encoded["byte_starts"], encoded["byte_ends"]
    best = tf.argmax(encoded["outputs"][name], axis=-1, output_type=tf.int32)
    first = encoded["first_piece"]
    count = tf.cast(words.row_lengths(), tf.int32)
    outside = task.labels.index(task.outside_label)
    tag_ids = tf.where(first >= 0, tf.gather(best, tf.maximum(first, 0), batch_dims=1), outside)
    valid = tf.sequence_mask(count, tf.shape(first)[1])
    tags = tf.where(valid, tf.gather(tf.constant(task.labels), tag_ids), "")

    types, first_word, last_word = entity_spans(tag_ids, count, task.labels)
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
