"""The `Preprocessor`: packing text (single and pairs) and aligning words with word pieces.

Expected ids are derived by hand from the tiny vocabulary (whole words such as "the", "film",
"new", "york" are single pieces; any other lower-case word is split into characters: "cat" ->
c ##a ##t), not copied from the function under test.
"""

import numpy as np
import pytest
import tensorflow as tf

from kmtl.data import Preprocessor


@pytest.fixture(scope="module")
def tok(tiny):
    return tiny.tokenizer


@pytest.fixture(scope="module")
def ids(tok):
    def ids(*tokens):
        return [int(tok.token_to_id(t)) for t in tokens]

    return ids


@pytest.fixture(scope="module")
def special(ids):
    cls, sep, pad, unk = ids("[CLS]", "[SEP]", "[PAD]", "[UNK]")
    return {"cls": cls, "sep": sep, "pad": pad, "unk": unk}


@pytest.fixture(scope="module")
def pre8(tiny):
    return tiny.preprocessor(8)


@pytest.fixture(scope="module")
def pre6(tiny):
    return tiny.preprocessor(6)


@pytest.fixture(scope="module")
def pre16(tiny):
    return tiny.preprocessor(16)


def np_out(out):
    return {k: v.numpy() for k, v in out.items()}


def words(batch):
    return tf.ragged.constant(batch, dtype=tf.string)


def labels(batch):
    return tf.ragged.constant(batch, dtype=tf.int32)


def test_tiny_tokenizer_pieces(tok, ids):
    """The vocabulary facts the other tests rely on."""
    pieces = tok(["the", "film", "cat", "new york", "dog", "\x01", "", "Good"])
    assert pieces[0] == ids("the")
    assert pieces[1] == ids("film")
    assert pieces[2] == ids("c", "##a", "##t")
    assert pieces[3] == ids("new", "york")
    assert pieces[4] == ids("d", "##o", "##g")
    assert pieces[5] == [] and pieces[6] == []
    assert pieces[7] == ids("good")  # lower-cased


def test_special_ids(pre8, special):
    assert (pre8.cls_id, pre8.sep_id, pre8.pad_id, pre8.unk_id) == (
        special["cls"], special["sep"], special["pad"], special["unk"])
    assert len({pre8.cls_id, pre8.sep_id, pre8.pad_id, pre8.unk_id}) == 4


def test_max_length_too_small(tok):
    with pytest.raises(ValueError, match="at least 4"):
        Preprocessor(tok, max_length=3)
    assert Preprocessor(tok, max_length=4).max_length == 4


# --------------------------------------------------------------------------- encode_text
def test_encode_text_single(pre8, ids, special):
    out = pre8.encode_text(tf.constant(["the film", "cat", ""]))
    assert sorted(out) == ["padding_mask", "segment_ids", "token_ids"]
    for v in out.values():
        assert isinstance(v, tf.Tensor) and v.dtype == tf.int32 and v.shape == (3, 8)
    out = np_out(out)
    c, s, p = special["cls"], special["sep"], special["pad"]
    np.testing.assert_array_equal(out["token_ids"], [
        [c, *ids("the", "film"), s, p, p, p, p],
        [c, *ids("c", "##a", "##t"), s, p, p, p],
        [c, s, p, p, p, p, p, p],
    ])
    np.testing.assert_array_equal(out["segment_ids"], np.zeros((3, 8)))
    np.testing.assert_array_equal(out["padding_mask"], [
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
    ])


def test_encode_text_truncates_single(pre6, ids, special):
    out = np_out(pre6.encode_text(tf.constant(["hello"])))  # h ##e ##l ##l ##o: 5 pieces, room for 4
    np.testing.assert_array_equal(
        out["token_ids"], [[special["cls"], *ids("h", "##e", "##l", "##l"), special["sep"]]])
    np.testing.assert_array_equal(out["padding_mask"], [[1] * 6])


