"""Model outputs → one readable dict per text: labels, probabilities, scores, entity spans."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from kmtl.export.heads import decode_outputs


def rows_from_outputs(outputs: Dict[str, np.ndarray], inputs: Optional[Dict[str, Sequence[str]]] = None) -> List[dict]:
    """Batched serving outputs (``{name: [batch, ...]}``) → one JSON-able dict per row.

    Strings are decoded; word, tag and entity lists are cut at each row's ``*_word_count`` /
    ``*_entity_count`` (the padding is dropped). ``inputs`` (``{"text": [...]}``...) are put
    first in each row. `kmtl predict` and `decode` both use it.
    """
    size = len(next(iter(outputs.values())))
    rows = [{k: _plain(v[i]) for k, v in sorted((inputs or {}).items())} for i in range(size)]
    for key, value in sorted(outputs.items()):
        value = np.asarray(value)
        for i, row in enumerate(rows):
            row[key] = _plain(value[i])
    for row in rows:
        for key in [k for k in row if k.endswith("_word_count")]:
            for field in ("_tags", "_words"):
                name = key[: -len("_word_count")] + field
                row[name] = row[name][: row[key]]
        for key in [k for k in row if k.endswith("_entity_count")]:
            stem = key[: -len("_count")]
            for field in ("_type", "_text", "_start", "_end"):
                row[stem + field] = row[stem + field][: row[key]]
    return rows


def decode(model, outputs, text, text_pair=None, preprocessor=None) -> List[dict]:
    """Readable answers from ``model.predict(text)`` (raw head outputs), one dict per text.

    The same TF code as the exported SavedModel's signatures (`kmtl.export.heads`), so the
    answers equal what TF Serving returns for the same texts: ``<task>_label`` and
    ``<task>_probabilities`` (classification), ``<task>_score`` (regression), ``<task>_labels``
    (multi-label), ``<task>_tags``, ``<task>_words`` and entities with character offsets
    (tagging). Only the tasks present in ``outputs`` are decoded.

    Args:
        model: the `kmtl.MultiTaskModel` whose outputs these are.
        outputs: ``{task: array}`` from ``model.predict(text)``.
        text: the texts given to ``predict`` (a string or a list of strings).
        text_pair: the second texts, for pair tasks.
        preprocessor: tokenizer settings; default ``model.preprocessor``.

    Example:
        >>> texts = ["a fine film", "Angela Merkel visited Paris ."]
        >>> answers = kmtl.export.decode(model, model.predict(texts), texts)
        >>> answers[0]["sentiment_label"]
        'positive'
    """
    texts = [text] if isinstance(text, str) else list(text)
    pairs = None if text_pair is None else ([text_pair] if isinstance(text_pair, str) else list(text_pair))
    tasks = [t for t in model.tasks if t.name in outputs]
    if pairs is not None and any(t.token_level for t in tasks):
        raise ValueError("text_pair is for pair tasks; decode tagging tasks from their own text")
    pre = preprocessor if preprocessor is not None else getattr(model, "preprocessor", None)
    if pre is None and any(t.token_level for t in tasks):
        raise ValueError("decoding tagging outputs needs the tokenizer: attach one with "
                         "model.preprocessor = encoder.preprocessor(max_length) or pass preprocessor=")
    decoded = decode_outputs(tasks, {t.name: outputs[t.name] for t in tasks}, tf.constant(texts), pre)
    inputs = {"text": texts, **({"text_pair": pairs} if pairs is not None else {})}
    return rows_from_outputs({k: v.numpy() for k, v in decoded.items()}, inputs)


def _plain(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
