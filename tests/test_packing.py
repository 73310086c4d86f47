"""kmtl packs sequences with core TF ops exactly as keras-hub's round-robin packer does."""

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kmtl.data.preprocessor import round_robin_lengths

WORDS = "the a good bad film john paris new york story acting plot".split()


@pytest.mark.parametrize("length", [5, 6, 9, 16])
def test_packing_matches_keras_hub_multi_segment_packer(tiny, length):
    rng = np.random.default_rng(length)
    first = [" ".join(rng.choice(WORDS, rng.integers(0, 12))) for _ in range(60)]
    second = [" ".join(rng.choice(WORDS, rng.integers(0, 12))) for _ in range(60)]
    pre = tiny.preprocessor(length)
    packer = keras_hub.layers.MultiSegmentPacker(sequence_length=length, start_value=pre.cls_id,
                                                 end_value=pre.sep_id, pad_value=pre.pad_id, truncate="round_robin")
    a = tf.ragged.constant(tiny.tokenizer(tf.constant(first)), dtype=tf.int32)
    b = tf.ragged.constant(tiny.tokenizer(tf.constant(second)), dtype=tf.int32)
    ids, segments = packer((a, b))
    mine = pre.encode_text(tf.constant(first), tf.constant(second))
    np.testing.assert_array_equal(mine["token_ids"], ids)
    np.testing.assert_array_equal(mine["segment_ids"], segments)
    np.testing.assert_array_equal(mine["padding_mask"], np.asarray(ids) != pre.pad_id)
    single, _ = packer((a,))
    np.testing.assert_array_equal(pre.encode_text(tf.constant(first))["token_ids"], single)


@pytest.mark.parametrize("la,lb,budget,expected", [
    (10, 3, 8, (5, 3)), (3, 10, 8, (3, 5)), (10, 10, 8, (4, 4)), (10, 10, 7, (4, 3)),
    (2, 3, 8, (2, 3)), (0, 10, 8, (0, 8)), (4, 4, 8, (4, 4)),
])
def test_round_robin_lengths(la, lb, budget, expected):
    keep = round_robin_lengths(tf.constant([la]), tf.constant([lb]), budget)
    assert (int(keep[0][0]), int(keep[1][0])) == expected
