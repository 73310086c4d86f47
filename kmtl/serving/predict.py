"""Load an exported SavedModel and turn its outputs into one JSON-able dict per text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from kmtl.errors import KmtlError
from kmtl.export.versions import existing_versions

TAB_PAIRS = (("text", "text_pair"), ("question", "context"))
"""Signatures with these two inputs also read a text ``first<TAB>second`` (pair tasks; span QA)."""


def resolve_export(path) -> Path:
    """A version folder as given, or the latest version inside a model folder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = existing_versions(path)
    if not versions:
        raise KmtlError(f"{path} holds no SavedModel (no saved_model.pb, no integer version folders)")
    return path / str(versions[-1])


def load_export(path):
    """``tf.saved_model.load`` with TF Text's ops registered (the tokenizer needs them)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the WordPiece ops)

    return tf.saved_model.load(str(resolve_export(path)))


def predict_lines(export_dir, items: Iterable, signature: str = "serving_default",
                  places: Optional[Sequence[str]] = None) -> List[dict]:
    """Run ``signature`` on ``items``; one dict per item, outputs named as in the signature.

    Each item is a text, or a dict of the signature's inputs (``{"text": ..., "text_pair": ...}``,
    ``{"question": ..., "context": ...}``); for a pair task's signature and span QA's a plain text
    holds both inputs separated by a tab (`TAB_PAIRS`), and an empty text is an empty pair. A
    field that is missing or not a string is an error naming the item.

    Args:
        export_dir: a SavedModel version folder, or its model folder (latest version).
        items: texts or dicts.
        signature: the signature to call.
        places: where each item came from, for errors (default ``"input <n>"``).

    Example:
        >>> predict_lines("saved_models/demo", ["a lovely film"])[0]["sentiment_label"]
        'positive'
    """
    import tensorflow as tf

    from kmtl.export.decode import rows_from_outputs

    items = [dict(item) if isinstance(item, dict) else {"text": item} for item in items]
    if not items:
        return []
    places = list(places) if places is not None else [f"input {n}" for n in range(1, len(items) + 1)]
    loaded = load_export(export_dir)
    if signature not in loaded.signatures:
        raise KmtlError(f"no signature {signature!r}; the export has: {', '.join(sorted(loaded.signatures))}")
    fn = loaded.signatures[signature]
    wanted = sorted(fn.structured_input_signature[1])
    pair = next((p for p in TAB_PAIRS if set(p) == set(wanted)), None)
    if pair is not None:  # 'first<TAB>second' as a text: a pair task's two texts, a question and its context
        for item in items:
            text = item.get("text")
            if not set(pair) <= set(item) and set(item) <= {"text"} and isinstance(text, str) \
                    and ("\t" in text or text == ""):
                first, second = text.split("\t", 1) if text else ("", "")
                item.pop("text")
                item[pair[0]], item[pair[1]] = first, second
    for place, item in zip(places, items):
        missing = [k for k in wanted if k not in item]
        if missing:
            hint = f" (or '{pair[0]}<TAB>{pair[1]}' as one text)" if pair is not None else ""
            if pair == TAB_PAIRS[0] and missing == ["text_pair"]:
                hint = " (or 'first<TAB>second')"
            raise KmtlError(f"{place}: signature {signature!r} needs string fields {wanted}{hint}; "
                            f"missing {missing}")
        for key in wanted:
            if not isinstance(item[key], str):
                raise KmtlError(f"{place}: field {key!r} must be a string, got {type(item[key]).__name__} "
                                f"{json.dumps(item[key], default=str)[:60]}; quote it: \"{key}\": \"...\"")
    outputs = fn(**{k: tf.constant([item[k] for item in items]) for k in wanted})
    return rows_from_outputs({k: v.numpy() for k, v in outputs.items()},
                             {k: [item[k] for item in items] for k in wanted})