def test_encode_text_pair(pre16, ids, special):
    out = np_out(pre16.encode_text(tf.constant(["the cat", "a"]), tf.constant(["film", "new york film"])))
    c, s, p = special["cls"], special["sep"], special["pad"]
    np.testing.assert_array_equal(out["token_ids"], [
        [c, *ids("the", "c", "##a", "##t"), s, *ids("film"), s] + [p] * 8,
        [c, *ids("a"), s, *ids("new", "york", "film"), s] + [p] * 9,
    ])
    np.testing.assert_array_equal(out["segment_ids"], [
        [0] * 6 + [1] * 2 + [0] * 8,
        [0] * 3 + [1] * 4 + [0] * 9,
    ])
    np.testing.assert_array_equal(out["padding_mask"], [
        [1] * 8 + [0] * 8,
        [1] * 7 + [0] * 9,
    ])
    # padding_mask is 1 exactly on the real tokens
    np.testing.assert_array_equal(out["padding_mask"], (out["token_ids"] != p).astype(int))


def _round_robin(len_a, len_b, budget):
    """Reference: hand out the budget one piece at a time, first segment first in each round."""
    keep_a = keep_b = 0
    while True:
        before = (keep_a, keep_b)
        if keep_a < len_a and keep_a + keep_b < budget:
            keep_a += 1
        if keep_b < len_b and keep_a + keep_b < budget:
            keep_b += 1
        if (keep_a, keep_b) == before:
            return keep_a, keep_b


def test_round_robin_reference():
    assert _round_robin(6, 6, 6) == (3, 3)
    assert _round_robin(6, 6, 7) == (4, 3)  # the first segment keeps the odd piece
    assert _round_robin(1, 9, 7) == (1, 6)  # a short segment leaves its room to the other
    assert _round_robin(9, 2, 7) == (5, 2)
    assert _round_robin(2, 3, 7) == (2, 3)  # fits: nothing cut


def test_encode_text_pair_round_robin_truncation(tiny, ids, special):
    pre = tiny.preprocessor(10)  # budget 7 for the pieces of both segments
    grid = [(la, lb) for la in range(9) for lb in range(9)]
    # "a" * n is a ##a ##a ...: exactly n pieces ("" has none)
    out = np_out(pre.encode_text(tf.constant(["a" * la for la, _ in grid]), tf.constant(["b" * lb for _, lb in grid])))
    for row, (la, lb) in enumerate(grid):
        keep_a, keep_b = _round_robin(la, lb, 7)
        tokens = out["token_ids"][row]
        segments = out["segment_ids"][row]
        mask = out["padding_mask"][row]
        assert mask.sum() == keep_a + keep_b + 3, (la, lb)
        np.testing.assert_array_equal(mask, np.arange(10) < keep_a + keep_b + 3)
        assert (segments[mask == 1] == 0).sum() == keep_a + 2, (la, lb)  # [CLS] a... [SEP]
        assert (segments == 1).sum() == keep_b + 1, (la, lb)  # b... [SEP]
        np.testing.assert_array_equal(
            tokens[:keep_a + keep_b + 3],
            [special["cls"]] + ids("a", *["##a"] * (keep_a - 1))[:keep_a] + [special["sep"]]
            + ids("b", *["##b"] * (keep_b - 1))[:keep_b] + [special["sep"]],
        )
        assert (tokens[keep_a + keep_b + 3:] == special["pad"]).all()
    # spot checks against hand-written rows
    six_six = out["token_ids"][grid.index((6, 6))]
    np.testing.assert_array_equal(six_six, [special["cls"], *ids("a", "##a", "##a", "##a"), special["sep"],
                                            *ids("b", "##b", "##b"), special["sep"]])
    one_eight = out["segment_ids"][grid.index((1, 8))]
    np.testing.assert_array_equal(one_eight, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])


def test_encode_on_a_temporary_preprocessor(tiny):
    """Regression: tf.functions decorated on methods kept only a weak reference to the instance,
    so ``encoder.preprocessor(8).encode_text(x)`` failed once the temporary was collected."""
    out = tiny.preprocessor(8).encode_text(tf.constant(["the film"]))
    assert int(tf.reduce_sum(out["padding_mask"])) == 4
    out = tiny.preprocessor(8).encode_words(tf.ragged.constant([["the", "film"]]))
    np.testing.assert_array_equal(out["first_piece"], [[1, 2]])


