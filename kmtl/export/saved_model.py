"""Export a multi-task model as a versioned SavedModel that answers from raw text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import tensorflow as tf

from kmtl.export.versions import atomic_version_dir

METADATA_FILE = "kmtl.json"


def split_words(text):
    """Raw strings → ragged words: whitespace, then punctuation split off the ends of words.

    ``"a fine, (moving) film."`` → ``["a", "fine", ",", "(", "moving", ")", "film", "."]``,
    close to CoNLL tokenization; inner punctuation stays (``"U.S.-based"`` → ``"U.S.-based"``).
    Core TF ops only (RE2 regexes), so TF Serving runs it.
    """
    spaced = tf.strings.regex_replace(text, r"([\pP\pS]+)(\s|$)", " \\1\\2")
    spaced = tf.strings.regex_replace(spaced, r"(^|\s)([\pP\pS]+)", "\\1\\2 ")
    return tf.strings.split(spaced)


class ServingModule(tf.Module):
    """The serving graph: tokenizer, packer, shared encoder and heads, no Python at run time.

    Signatures (inputs are ``[batch]`` string tensors):

    * ``serving_default(text)`` → every single-text task: classification ``<task>_label``
      (string) and ``<task>_probabilities``; multi-label ``<task>_probabilities`` and
      ``<task>_active`` (0/1 per label); regression ``<task>_score``; tagging
      ``<task>_words`` and ``<task>_tags`` (``[batch, words]`` strings padded with "", words
      as `split_words` makes them) and ``<task>_word_count``.
    * ``<task>(text, text_pair)`` for each pair task, with the same outputs.

    Args:
        model: a trained `kmtl.MultiTaskModel`.
        preprocessor: its `kmtl.data.Preprocessor`.
    """

    def __init__(self, model, preprocessor):
        super().__init__()
        self.model = model
        self.preprocessor = preprocessor
        self.tasks = list(model.tasks)
        self.label_tables = {t.name: tf.constant(t.labels) for t in self.tasks if t.labels}

    def _heads(self, task, outputs):
        name = task.name
        if task.kind in ("classification", "pair_classification"):
            probs = tf.nn.softmax(outputs, axis=-1)
            return {f"{name}_label": tf.gather(self.label_tables[name], tf.argmax(probs, axis=-1)),
                    f"{name}_probabilities": probs}
        if task.kind == "multilabel":
            probs = tf.sigmoid(outputs)
            return {f"{name}_probabilities": probs,
                    f"{name}_active": tf.cast(probs >= task.threshold, tf.int32)}
        return {f"{name}_score": tf.reshape(outputs, [-1])}

    def _tagging(self, task, text):
        words = split_words(text)
        enc = self.preprocessor.encode_words(words)
        x = {k: enc[k] for k in ("token_ids", "segment_ids", "padding_mask")}
        logits = self.model(x, training=False)[task.name]
        best = tf.argmax(logits, axis=-1, output_type=tf.int32)
        first = enc["first_piece"]
        tag_ids = tf.gather(best, tf.maximum(first, 0), batch_dims=1)
        outside = task.labels.index(task.outside_label)
        valid_word = tf.sequence_mask(words.row_lengths(), tf.shape(first)[1])
        tag_ids = tf.where(first >= 0, tag_ids, outside)
        tags = tf.where(valid_word, tf.gather(self.label_tables[task.name], tag_ids), "")
        return {f"{task.name}_tags": tags, f"{task.name}_words": words.to_tensor(""),
                f"{task.name}_word_count": tf.cast(words.row_lengths(), tf.int32)}

    def serve_text(self, text):
        result = {}
        single = [t for t in self.tasks if t.input_fields == ("text",)]
        if single:
            outputs = self.model(self.preprocessor.encode_text(text), training=False)
            for task in single:
                result.update(self._heads(task, outputs[task.name]))
        for task in self.tasks:
            if task.token_level:
                result.update(self._tagging(task, text))
        return result

    def serve_pair(self, task, text, text_pair):
        outputs = self.model(self.preprocessor.encode_text(text, text_pair), training=False)
        return self._heads(task, outputs[task.name])

    def signatures(self) -> dict:
        spec = tf.TensorSpec([None], tf.string)
        sigs = {}
        if any(t.input_fields != ("text", "text_pair") for t in self.tasks):
            fn = tf.function(lambda text: self.serve_text(text),
                             input_signature=[tf.TensorSpec([None], tf.string, name="text")])
            sigs["serving_default"] = fn.get_concrete_function()
        for task in self.tasks:
            if task.input_fields == ("text", "text_pair"):
                fn = tf.function(lambda text, text_pair, task=task: self.serve_pair(task, text, text_pair),
                                 input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                                  tf.TensorSpec([None], tf.string, name="text_pair")])
                sigs[task.name] = fn.get_concrete_function()
        del spec
        return sigs


def export_saved_model(model, preprocessor, base_dir, name: str, version: Optional[int] = None,
                       metadata: Optional[dict] = None) -> Path:
    """Write ``<base_dir>/<name>/<version>/``: a SavedModel TF Serving can load.

    The version folder appears only when complete (see `atomic_version_dir`); ``version``
    defaults to the next free integer. ``assets.extra/kmtl.json`` records the tasks, label
    sets, backbone and max length.

    Example:
        >>> path = export_saved_model(model, pre, "saved_models", "demo")
        >>> path.name
        '1'
    """
    module = ServingModule(model, preprocessor)
    signatures = module.signatures()
    with atomic_version_dir(Path(base_dir) / name, version) as (tmp, final):
        level = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")  # "Assets written to <temporary folder>" misleads
        try:
            tf.saved_model.save(module, str(tmp), signatures=signatures)
        finally:
            tf.get_logger().setLevel(level)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        info = {
            "tasks": [t.get_config() for t in model.tasks],
            "backbone": model.encoder_spec,
            "max_length": preprocessor.max_length,
            "signatures": sorted(signatures),
            **(metadata or {}),
        }
        (extra / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return final
