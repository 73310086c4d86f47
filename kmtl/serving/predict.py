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
    rows = [{k: item[k] for k in wanted} for item in items]
    for key, value in sorted(outputs.items()):
        value = value.numpy()
        for i, row in enumerate(rows):
            row[key] = _plain(value[i])
    for row in rows:  # word, tag and entity lists: drop the padding past each row's count
        for key in [k for k in row if k.endswith("_word_count")]:
            for field in ("_tags", "_words"):
                name = key[: -len("_word_count")] + field
                row[name] = row[name][: row[key]]
        for key in [k for k in row if k.endswith("_entity_count")]:
            stem = key[: -len("_count")]
            for field in ("_type", "_text", "_start", "_end"):
                row[stem + field] = row[stem + field][: row[key]]
    return rows


def _plain(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