# --------------------------------------------------------------------------- encode_words
def test_encode_words_alignment(pre8, ids, special):
    out = pre8.encode_words(words([["the", "cat"], ["new", "york", "film", "dog"]]), labels([[1, 2], [3, 4, 5, 6]]))
    assert sorted(out) == ["first_piece", "first_piece_mask", "padding_mask", "piece_labels", "segment_ids",
                           "token_ids"]
    out = np_out(out)
    c, s, p = special["cls"], special["sep"], special["pad"]
    # row 0: [CLS] the c ##a ##t [SEP]         -> first pieces at 1 (the), 2 (cat)
    # row 1: [CLS] new york film d ##o ##g [SEP] -> exactly max_length, nothing cut
    np.testing.assert_array_equal(out["token_ids"], [
        [c, *ids("the", "c", "##a", "##t"), s, p, p],
        [c, *ids("new", "york", "film", "d", "##o", "##g"), s],
    ])
    np.testing.assert_array_equal(out["padding_mask"], [[1] * 6 + [0] * 2, [1] * 8])
    np.testing.assert_array_equal(out["segment_ids"], np.zeros((2, 8)))
    np.testing.assert_array_equal(out["first_piece_mask"], [
        [0, 1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0, 0],
    ])
    np.testing.assert_array_equal(out["first_piece"], [[1, 2, -1, -1], [1, 2, 3, 4]])
    # the word's label sits on its first piece; [CLS], [SEP] and padding carry 0
    fp = out["first_piece"]
    assert [out["piece_labels"][0, fp[0, w]] for w in range(2)] == [1, 2]
    assert [out["piece_labels"][1, fp[1, w]] for w in range(4)] == [3, 4, 5, 6]
    np.testing.assert_array_equal(out["piece_labels"][:, 0], [0, 0])
    np.testing.assert_array_equal(out["piece_labels"][0, 5:], [0, 0, 0])
    np.testing.assert_array_equal(out["piece_labels"][1, 7], 0)
    assert out["first_piece_mask"].dtype == np.float32
    assert out["first_piece"].dtype == np.int32 and out["piece_labels"].dtype == np.int32


def test_encode_words_piece_labels_zero_on_continuation_pieces(pre8):
    out = np_out(pre8.encode_words(words([["cat"]]), labels([[5]])))
    np.testing.assert_array_equal(out["piece_labels"], [[0, 5, 0, 0, 0, 0, 0, 0]])


def test_encode_words_matches_encode_text_without_truncation(pre16):
    sentence = ["john", "visited", "new", "york", "film"]
    by_words = np_out(pre16.encode_words(words([sentence])))
    by_text = np_out(pre16.encode_text(tf.constant([" ".join(sentence)])))
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(by_words[key], by_text[key])
    assert "piece_labels" not in by_words


def test_encode_words_first_piece_hand_computed(pre16, tok):
    sentence = ["dog", "the", "cats", "a", "film"]
    out = np_out(pre16.encode_words(words([sentence])))
    counts = [len(tok([w])[0]) for w in sentence]
    assert counts == [3, 1, 4, 1, 1]
    expected = list(1 + np.cumsum([0] + counts[:-1]))  # 1 ([CLS]) + pieces of the words before
    assert expected == [1, 4, 5, 9, 10]
    np.testing.assert_array_equal(out["first_piece"], [expected])
    mask = np.zeros(16)
    mask[expected] = 1
    np.testing.assert_array_equal(out["first_piece_mask"], [mask])


