"""Mix the tasks' pipelines into one training dataset for `model.fit`."""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from kmtl.data.buckets import check_boundaries, pad_to_bucket
from kmtl.data.buckets import group_by_length as group_by_length_batches
from kmtl.data.example import Example
from kmtl.data.pipeline import task_dataset, tasks_with_examples, trim_batch
from kmtl.data.sampling import get_sampler

GRANULARITIES = ("joint", "alternating")


def default_steps_per_epoch(sizes: Sequence[int], batch_size: int,
                            batch_sizes: Optional[Sequence[Optional[int]]] = None) -> int:
    """Default epoch length: as many batches as it takes to see every example once on average.

    ``batch_sizes`` (alternating batches): each task's own batch size, aligned with ``sizes``
    (``None``: ``batch_size``)."""
    if batch_sizes is None:
        return max(1, math.ceil(sum(sizes) / batch_size))
    return max(1, math.ceil(sum(n / (b or batch_size) for n, b in zip(sizes, batch_sizes))))


def with_shares(weights: Sequence[float], shares: Sequence[Optional[float]]) -> np.ndarray:
    """Task probabilities ``weights`` with some tasks' share fixed.

    A task with a share ``s`` gets exactly ``s``; the tasks without one split what is left in
    proportion to ``weights``. When every task has a share, the shares are relative weights
    (divided by their sum): a single-task baseline of a task with a share trains on it alone.

    Example:
        >>> with_shares([0.5, 0.25, 0.25], [0.5, None, None])   # the rest split 1:1
        array([0.5 , 0.25, 0.25])
        >>> with_shares([0.8, 0.1, 0.1], [None, 0.4, None])
        array([0.53333333, 0.4       , 0.06666667])
    """
    weights = np.asarray(weights, dtype=np.float64)
    fixed = np.array([s is not None for s in shares])
    given = np.array([s or 0.0 for s in shares], dtype=np.float64)
    if fixed.all():
        return given / given.sum()
    left = 1.0 - given.sum()
    if not left > 0:
        raise ValueError(f"the tasks' batch shares add up to {given.sum():g}: leave room (< 1) for the tasks "
                         "without one")
    free = np.where(fixed, 0.0, weights)
    if not free.sum() > 0:
        free = np.where(fixed, 0.0, 1.0)
    return np.where(fixed, given, left * free / free.sum())


