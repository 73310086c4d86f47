"""Raw text → the model's inputs and outputs, in the TF graph: what `model.predict` on strings and
the exported serving signatures share, so in-memory and served answers are equal.
"""

from __future__ import annotations

import tensorflow as tf

from kmtl.data.pipeline import INPUT_NAMES, TASK_ID
from kmtl.data.words import clean_text, split_words


def is_raw_text(x) -> bool:
    """Whether ``x`` is a batch of strings, or a dict of them with a ``text`` key."""
    if isinstance(x, dict):
        x = x.get("text")
    return x is not None and getattr(x, "dtype", None) == tf.string


def word_inputs(preprocessor, text) -> dict:
    """Split ``text`` into words (``split_words``) and encode them: model inputs ``x`` (width
    ``max_length``) plus the word info tagging heads decode with (``words``, ``byte_starts``,
    ``byte_ends``, ``first_piece``).

    The word-piece ids equal `Preprocessor.encode_text`'s for the same text (the tokenizer
    splits at every boundary `split_words` does), so sentence heads read the same encoder
    pass. (Exception: a "word" made only of characters the tokenizer drops becomes ``[UNK]``.)
    """
    words, byte_starts, byte_ends = split_words(text)
    enc = preprocessor.encode_words(words)
    return {"x": {k: enc[k] for k in INPUT_NAMES}, "words": words, "byte_starts": byte_starts,
            "byte_ends": byte_ends, "first_piece": enc["first_piece"]}


def text_inputs(tasks, preprocessor, text, text_pair=None):
    """``(x, words)`` for raw ``text`` (and ``text_pair``): the word path when a tagging task is
    among ``tasks`` and there is no pair (``words`` from `word_inputs`), else the sentence path
    (``words`` is ``None``). Invalid UTF-8 is replaced, never fatal."""
    text = clean_text(text)
    for task in tasks:  # a kind's own form of the text (relation: entity markers as marker tokens)
        text = task.model_text(text)
    if text_pair is None and any(t.token_level for t in tasks):
        words = word_inputs(preprocessor, text)
        return words["x"], words
    pair = None if text_pair is None else clean_text(text_pair)
    return preprocessor.encode_text(text, pair), None


def run_tasks(model, x, tasks) -> dict:
    """``{task: raw output}`` of ``model`` on ``x`` for each of ``tasks``.

    With per-task adapters (``model.routes_by_task``) each task needs its own encoder pass:
    the batch is tiled once per task (copy ``k`` carries task ``k``'s id) and run in one call;
    each task reads its own copy.
    """
    if not getattr(model, "routes_by_task", False):
        return model(x, training=False)
    index = {t.name: i for i, t in enumerate(model.tasks)}
    batch = tf.shape(x["token_ids"])[0]
    ids = [index[t.name] for t in tasks]
    tiled = {k: tf.tile(v, [len(ids), 1]) for k, v in x.items() if k in INPUT_NAMES}
    tiled[TASK_ID] = tf.repeat(tf.constant(ids, tf.int32), batch)
    outputs = model(tiled, training=False)
    return {t.name: outputs[t.name][k * batch:(k + 1) * batch] for k, t in enumerate(tasks)}