def test_encode_words_truncation(pre6, ids, special):
    # room for 4 pieces: "the" (1) "cat" (3) fill it, "film" is cut off
    out = np_out(pre6.encode_words(words([["the", "cat", "film"]]), labels([[1, 2, 3]])))
    np.testing.assert_array_equal(out["token_ids"], [[special["cls"], *ids("the", "c", "##a", "##t"), special["sep"]]])
    np.testing.assert_array_equal(out["first_piece"], [[1, 2, -1]])
    np.testing.assert_array_equal(out["first_piece_mask"], [[0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(out["padding_mask"], [[1] * 6])
    assert out["piece_labels"][0, 5] == 0  # [SEP] position carries no label
    assert 3 not in out["piece_labels"]


def test_encode_words_truncation_inside_a_word(pre6, ids, special):
    # "the the cat" = the the c ##a ##t: the last piece is cut, "cat" keeps its first piece
    out = np_out(pre6.encode_words(words([["the", "the", "cat"], ["dog", "dog"]]), labels([[1, 1, 1], [2, 2]])))
    c, s = special["cls"], special["sep"]
    np.testing.assert_array_equal(out["token_ids"], [
        [c, *ids("the", "the", "c", "##a"), s],
        [c, *ids("d", "##o", "##g", "d"), s],
    ])
    np.testing.assert_array_equal(out["first_piece"], [[1, 2, 3], [1, 4, -1]])
    np.testing.assert_array_equal(out["first_piece_mask"], [[0, 1, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0]])


def test_encode_words_empty_sentence_in_batch(pre8, ids, special):
    out = np_out(pre8.encode_words(words([[], ["film"]]), labels([[], [4]])))
    c, s, p = special["cls"], special["sep"], special["pad"]
    np.testing.assert_array_equal(out["token_ids"], [[c, s] + [p] * 6, [c, *ids("film"), s] + [p] * 5])
    np.testing.assert_array_equal(out["padding_mask"], [[1, 1] + [0] * 6, [1, 1, 1] + [0] * 5])
    np.testing.assert_array_equal(out["first_piece"], [[-1], [1]])
    np.testing.assert_array_equal(out["first_piece_mask"][0], np.zeros(8))
    np.testing.assert_array_equal(out["piece_labels"], [[0] * 8, [0, 4] + [0] * 6])


def test_encode_words_only_empty_sentences(pre8, special):
    out = np_out(pre8.encode_words(words([[], []]), labels([[], []])))
    np.testing.assert_array_equal(out["token_ids"][:, :2], [[special["cls"], special["sep"]]] * 2)
    np.testing.assert_array_equal(out["padding_mask"].sum(axis=1), [2, 2])
    assert out["first_piece"].shape == (2, 0)
    assert out["first_piece_mask"].sum() == 0
    np.testing.assert_array_equal(out["piece_labels"], np.zeros((2, 8)))


@pytest.mark.parametrize("blank", ["\x01", ""])
def test_encode_words_word_without_pieces_gets_unk_slot(pre8, ids, special, blank):
    out = np_out(pre8.encode_words(words([["the", blank, "cat"]]), labels([[1, 2, 3]])))
    c, s, p, u = special["cls"], special["sep"], special["pad"], special["unk"]
    np.testing.assert_array_equal(out["token_ids"], [[c, *ids("the"), u, *ids("c", "##a", "##t"), s, p]])
    np.testing.assert_array_equal(out["first_piece"], [[1, 2, 3]])
    np.testing.assert_array_equal(out["first_piece_mask"], [[0, 1, 1, 1, 0, 0, 0, 0]])
    assert out["piece_labels"][0, 2] == 2


def test_encode_words_batch_of_different_lengths(pre16, ids, special):
    batch = [["film"], ["the", "dog", "new"], [], ["a", "b"]]
    out = np_out(pre16.encode_words(words(batch), labels([[1], [2, 3, 4], [], [5, 6]])))
    c, s, p = special["cls"], special["sep"], special["pad"]
    rows = [
        [c, *ids("film"), s],
        [c, *ids("the", "d", "##o", "##g", "new"), s],
        [c, s],
        [c, *ids("a", "b"), s],
    ]
    np.testing.assert_array_equal(out["token_ids"], [r + [p] * (16 - len(r)) for r in rows])
    np.testing.assert_array_equal(out["padding_mask"].sum(axis=1), [len(r) for r in rows])
    np.testing.assert_array_equal(out["first_piece"], [
        [1, -1, -1],
        [1, 2, 5],
        [-1, -1, -1],
        [1, 2, -1],
    ])
    np.testing.assert_array_equal(out["first_piece_mask"].sum(axis=1), [1, 3, 0, 2])
    for row, labs in enumerate([[1], [2, 3, 4], [], [5, 6]]):
        got = [out["piece_labels"][row, pos] for pos in out["first_piece"][row] if pos >= 0]
        assert got == labs
        np.testing.assert_array_equal(np.flatnonzero(out["first_piece_mask"][row]),
                                      [pos for pos in out["first_piece"][row] if pos >= 0])
