"""Run a multi-task model over one task's examples and decode its outputs."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from kmtl.data.pipeline import EXAMPLE, eval_dataset


def shape_free_predict(runner, x: dict):
    """``runner``'s inference as one `tf.function` traced once for any batch and length (cached on
    ``runner``): `keras.Model.predict_on_batch` traces again for each new shape until Keras relaxes
    it, and evaluation batches are trimmed to their own longest sequence, so each task's first
    batches were traced anew (TensorFlow's "triggered tf.function retracing" warnings, and about
    half a second each)."""
    spec = {k: tf.TensorSpec([None] * len(v.shape), v.dtype, name=k) for k, v in x.items()}
    key = tuple(sorted((k, s.dtype.name, s.shape.rank) for k, s in spec.items()))
    cache = runner.__dict__.setdefault("_kmtl_predict", {})
    if key not in cache:
        cache[key] = tf.function(lambda inputs: runner(inputs, training=False), input_signature=[spec])
    return cache[key]


def predict_task(model, task, examples: Sequence, preprocessor, batch_size: int = 64,
                 on_batch: Optional[Callable[[int], None]] = None) -> list:
    """Decoded predictions of ``task`` for ``examples`` (in order).

    Batches are padded to their own longest sequence, so outputs are decoded batch by batch
    (token-level outputs of different batches have different widths). ``on_batch(n)`` is
    called after each batch of ``n`` examples (`kmtl.progress.Progress.update`).

    Example:
        >>> predict_task(model, sentiment, [Example(text="great")], pre)[0]["label"]
        'positive'
    """
    results = []
    start = 0
    # only this task's head: the others' outputs (a masked-LM head's [B, T, vocabulary]) are not computed
    runner = model.outputs_model([task.name]) if hasattr(model, "outputs_model") else model
    wanted = set(runner.input) if isinstance(getattr(runner, "input", None), dict) else None
    for x, aux in eval_dataset(task, model.tasks, examples, preprocessor, batch_size):
        if wanted is not None:
            x = {k: v for k, v in x.items() if k in wanted}
        outputs = shape_free_predict(runner, x)(x)[task.name]
        info = {k: np.asarray(v) for k, v in aux.items()}
        # a windowed kind's rows say their example (every example gives at least one row)
        count = len(outputs) if task.one_row_per_example else int(info[EXAMPLE].max()) + 1
        batch = examples[start:start + count]
        results.extend(task.decode(np.asarray(outputs), batch, **info))
        start += count
        if on_batch is not None:
            on_batch(count)
    return results
