"""Per-task `tf.data` pipelines: raw examples → (inputs, full label dict, full weight dict)."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from kmtl.data.example import Example
from kmtl.data.preprocessor import Preprocessor
from kmtl.errors import DataError

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
TASK_ID = "task_id"
"""Also in every ``x``: int32 ``[batch]``, the index of the example's task in ``tasks`` (what
per-task adapters route by; models without adapters ignore it)."""
EXAMPLE = "example"
"""In the ``aux`` of a kind that cuts texts into windows (``one_row_per_example = False``):
int32 ``[rows]``, each row's example as an index into the raw batch; every example gives at
least one row (`kmtl.evaluation.predict_task` groups the rows by it)."""
_ENCODE_BATCH = 256


def raw_tensors(task, examples: Sequence[Example], with_labels: bool = True):
    """The task's input fields (and encoded labels) as tensors for `from_tensor_slices`
    (`kmtl.tasks.Task.input_tensors` and `label_tensor`)."""
    if not examples:
        raise DataError("", f"task {task.name!r} has no examples; give it a non-empty split")
    for ex in examples:
        task.check_inputs(ex)
    raw = task.input_tensors(examples)
    if not with_labels:
        return raw
    return raw, task.label_tensor(examples)


def _batch_raw(ds: tf.data.Dataset, size: int) -> tf.data.Dataset:
    """Batch raw inputs: ``ragged_batch`` when a component is ragged (words of sentences)."""
    ragged = any(isinstance(spec, tf.RaggedTensorSpec) for spec in tf.nest.flatten(ds.element_spec))
    return ds.ragged_batch(size) if ragged else ds.batch(size)


def encode_batch(task, tasks, preprocessor: Preprocessor, raw: dict, labels=None):
    """Encode a batch of one task's raw inputs into ``(x, y, sample_weight)``.

    ``x`` holds the `INPUT_NAMES` and `TASK_ID` (``task``'s index in ``tasks``: pass the
    model's own ``model.tasks``, in its order). ``y`` and ``sample_weight`` hold an entry for
    *every* task in ``tasks``: the owning task's labels and weights (`kmtl.tasks.Task.encode_inputs`:
    1 per example; token tasks: 1 on first word pieces), zeros with weight 0 for the others.
    With ``labels=None`` ``(x, aux)`` is returned: ``aux`` is what the task's ``decode`` needs
    (word alignment for token tasks).
    """
    index = [t.name for t in tasks].index(task.name)
    encoded, own_y, own_w, aux = task.encode_inputs(preprocessor, raw, labels)
    x = {name: encoded[name] for name in INPUT_NAMES}
    x[TASK_ID] = tf.fill(tf.shape(x["token_ids"])[:1], tf.constant(index, tf.int32))
    if labels is None:
        return x, aux
    batch = tf.shape(x["token_ids"])[0]
    length = preprocessor.max_length
    y, w = {}, {}
    for other in tasks:
        if other.name == task.name:
            y[other.name], w[other.name] = own_y, own_w
            continue
        label_shape, label_dtype, weight_shape = other.label_spec(length)
        y[other.name] = tf.zeros([batch] + list(label_shape), label_dtype)
        w[other.name] = tf.zeros([batch] + list(weight_shape), tf.float32)
    return x, y, w


def task_dataset(task, tasks, examples, preprocessor: Preprocessor, *, shuffle=True, repeat=True, seed=0,
                 reshuffle_each_iteration=True):
    """An unbatched dataset of one task's encoded examples, fixed width ``max_length``.

    Tokenization runs once (in batches of 256) and the result is cached; then the examples
    are shuffled (a new order each pass, deterministic given ``seed``) and repeated.

    With ``reshuffle_each_iteration=False`` (and ``shuffle``, ``repeat``) pass ``p`` is shuffled
    with a seed made of ``(seed, p)`` alone (`shuffled_passes`): every iterator made from the
    dataset yields the same infinite stream, so ``skip(n)`` on a rebuilt pipeline lands on the
    same element (what an exact resume after a crash needs). With ``True`` (the default) each
    new iterator draws new orders, reproducibly from a freshly built dataset.
    """
    raw, labels = raw_tensors(task, examples)
    ds = _batch_raw(tf.data.Dataset.from_tensor_slices((raw, labels)), _ENCODE_BATCH)
    ds = ds.map(lambda r, l: encode_batch(task, tasks, preprocessor, r, l), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.unbatch().cache()
    if shuffle and repeat and not reshuffle_each_iteration:
        ds = shuffled_passes(ds, encoded_rows(task, examples, ds), seed)
    else:
        if shuffle:
            ds = ds.shuffle(encoded_rows(task, examples, ds), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    if task.augment is not None:  # after the cache: a new draw each pass (dynamic masking)
        ds = ds.map(task.augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def encoded_rows(task, examples, ds: tf.data.Dataset) -> int:
    """How many rows ``ds`` (the task's encoded, finite dataset) holds: one per example, or,
    for a kind that cuts texts into windows (``one_row_per_example = False``), counted."""
    return len(examples) if task.one_row_per_example else int(ds.reduce(0, lambda n, _: n + 1))


def shuffled_passes(ds: tf.data.Dataset, size: int, seed: int = 0) -> tf.data.Dataset:
    """``ds`` (finite, ``size`` elements, cached) repeated forever, pass ``p`` permuted by ``(seed, p)``.

    Unlike ``shuffle(reshuffle_each_iteration=True).repeat()``, whose orders come from a seed
    generator that advances with every iterator made from the dataset, the stream here is the
    same for every iterator: element ``i`` is a function of ``(seed, i)`` (a stateless
    permutation per pass; TensorFlow's global seed plays no part). Each pass holds the whole
    task in one batch, as a ``shuffle`` buffer of ``size`` would. (A per-pass
    ``shuffle(seed=<tensor>)`` fails when the global seed is 0: ``random_seed.get_seed``
    compares the tensor seed with 0 in Python.)

    Example:
        >>> stream = shuffled_passes(tf.data.Dataset.range(4).cache(), 4, seed=1)
        >>> list(stream.take(8).as_numpy_iterator())  # two passes, each a permutation of 0..3
    """
    whole = ds.batch(size)

    def permuted(p):
        order = tf.random.experimental.stateless_shuffle(tf.range(size), seed=tf.stack([tf.constant(seed, tf.int64), p]))
        gather = lambda t: tf.gather(t, order)  # noqa: E731
        return whole.map(lambda *e: tf.nest.map_structure(gather, e if len(e) > 1 else e[0])).unbatch()

    return tf.data.Dataset.counter().flat_map(permuted)


def tasks_with_examples(by_name: dict, examples_by_task: Dict[str, Sequence[Example]]) -> list:
    """Names of the tasks that have examples; unknown task names are a `ValueError`."""
    unknown = sorted(set(examples_by_task) - set(by_name))
    if unknown:
        raise ValueError(f"examples given for unknown tasks {unknown}; the model's tasks are {sorted(by_name)}")
    return [name for name, exs in examples_by_task.items() if exs]


def cut_inputs(x: dict, length) -> dict:
    """``x`` with its sequence inputs (`INPUT_NAMES`) cut to ``length``; ``task_id`` kept."""
    return {k: (v[:, :length] if k in INPUT_NAMES else v) for k, v in x.items()}


def longest_sequence(x) -> tf.Tensor:
    """The batch's longest sequence (at least 1), counted on ``x["padding_mask"]``."""
    return tf.maximum(tf.reduce_max(tf.reduce_sum(x["padding_mask"], axis=1)), 1)


def cut_batch(tasks, length, x, y=None, w=None):
    """Cut a batch's sequence inputs, and token tasks' labels and weights, to ``length``."""
    x = cut_inputs(x, length)
    if y is None:
        return x
    token_tasks = {t.name for t in tasks if t.sequence_labels}
    y = {k: (v[:, :length] if k in token_tasks else v) for k, v in y.items()}
    w = {k: (v[:, :length] if k in token_tasks else v) for k, v in w.items()}
    return x, y, w


def trim_batch(tasks, x, y=None, w=None):
    """Cut a batch padded to ``max_length`` down to its own longest sequence.

    Token-level labels and weights are cut the same way; other tasks' entries are untouched.
    """
    return cut_batch(tasks, longest_sequence(x), x, y, w)


def eval_dataset(task, tasks, examples, preprocessor: Preprocessor, batch_size=64):
    """A finite, ordered, batched dataset of one task's inputs ``(x, aux)``, each batch trimmed.

    ``aux["first_piece"]`` maps words to pieces for token tasks (empty dict otherwise); used
    to decode predictions.
    """
    ds = _batch_raw(tf.data.Dataset.from_tensor_slices(raw_tensors(task, examples, with_labels=False)), batch_size)

    def encode(raw):
        x, aux = encode_batch(task, tasks, preprocessor, raw)
        return trim_batch(tasks, x), aux

    return ds.map(encode).prefetch(tf.data.AUTOTUNE)


def validation_dataset(tasks, examples_by_task: Dict[str, Sequence[Example]], preprocessor, batch_size=64, seed=0):
    """Every dev example of every task exactly once, for ``validation_data``.

    Tasks are mixed inside batches in proportion to their sizes, as in joint training, so
    ``val_loss`` (a sum of per-task means per batch) compares with the training ``loss``; the
    per-task ``val_<task>_*`` figures are weighted by ownership and exact.
    """
    by_name = {t.name: t for t in tasks}
    names = tasks_with_examples(by_name, examples_by_task)
    if not names:
        raise ValueError("no validation examples: every task's list is empty")
    parts = [task_dataset(by_name[n], tasks, examples_by_task[n], preprocessor, shuffle=False, repeat=False)
             for n in names]
    sizes = np.array([encoded_rows(by_name[n], examples_by_task[n], part) for n, part in zip(names, parts)],
                     dtype=np.float64)
    ds = parts[0] if len(parts) == 1 else tf.data.Dataset.sample_from_datasets(
        parts, weights=list(sizes / sizes.sum()), seed=seed, stop_on_empty_dataset=False)
    ds = ds.batch(batch_size).map(lambda x, y, w: trim_batch(tasks, x, y, w))
    # sampling until every part is empty leaves the cardinality unknown to tf.data; state it, so
    # Keras neither warns that the input "ran out of data" nor counts a phantom step
    batches = -(-int(sizes.sum()) // batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)
