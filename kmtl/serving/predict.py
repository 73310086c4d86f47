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

    For a pair task's signature each text holds both sentences separated by a tab.

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
    fn = loaded.signatures[signature]
    inputs = {"text": texts}
    if "text_pair" in fn.structured_input_signature[1]:
        bad = [i for i, t in enumerate(texts, 1) if "\t" not in t]
        if bad:
            raise KmtlError(f"signature {signature!r} takes sentence pairs: give 'first<TAB>second' "
                            f"(input {bad[0]} has no tab)")
        inputs = {"text": [t.split("\t", 1)[0] for t in texts], "text_pair": [t.split("\t", 1)[1] for t in texts]}
    outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    rows = [{"text": t} for t in texts]
    for key, value in sorted(outputs.items()):
        value = value.numpy()
        for i, row in enumerate(rows):
            row[key] = _plain(value[i])
    for row in rows:  # word and tag lists: drop the padding past each text's word count
        for key in [k for k in row if k.endswith("_word_count")]:
            for field in ("_tags", "_words"):
                name = key[: -len("_word_count")] + field
                row[name] = row[name][: row[key]]
    return rows


def _plain(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
