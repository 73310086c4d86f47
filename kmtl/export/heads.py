"""What each task kind returns in the serving signatures (dense tensors, stable names).

Each kind's `kmtl.tasks.Task.serving_outputs` says it; this module runs them for a batch:

| kind | outputs |
|---|---|
| classification, pair_classification | ``<task>_label`` [B] string, ``<task>_probabilities`` [B, C] |
| multilabel | ``<task>_labels`` [B, C] strings (active labels first, padded with ""), ``<task>_probabilities`` [B, C] |
| regression, pair_regression | ``<task>_score`` [B] |
| relation | as classification: ``<task>_label`` [B] string, ``<task>_probabilities`` [B, C]; also a ``<task>_spans`` signature (text + the entities' character spans) |
| span_qa | its own signature ``<task>(question, context)``: ``<task>_answer`` [B] string, ``<task>_start``/``<task>_end`` [B] character offsets into the context (end exclusive; -1 when empty), ``<task>_score`` [B] |
| masked_lm | none, unless ``serve``: ``<task>_top_ids`` [B, T], ``<task>_top_probability`` [B, T] |
| tagging | ``<task>_words``/``<task>_tags`` [B, W], ``<task>_word_count`` [B], ``<task>_entity_type``/``_text`` [B, E] strings, ``<task>_entity_start``/``_end`` [B, E] character offsets (end exclusive; -1 pads), ``<task>_entity_count`` [B] |
"""

from __future__ import annotations

import tensorflow as tf

from kmtl.data.words import clean_text
from kmtl.model.raw_text import word_inputs


def decode_outputs(tasks, outputs, text, preprocessor=None, words_info=None) -> dict:
    """The serving outputs of ``tasks`` (dense tensors named as in the table above) from the
    model's raw ``outputs`` on ``text``: what every raw-text signature returns, and what
    `kmtl.export.decode` gives for ``model.predict`` on strings.

    ``words_info`` (`kmtl.model.raw_text.word_inputs` of ``text``) is needed by token-level
    tasks; it is recomputed with ``preprocessor`` when not given.
    """
    result = {}
    text = clean_text(text)
    if words_info is None and any(t.token_level for t in tasks):
        words_info = word_inputs(preprocessor, text)
    for task in tasks:
        result.update(task.serving_outputs(tf.convert_to_tensor(outputs[task.name]), text=text,
                                           words_info=words_info))
    return result
