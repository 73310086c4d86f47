"""Length buckets: pad batches to a few fixed lengths, and group examples of similar length.

Two levers for `kmtl.data.mixture`, both driven by one sorted list of bucket *boundaries*
(sequence lengths in word pieces, ``[CLS]``/``[SEP]`` included):

* **fixed-boundary padding** — each batch is padded to the smallest boundary that holds its
  longest sequence instead of to that longest sequence itself. The model then sees at most
  ``len(boundaries)`` different shapes, so an XLA-compiled train step (``jit_compile=True``)
  compiles a bounded number of times instead of once per new length.
* **grouping by length** — examples are batched with others of the same bucket
  (`tf.data.Dataset.bucket_by_sequence_length`), as Hugging Face's ``group_by_length`` does:
  far less padding when short (CoNLL sentences) and long (AG News) texts are mixed. Tasks
  stay mixed inside a batch; which examples share a batch now depends on their length.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import tensorflow as tf

from kmtl.data.pipeline import cut_batch, longest_sequence

DEFAULT_STEP = 16


def default_boundaries(max_length: int, step: int = DEFAULT_STEP) -> Tuple[int, ...]:
    """``step, 2·step, ...`` up to ``max_length`` (always included as the last boundary).

    Example:
        >>> default_boundaries(128)
        (16, 32, 48, 64, 80, 96, 112, 128)
        >>> default_boundaries(40)
        (16, 32, 40)
    """
    bounds = list(range(step, max_length, step)) + [max_length]
    return tuple(sorted(set(bounds)))


def check_boundaries(boundaries: Sequence[int], max_length: int) -> Tuple[int, ...]:
    """Sorted, unique, positive boundaries capped by ``max_length`` (which is added last)."""
    bounds = sorted({int(b) for b in boundaries})
    if not bounds or bounds[0] < 1:
        raise ValueError(f"length buckets must be positive lengths, got {list(boundaries)}")
    return tuple(b for b in bounds if b < max_length) + (int(max_length),)


def bucket_length(longest, boundaries: Sequence[int]):
    """The smallest boundary ``>= longest`` (a scalar int tensor); the last one if none is."""
    bounds = tf.constant(list(boundaries), tf.int32)
    index = tf.searchsorted(bounds, tf.reshape(tf.cast(longest, tf.int32), [1]), side="left")[0]
    return bounds[tf.minimum(index, len(boundaries) - 1)]


def pad_to_bucket(tasks, boundaries: Sequence[int], x, y=None, w=None):
    """Cut a batch padded to ``max_length`` down to the bucket length of its longest sequence.

    Like `kmtl.data.pipeline.trim_batch`, but the length is a boundary, so it has one of
    ``len(boundaries)`` static values. Token-level labels and weights are cut the same way.
    """
    return cut_batch(tasks, bucket_length(longest_sequence(x), boundaries), x, y, w)


def group_by_length(ds: tf.data.Dataset, batch_size: int, boundaries: Sequence[int]) -> tf.data.Dataset:
    """Batches of ``batch_size`` examples whose lengths fall in the same bucket.

    ``ds`` holds unbatched ``(x, y, w)`` elements of fixed width; lengths are counted on
    ``x["padding_mask"]``. Batches are full (``drop_remainder``), so an infinite ``ds`` gives
    an infinite stream; shapes stay at full width until `pad_to_bucket` cuts them.

    Example:
        >>> batches = group_by_length(unbatched, 32, default_boundaries(128))
    """
    # bucket_by_sequence_length puts length L in the bucket whose upper bound is > L; our
    # boundaries are inclusive upper bounds, hence the +1.
    upper = [b + 1 for b in boundaries[:-1]]
    return ds.bucket_by_sequence_length(
        element_length_func=lambda x, y, w: tf.reduce_sum(x["padding_mask"]),
        bucket_boundaries=upper,
        bucket_batch_sizes=[batch_size] * (len(upper) + 1),
        drop_remainder=True,
    )

