"""Raw text → the model's inputs and outputs, in the TF graph: what `model.predict` on strings and
the exported serving signatures share, so in-memory and served answers are equal.
"""

from __future__ import annotations

import tensorflow as tf

from kmtl.data.pipeline import INPUT_NAMES
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