def mixture(
    tasks,
    examples_by_task: Dict[str, Sequence[Example]],
    preprocessor,
    *,
    batch_size: int = 32,
    sampling="proportional",
    temperature: float = 2.0,
    granularity: str = "joint",
    epochs: int = 1,
    steps_per_epoch: int = None,
    seed: int = 0,
    length_buckets: Optional[Sequence[int]] = None,
    group_by_length: bool = False,
    reshuffle_each_iteration: bool = True,
    shares: Optional[Dict[str, float]] = None,
    batch_sizes: Optional[Dict[str, int]] = None,
    stopped: Optional[Dict[str, int]] = None,
) -> tf.data.Dataset:
    """The multi-task training dataset: ``epochs × steps_per_epoch`` batches of ``(x, y, w)``.

    ``y``/``w`` are full dicts (one entry per task; zero weight for tasks an example does not
    own), so the dataset goes straight into `model.fit`. Each batch is padded only to its own
    longest sequence.

    Args:
        tasks: the `kmtl.tasks.Task` list (the model's heads).
        examples_by_task: training `Example`s per task name (tasks without data are skipped).
        preprocessor: the `kmtl.data.Preprocessor` of the backbone.
        batch_size: examples per batch.
        sampling: ``proportional``, ``temperature`` (``n_i ** (1/T)``, T5), ``uniform`` or
            ``annealed`` (Stickland & Murray 2019), or a `kmtl.data.sampling.Sampler`.
        temperature: ``T`` for temperature sampling.
        granularity: ``joint`` (examples of all tasks mixed inside a batch) or ``alternating``
            (each batch drawn from one task).
        epochs: how many epochs of batches to produce. With ``epochs=1`` the dataset can be
            passed to ``fit(epochs=N)``: each pass draws tasks and examples in a new order. Annealed sampling needs the real
            number (its rates change by epoch): then pass ``steps_per_epoch`` to ``fit`` too.
        steps_per_epoch: batches per epoch; default: all examples once (`default_steps_per_epoch`).
        seed: makes the sampling and shuffling deterministic.
        length_buckets: sorted sequence lengths (e.g. `kmtl.data.buckets.default_boundaries`);
            each batch is then padded to the smallest one that holds its longest sequence
            (``max_length`` is always the last), so the model sees a bounded number of shapes
            (what an XLA-compiled step needs). ``None``: padded to the longest sequence.
        group_by_length: batch examples with others of the same length bucket (needs
            ``length_buckets``; joint granularity): much less padding on mixed-length data.
        reshuffle_each_iteration: ``True`` (default): every new iterator over the dataset draws
            new task and example orders (reproducibly from a freshly built dataset), which is
            what ``fit(epochs=N)`` over an ``epochs=1`` mixture needs. ``False``: batch ``i`` is a
            function of ``(seed, i)`` whatever iterators were made before, so a rebuilt pipeline
            can ``skip`` to where a crashed run stopped (`kmtl.training.train` uses this, with
            ``epochs`` and ``fit(steps_per_epoch=...)``); every iterator then yields the same
            batches, so pass the real ``epochs``.
        shares: ``{task: share}``: a task's fixed share of the examples (joint batches) or of the
            batches (alternating), ``0 < share < 1``; the other tasks split the rest as
            ``sampling`` says (`with_shares`). YAML: ``tasks[i].batch_share``.
        batch_sizes: ``{task: size}``, alternating batches only: that task's batches hold
            ``size`` examples (the others ``batch_size``); the sampler then counts each task's
            size in batches, so proportional sampling still sees every example once an epoch.
            YAML: ``tasks[i].batch_size``.
        stopped: ``{task: epoch}``: the task draws no examples from that (0-based) epoch on; the
            others fill its share. The batches of the epochs before are the same as without it,
            so a run can go on from there (per-task early stopping,
            `kmtl.training.early_stopping.TaskEarlyStopping`).

    Example:
        >>> train = kmtl.data.mixture(tasks, {"sentiment": sst, "ner": conll}, pre,
        ...                           sampling="temperature", temperature=2.0)
        >>> model.fit(train, epochs=3)

        Resumable (the same batches in the same order from any step on):

        >>> train = kmtl.data.mixture(tasks, examples, pre, epochs=3, steps_per_epoch=100,
        ...                           reshuffle_each_iteration=False)
        >>> model.fit(train.skip(250), initial_epoch=2, epochs=3, steps_per_epoch=50)  # the rest of epoch 3
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of: {', '.join(GRANULARITIES)}")
    if group_by_length and not length_buckets:
        raise ValueError("group_by_length needs length_buckets (e.g. kmtl.data.buckets.default_boundaries(max_length))")
    if group_by_length and granularity != "joint":
        raise ValueError("group_by_length works with granularity='joint' only")
    if batch_sizes and granularity != "alternating":
        raise ValueError("per-task batch sizes need granularity='alternating' (a joint batch mixes the tasks: "
                         "give a task a share of it instead)")
    sampler = get_sampler(sampling, temperature)
    by_name = {t.name: t for t in tasks}
    names = tasks_with_examples(by_name, examples_by_task)
    unknown = sorted((set(shares or {}) | set(batch_sizes or {}) | set(stopped or {})) - set(by_name))
    if unknown:
        raise ValueError(f"shares, batch sizes or stop epochs given for unknown tasks {unknown}; the model's tasks are "
                         f"{sorted(by_name)}")
    sizes = [len(examples_by_task[name]) for name in names]
    own_sizes = [(batch_sizes or {}).get(name) for name in names]
    steps = steps_per_epoch or default_steps_per_epoch(sizes, batch_size, own_sizes if batch_sizes else None)

    parts = [
        task_dataset(by_name[name], tasks, examples_by_task[name], preprocessor, seed=seed + i,
                     reshuffle_each_iteration=reshuffle_each_iteration)
        for i, name in enumerate(names)
    ]
    if length_buckets:
        bounds = check_boundaries(length_buckets, preprocessor.max_length)
        trim = lambda x, y, w: pad_to_bucket(tasks, bounds, x, y, w)  # noqa: E731
    else:
        trim = lambda x, y, w: trim_batch(tasks, x, y, w)  # noqa: E731
    if granularity == "alternating":
        parts = [p.batch(own or batch_size, drop_remainder=True).map(trim) for p, own in zip(parts, own_sizes)]
    per_epoch = steps if granularity == "alternating" else steps * batch_size

    counted = [n / (own or batch_size) for n, own in zip(sizes, own_sizes)] if batch_sizes else sizes
    table = np.stack([sampler.weights(counted, e, epochs) for e in range(epochs)])
    if shares:
        table = np.stack([with_shares(row, [shares.get(name) for name in names]) for row in table])
    if stopped:
        table = _without_stopped(table, names, stopped)
    table = table.astype(np.float32)
    extra = batch_size * len(bounds) if group_by_length else 0
    choices = _task_choices if reshuffle_each_iteration else _fixed_task_choices
    ds = parts[0] if len(parts) == 1 else tf.data.Dataset.choose_from_datasets(
        parts, choices(table, per_epoch, seed, extra=extra))
    if granularity == "joint" and group_by_length:
        ds = group_by_length_batches(ds, batch_size, bounds).map(trim, num_parallel_calls=tf.data.AUTOTUNE)
    elif granularity == "joint":
        ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE).map(trim)
    ds = ds.take(steps * epochs)
    return ds.prefetch(tf.data.AUTOTUNE)


def _without_stopped(table: np.ndarray, names: Sequence[str], stopped: Dict[str, int]) -> np.ndarray:
    """``table`` (epochs × tasks probabilities) with each stopped task's column zeroed from its stop
    epoch on, the rows renormalised; an epoch where every task has stopped is an error."""
    table = table.copy()
    for i, name in enumerate(names):
        if name in stopped:
            table[max(0, int(stopped[name])):, i] = 0.0
    sums = table.sum(axis=1)
    if not (sums > 0).all():
        raise ValueError(f"every task has stopped by epoch {int(np.argmin(sums > 0))} ({stopped}): nothing to train")
    return table / sums[:, None]


def _task_choices(table: np.ndarray, per_epoch: int, seed: int, extra: int = 0) -> tf.data.Dataset:
    """Task index per element: drawn from ``table[epoch]``, new draws on each pass, seeded.

    ``extra`` more elements (drawn as in the last epoch) cover what length grouping leaves in
    partly filled buckets, so that ``steps × epochs`` full batches still come out.

    (``sample_from_datasets`` would repeat the same task order on every pass over a dataset.)
    """
    cumulative = tf.constant(np.cumsum(table, axis=1), tf.float32)
    uniform = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
        lambda r: tf.cast(r % (1 << 24), tf.float32) / float(1 << 24))
    index = tf.data.Dataset.range(per_epoch * len(table) + extra)
    last = tf.constant(len(table[0]) - 1, tf.int64)
    last_epoch = tf.constant(len(table) - 1, tf.int64)

    def pick(i, u):
        row = cumulative[tf.minimum(i // per_epoch, last_epoch)]
        return tf.minimum(tf.searchsorted(row, [u], side="right", out_type=tf.int64)[0], last)

    return tf.data.Dataset.zip(index, uniform).map(pick)


def _fixed_task_choices(table: np.ndarray, per_epoch: int, seed: int, extra: int = 0) -> tf.data.Dataset:
    """Like `_task_choices`, but drawn once here (NumPy, seeded): the same for every iterator."""
    rng = np.random.default_rng(seed)
    count = per_epoch * len(table) + extra
    epoch = np.minimum(np.arange(count) // per_epoch, len(table) - 1)
    cumulative = np.cumsum(table, axis=1)
    u = rng.random(count)
    picks = (u[:, None] >= cumulative[epoch]).sum(axis=1)  # searchsorted(row, u, side="right") per row
    return tf.data.Dataset.from_tensor_slices(np.minimum(picks, table.shape[1] - 1).astype(np.int64))
