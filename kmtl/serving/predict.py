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


def predict_lines(export_dir, texts: Iterable[str], signature: str = "serving_default") -> List[dict]:
    """Run ``signature`` on ``texts``; one dict per text, outputs named as in the signature.

    Example:
        >>> predict_lines("saved_models/demo", ["a lovely film"])[0]["sentiment_label"]
        'positive'
    """
    import tensorflow as tf

    texts = list(texts)
    if not texts:
        return []
    loaded = load_export(export_dir)
    if signature not in loaded.signatures:
        raise KmtlError(f"no signature {signature!r}; the export has: {', '.join(sorted(loaded.signatures))}")
    outputs = loaded.signatures[signature](text=tf.constant(texts))
    rows = [{"text": t} for t in texts]
    for key, value in sorted(outputs.items()):
        value = value.numpy()
        for i, row in enumerate(rows):
            row[key] = _plain(value[i])
    for row in rows:  # tag lists: drop the padding past each text's word count
        for key in [k for k in row if k.endswith("_word_count")]:
            tags = key[: -len("_word_count")] + "_tags"
            row[tags] = row[tags][: row[key]]
    return rows


def _plain(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
