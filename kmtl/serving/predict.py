"""Load an exported SavedModel and turn its outputs into one JSON-able dict per text."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List

from kmtl.errors import KmtlError
from kmtl.export.versions import existing_versions


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


def predict_lines(export_dir, items: Iterable, signature: str = "serving_default") -> List[dict]:
    """Run ``signature`` on ``items``; one dict per item, outputs named as in the signature.

    Each item is a text, or a dict ``{"text": ..., "text_pair": ...}``; for a pair task's
    signature a plain text holds both sentences separated by a tab.

    Example:
        >>> predict_lines("saved_models/demo", ["a lovely film"])[0]["sentiment_label"]
        'positive'
    """
    import tensorflow as tf

    from kmtl.export.decode import rows_from_outputs

    items = [item if isinstance(item, dict) else {"text": item} for item in items]
    if not items:
        return []
    loaded = load_export(export_dir)
    if signature not in loaded.signatures:
        raise KmtlError(f"no signature {signature!r}; the export has: {', '.join(sorted(loaded.signatures))}")
    fn = loaded.signatures[signature]
    wanted = sorted(fn.structured_input_signature[1])
    if "text_pair" in wanted:
        for item in items:
            if "text_pair" not in item and "\t" in str(item.get("text", "")):
                item["text"], item["text_pair"] = item["text"].split("\t", 1)
    for number, item in enumerate(items, 1):
        missing = [k for k in wanted if not isinstance(item.get(k), str)]
        if missing:
            hint = " (or 'first<TAB>second')" if missing == ["text_pair"] else ""
            raise KmtlError(f"input {number}: signature {signature!r} needs string fields {wanted}{hint}; "
                            f"missing {missing}")
    outputs = fn(**{k: tf.constant([item[k] for item in items]) for k in wanted})
    return rows_from_outputs({k: v.numpy() for k, v in outputs.items()},
                             {k: [item[k] for item in items] for k in wanted})
