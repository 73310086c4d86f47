"""Task samplers and the multi-task training mixture (plus the validation dataset).

The examples are built so that a batch row tells which task it came from by its length alone:
a sentiment row is ``[CLS] good|bad [SEP]`` (3 tokens), a similarity row is
``[CLS] bad [SEP] great|bad [SEP]`` (5 tokens), an NER row is 6 tokens
(``new york film the`` or ``john c ##a ##t``). Every check on ownership therefore also checks
that inputs, labels and weights stay aligned row by row.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from kmtl.data import Example, default_steps_per_epoch, mixture, validation_dataset
from kmtl.data.mixture import with_shares
from kmtl.data.sampling import (
    AnnealedSampler,
    ProportionalSampler,
    Sampler,
    TemperatureSampler,
    UniformSampler,
    get_sampler,
)
from kmtl.errors import DataError
from kmtl.tasks import Classification, PairRegression, Tagging, bio_labels

LENGTH = {"sent": 3, "sim": 5, "ner": 6}


# --------------------------------------------------------------------------- samplers
def test_proportional_weights():
    np.testing.assert_allclose(ProportionalSampler().weights([300, 100]), [0.75, 0.25])
    np.testing.assert_allclose(ProportionalSampler().weights([1, 2, 5]), [1 / 8, 2 / 8, 5 / 8])


def test_temperature_weights():
    # T=2: sqrt sizes normalised
    np.testing.assert_allclose(TemperatureSampler(2).weights([400, 100]), [2 / 3, 1 / 3])
    np.testing.assert_allclose(TemperatureSampler(2).weights([900, 100, 25]), [30 / 45, 10 / 45, 5 / 45])
    np.testing.assert_allclose(TemperatureSampler(1).weights([300, 100]), [0.75, 0.25])
    # T=3: cube roots 4 and 1
    np.testing.assert_allclose(TemperatureSampler(3).weights([64, 1]), [0.8, 0.2])


def test_temperature_must_be_positive():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            TemperatureSampler(bad)


def test_uniform_weights():
    np.testing.assert_allclose(UniformSampler().weights([5, 1, 7000]), [1 / 3, 1 / 3, 1 / 3])


def test_annealed_weights():
    s = AnnealedSampler()
    # alpha = 1 - 0.8 * epoch / (epochs - 1): 1.0, 0.6, 0.2 over 3 epochs
    np.testing.assert_allclose(s.weights([32, 1], epoch=0, epochs=3), [32 / 33, 1 / 33])
    np.testing.assert_allclose(s.weights([32, 1], epoch=1, epochs=3), [8 / 9, 1 / 9])  # 32 ** 0.6 = 8
    np.testing.assert_allclose(s.weights([32, 1], epoch=2, epochs=3), [2 / 3, 1 / 3])  # 32 ** 0.2 = 2
    np.testing.assert_allclose(s.weights([300, 100], epoch=0, epochs=5), [0.75, 0.25])
    last = s.weights([300, 100], epoch=4, epochs=5)
    np.testing.assert_allclose(last[0], 3 ** 0.2 / (3 ** 0.2 + 1))
    np.testing.assert_allclose(s.weights([300, 100], epoch=0, epochs=1), [0.75, 0.25])  # one epoch


def test_get_sampler():
    assert isinstance(get_sampler("proportional"), ProportionalSampler)
    assert isinstance(get_sampler("uniform"), UniformSampler)
    assert isinstance(get_sampler("annealed"), AnnealedSampler)
    t = get_sampler("temperature", temperature=4.0)
    assert isinstance(t, TemperatureSampler) and t.temperature == 4.0
    custom = UniformSampler()
    assert get_sampler(custom) is custom
    assert isinstance(custom, Sampler)


def test_get_sampler_unknown_lists_choices():
    with pytest.raises(ValueError) as err:
        get_sampler("balanced")
    msg = str(err.value)
    assert "'balanced'" in msg
    for name in ("proportional", "temperature", "uniform", "annealed"):
        assert name in msg


def test_default_steps_per_epoch():
    assert default_steps_per_epoch([20, 10, 10], 8) == 5
    assert default_steps_per_epoch([20, 10, 11], 8) == 6
    assert default_steps_per_epoch([3], 32) == 1
    assert default_steps_per_epoch([], 32) == 1


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pre(tiny):
    return tiny.preprocessor(16)


@pytest.fixture(scope="module")
def ids(tiny):
    return {w: int(tiny.tokenizer.token_to_id(w)) for w in ("good", "bad", "great", "new", "john")}


@pytest.fixture(scope="module")
def tasks():
    return [
        Classification("sent", labels=["neg", "pos"]),
        Tagging("ner", labels=bio_labels(["PER", "LOC"])),  # O B-PER I-PER B-LOC I-LOC
        PairRegression("sim"),
    ]


def make_examples(n_sent=20, n_ner=10, n_sim=10, prefix="train"):
    sent = [Example(text=t, label=l, where=f"{prefix}/sent.tsv:{i + 2}")
            for i, (t, l) in zip(range(n_sent), [("good", "pos"), ("bad", "neg")] * n_sent)]
    ner = [Example(tokens=t, label=l, where=f"{prefix}/ner.conll:{i + 1}")
           for i, (t, l) in zip(range(n_ner), [(("new", "york", "film", "the"), ("B-LOC", "I-LOC", "O", "O")),
                                               (("john", "cat"), ("B-PER", "O"))] * n_ner)]
    sim = [Example(text="bad", text_pair=p, label=s, where=f"{prefix}/sim.tsv:{i + 2}")
           for i, (p, s) in zip(range(n_sim), [("great", "4.5"), ("bad", "1.0")] * n_sim)]
    return {"sent": sent, "ner": ner, "sim": sim}


def batches(ds):
    return list(ds.as_numpy_iterator())


def owners(w, row):
    """Names of the tasks with a nonzero weight for one row."""
    return [name for name, v in w.items() if (v[row] > 0).any()]


@pytest.fixture(scope="module")
def joint_ds(tasks, pre):
    return mixture(tasks, make_examples(), pre, batch_size=8, epochs=2, steps_per_epoch=6, seed=3)


@pytest.fixture(scope="module")
def joint(joint_ds):
    return batches(joint_ds)


@pytest.fixture(scope="module")
def alternating_ds(tasks, pre):
    return mixture(tasks, make_examples(), pre, batch_size=4, granularity="alternating", epochs=3,
                   steps_per_epoch=5, seed=0)


# --------------------------------------------------------------------------- (a) full dicts, ownership
def test_every_batch_has_every_task(joint, tasks):
    assert len(joint) == 12
    names = sorted(t.name for t in tasks)
    for x, y, w in joint:
        assert sorted(x) == ["padding_mask", "segment_ids", "task_id", "token_ids"]
        assert x["task_id"].shape == (8,) and x["task_id"].dtype == np.int32
        assert sorted(y) == names and sorted(w) == names
        assert x["token_ids"].shape[0] == 8
        assert y["sent"].shape == (8,) and w["sent"].shape == (8,)
        assert y["sim"].shape == (8, 1) and w["sim"].shape == (8,)
        assert y["sent"].dtype == np.int32 and y["sim"].dtype == np.float32 and y["ner"].dtype == np.int32


def test_exactly_one_owner_per_row_and_inputs_match(joint):
    seen = set()
    for x, y, w in joint:
        for row in range(8):
            own = owners(w, row)
            assert len(own) == 1, own
            task = own[0]
            seen.add(task)
            length = int(x["padding_mask"][row].sum())
            assert length == LENGTH[task]
            assert int(x["task_id"][row]) == ["sent", "ner", "sim"].index(task)  # position in tasks
            # other tasks: zero weight and zero label
            for other in ("sent", "ner", "sim"):
                if other != task:
                    assert not w[other][row].any() and not y[other][row].any()
    assert seen == {"sent", "ner", "sim"}


def test_labels_and_weights_of_owned_rows(joint, ids):
    for x, y, w in joint:
        for row in range(8):
            task = owners(w, row)[0]
            tok = x["token_ids"][row]
            if task == "sent":
                assert w["sent"][row] == 1.0
                assert y["sent"][row] == {ids["good"]: 1, ids["bad"]: 0}[tok[1]]
            elif task == "sim":
                assert w["sim"][row] == 1.0
                np.testing.assert_array_equal(x["segment_ids"][row, :5], [0, 0, 0, 1, 1])
                assert y["sim"][row, 0] == {ids["great"]: 4.5, ids["bad"]: 1.0}[tok[3]]
            else:
                assert (x["segment_ids"][row] == 0).all()
                if tok[1] == ids["new"]:  # [CLS] new york film the [SEP]
                    np.testing.assert_array_equal(w["ner"][row, :6], [0, 1, 1, 1, 1, 0])
                    np.testing.assert_array_equal(y["ner"][row, 1:5], [3, 4, 0, 0])
                else:  # [CLS] john c ##a ##t [SEP]: only the first piece of "cat" weighs
                    assert tok[1] == ids["john"]
                    np.testing.assert_array_equal(w["ner"][row, :6], [0, 1, 1, 0, 0, 0])
                    assert y["ner"][row, 1] == 1 and y["ner"][row, 2] == 0
                assert not w["ner"][row, 6:].any()


# --------------------------------------------------------------------------- (b) trimming
def test_batches_are_trimmed(joint):
    widths = set()
    for x, y, w in joint:
        longest = int(x["padding_mask"].sum(axis=1).max())
        widths.add(longest)
        for name in ("token_ids", "segment_ids", "padding_mask"):
            assert x[name].shape == (8, longest)
        assert y["ner"].shape == (8, longest) and w["ner"].shape == (8, longest)
        assert longest < 16  # never the full max_length for these short rows
    assert widths <= {3, 5, 6}


# --------------------------------------------------------------------------- (c) determinism
def _same(a, b):
    if len(a) != len(b):
        return False
    flat_a, flat_b = tf.nest.flatten(a), tf.nest.flatten(b)
    return all(u.shape == v.shape and np.array_equal(u, v) for u, v in zip(flat_a, flat_b))


def two_task_dataset(tasks, pre, seed):
    examples = make_examples(n_sim=0)
    return batches(mixture(tasks, {"sent": examples["sent"], "ner": examples["ner"]}, pre, batch_size=8,
                           steps_per_epoch=8, seed=seed))


@pytest.fixture(scope="module")
def seeded(tasks, pre):
    return two_task_dataset(tasks, pre, seed=11)


def test_same_seed_same_batches(seeded, tasks, pre):
    assert _same(seeded, two_task_dataset(tasks, pre, seed=11))


def test_different_seed_different_batches(seeded, tasks, pre):
    other = two_task_dataset(tasks, pre, seed=12)
    assert len(other) == len(seeded) == 8
    assert not _same(seeded, other)


def test_each_pass_draws_a_new_task_order_reproducibly(tasks, pre):
    """fit(epochs=N) over an epochs=1 mixture: every pass differs, and the sequence of passes
    is the same for the same seed."""
    examples = make_examples(n_sim=0)
    subset = {"sent": examples["sent"], "ner": examples["ner"]}

    def order_of_passes(seed):
        ds = mixture(tasks, subset, pre, batch_size=8, steps_per_epoch=6, seed=seed)
        return [[tuple(owners(w, r)) for _, _, w in ds.as_numpy_iterator() for r in range(8)] for _ in range(2)]

    first = order_of_passes(seed=4)
    assert first[0] != first[1]
    assert first == order_of_passes(seed=4)


# --------------------------------------------------------------------------- (d) alternating
def test_alternating_one_task_per_batch(alternating_ds):
    got = batches(alternating_ds)
    assert len(got) == 15
    batch_owners = []
    for x, y, w in got:
        own = {o for row in range(4) for o in owners(w, row)}
        assert len(own) == 1
        task = own.pop()
        batch_owners.append(task)
        # every row is owned (by that task), all rows have the task's length; trimmed to it
        assert all(owners(w, row) == [task] for row in range(4))
        np.testing.assert_array_equal(x["padding_mask"].sum(axis=1), [LENGTH[task]] * 4)
        assert x["token_ids"].shape == (4, LENGTH[task])
        assert y["ner"].shape == (4, LENGTH[task]) and w["ner"].shape == (4, LENGTH[task])
    assert len(set(batch_owners)) >= 2


def test_unknown_granularity(tasks, pre):
    with pytest.raises(ValueError, match="granularity 'mixed'.*joint.*alternating"):
        mixture(tasks, make_examples(), pre, granularity="mixed")


def test_unknown_sampling(tasks, pre):
    with pytest.raises(ValueError, match="unknown sampling 'balanced'"):
        mixture(tasks, make_examples(), pre, sampling="balanced")


# --------------------------------------------------------------------------- (e, f) proportions
@pytest.fixture(scope="module")
def two_tasks():
    return [Classification("a", labels=["x", "y"]), Classification("b", labels=["x", "y"])]


@pytest.fixture(scope="module")
def sized_examples():
    # "good" -> 3 tokens (task a), "bad film" -> 4 tokens (task b)
    return {
        "a": [Example(text="good", label="xy"[i % 2], where=f"a:{i}") for i in range(300)],
        "b": [Example(text="bad film", label="xy"[i % 2], where=f"b:{i}") for i in range(100)],
    }


def share_of_a(got):
    """Share of task a among all rows, checking each row against its length."""
    n_a = n = 0
    for x, _, w in got:
        lengths = x["padding_mask"].sum(axis=1)
        np.testing.assert_array_equal(w["a"] + w["b"], np.ones(len(lengths)))
        np.testing.assert_array_equal(w["a"] == 1, lengths == 3)
        n_a += int(w["a"].sum())
        n += len(lengths)
    return n_a / n


def tolerance(p, n):
    """3.5 binomial standard deviations of a share p estimated from n independent draws."""
    return 3.5 * math.sqrt(p * (1 - p) / n)


def test_proportional_share(two_tasks, sized_examples, pre):
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, steps_per_epoch=40, seed=7))
    assert len(got) == 40
    assert tolerance(0.75, 640) == pytest.approx(0.06, abs=0.001)
    assert abs(share_of_a(got) - 0.75) <= tolerance(0.75, 640)


def test_uniform_share(two_tasks, sized_examples, pre):
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, sampling="uniform",
                          steps_per_epoch=40, seed=7))
    assert abs(share_of_a(got) - 0.5) <= tolerance(0.5, 640)  # +-0.069


def test_annealed_share_moves_towards_uniform(two_tasks, sized_examples, pre):
    steps = 20
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, sampling="annealed",
                          epochs=3, steps_per_epoch=steps, seed=7))
    assert len(got) == 3 * steps
    shares = [share_of_a(got[e * steps:(e + 1) * steps]) for e in range(3)]
    expected_first = 0.75
    expected_last = 300 ** 0.2 / (300 ** 0.2 + 100 ** 0.2)  # alpha 0.2: 0.555
    n = steps * 16
    assert abs(shares[0] - expected_first) <= tolerance(expected_first, n)  # +-0.085
    assert abs(shares[2] - expected_last) <= tolerance(expected_last, n)  # +-0.097
    assert abs(shares[2] - 0.5) < abs(shares[0] - 0.5)


def test_alternating_proportional_share(two_tasks, sized_examples, pre):
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, granularity="alternating",
                          steps_per_epoch=120, seed=7))
    owned_by_a = [bool(w["a"].all()) for _, _, w in got]
    assert all(bool(w["a"].all()) or bool(w["b"].all()) for _, _, w in got)
    assert abs(np.mean(owned_by_a) - 0.75) <= tolerance(0.75, 120)  # batches are the draws: +-0.14


def test_a_tasks_batch_share_is_fixed_and_the_others_split_the_rest(two_tasks, sized_examples, pre):
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, steps_per_epoch=40, seed=7,
                          shares={"b": 0.6}))  # proportional would give b 0.25
    assert abs(share_of_a(got) - 0.4) <= tolerance(0.4, 640)
    np.testing.assert_allclose(with_shares([0.5, 0.3, 0.2], [None, 0.5, None]), [0.5 * 5 / 7, 0.5, 0.5 * 2 / 7])
    np.testing.assert_allclose(with_shares([0.9, 0.1], [0.2, 0.6]), [0.25, 0.75])  # all given: relative weights
    with pytest.raises(ValueError, match="add up to 1: leave room"):
        with_shares([0.5, 0.3, 0.2], [0.5, 0.5, None])


def test_alternating_batches_of_a_tasks_own_size(two_tasks, sized_examples, pre):
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, granularity="alternating",
                          batch_sizes={"b": 4}, seed=7))
    sizes = {(bool(w["a"].all()), len(w["a"])) for _, _, w in got}
    assert sizes == {(True, 16), (False, 4)}
    # the sampler counts tasks in batches (300/16 vs 100/4): each example about once an epoch
    assert len(got) == default_steps_per_epoch([300, 100], 16, [None, 4]) == math.ceil(300 / 16 + 100 / 4)
    owned_by_a = np.mean([bool(w["a"].all()) for _, _, w in got])
    expected = (300 / 16) / (300 / 16 + 100 / 4)
    assert abs(owned_by_a - expected) <= tolerance(expected, len(got))
    with pytest.raises(ValueError, match="need granularity='alternating'"):
        mixture(two_tasks, sized_examples, pre, batch_sizes={"b": 4})


# --------------------------------------------------------------------------- (g) cardinality
def test_cardinality(joint_ds, joint, alternating_ds):
    assert int(joint_ds.cardinality()) == 2 * 6 == len(joint)
    assert int(alternating_ds.cardinality()) == 3 * 5
    assert len(batches(alternating_ds)) == 15


def test_default_epoch_length(tasks, pre):
    examples = make_examples(20, 0, 13)  # 33 examples: ceil(33 / 8) = 5 batches per epoch
    ds = mixture(tasks, {"sent": examples["sent"], "sim": examples["sim"]}, pre, batch_size=8, epochs=2)
    assert int(ds.cardinality()) == 10


# --------------------------------------------------------------------------- (h) task names
def test_unknown_task_in_examples(tasks, pre):
    examples = make_examples()
    examples["topic"] = examples.pop("sim")
    with pytest.raises(ValueError, match=r"unknown tasks \['topic'\]"):
        mixture(tasks, examples, pre)


def test_task_without_examples_is_skipped(tasks, pre):
    examples = make_examples()
    examples["ner"] = []
    del examples["sim"]
    got = batches(mixture(tasks, examples, pre, batch_size=4, steps_per_epoch=5, seed=0))
    assert len(got) == 5
    for x, y, w in got:
        assert sorted(y) == ["ner", "sent", "sim"]  # still the full dicts
        assert (w["sent"] == 1).all()
        assert not w["ner"].any() and not w["sim"].any()
        assert x["token_ids"].shape == (4, 3)


def test_single_task(tasks, pre):
    got = batches(mixture(tasks, {"sim": make_examples()["sim"]}, pre, batch_size=4, steps_per_epoch=3, seed=0))
    assert len(got) == 3
    for x, y, w in got:
        assert (w["sim"] == 1).all() and x["token_ids"].shape == (4, 5)
        assert sorted(set(y["sim"][:, 0].tolist())) <= [1.0, 4.5]


def test_bad_label_fails_when_building(tasks, pre):
    examples = make_examples()
    examples["sent"] = examples["sent"][:3] + [Example(text="good", label="meh", where="train/sent.tsv:9")]
    with pytest.raises(DataError, match="train/sent.tsv:9"):
        mixture(tasks, examples, pre)


# --------------------------------------------------------------------------- validation
def test_validation_dataset_every_example_once(tasks, pre, tiny):
    # every dev example is unique: a digit marks it (digits are single pieces)
    digit = {str(i): int(tiny.tokenizer.token_to_id(str(i))) for i in range(10)}
    dev = {
        "sent": [Example(text=str(i), label="pos", where=f"dev/sent.tsv:{i}") for i in range(10)],
        "ner": [Example(tokens=("new", "york", "film", str(i)), label=("B-LOC", "I-LOC", "O", "O"),
                        where=f"dev/ner.conll:{i}") for i in range(6)],
        "sim": [Example(text="bad", text_pair=str(i), label=str(i), where=f"dev/sim.tsv:{i}") for i in range(5)],
    }
    got = batches(validation_dataset(tasks, dev, pre, batch_size=4))
    assert sum(len(x["token_ids"]) for x, _, _ in got) == 21
    seen = {"sent": [], "ner": [], "sim": []}
    words = 0
    for x, y, w in got:
        assert x["token_ids"].shape[1] == int(x["padding_mask"].sum(axis=1).max())  # trimmed
        assert y["ner"].shape[1] == w["ner"].shape[1] == x["token_ids"].shape[1]
        for row in range(len(x["token_ids"])):
            own = owners(w, row)
            assert len(own) == 1
            task = own[0]
            tok = x["token_ids"][row]
            assert int(x["padding_mask"][row].sum()) == LENGTH[task]
            if task == "sent":
                seen["sent"].append(tok[1])
                assert w["sent"][row] == 1 and y["sent"][row] == 1
            elif task == "sim":
                seen["sim"].append(tok[3])
                assert w["sim"][row] == 1
                assert y["sim"][row, 0] == float([d for d, i in digit.items() if i == tok[3]][0])
            else:
                seen["ner"].append(tok[4])
                words += int(w["ner"][row].sum())
                np.testing.assert_array_equal(y["ner"][row, 1:5], [3, 4, 0, 0])
    assert sorted(seen["sent"]) == sorted(digit[str(i)] for i in range(10))
    assert sorted(seen["ner"]) == sorted(digit[str(i)] for i in range(6))
    assert sorted(seen["sim"]) == sorted(digit[str(i)] for i in range(5))
    assert words == 6 * 4


def test_validation_dataset_in_order_and_skips_empty(tasks, pre, ids):
    dev = make_examples(5, 0, 0, prefix="dev")
    dev["ner"] = []
    got = batches(validation_dataset(tasks, {"sent": dev["sent"], "ner": []}, pre, batch_size=2))
    assert len(got) == 3
    first_tokens = np.concatenate([x["token_ids"][:, 1] for x, _, _ in got])
    labels = np.concatenate([y["sent"] for _, y, _ in got])
    good, bad = ids["good"], ids["bad"]
    np.testing.assert_array_equal(first_tokens, [good, bad, good, bad, good])
    np.testing.assert_array_equal(labels, [1, 0, 1, 0, 1])
    for _, _, w in got:
        assert not w["ner"].any() and not w["sim"].any()


# --------------------------------------------------------------------------- (i) a fixed stream (exact resume)
def fixed_stream(tasks, pre, **kwargs):
    return mixture(tasks, make_examples(), pre, batch_size=8, epochs=3, steps_per_epoch=4, seed=5,
                   reshuffle_each_iteration=False, **kwargs)


@pytest.mark.parametrize("options", [{}, {"granularity": "alternating"},
                                     {"length_buckets": [4, 8], "group_by_length": True}])
def test_fixed_stream_is_the_same_for_every_iterator_and_rebuild(tasks, pre, options):
    """reshuffle_each_iteration=False: batch i depends on (seed, i) only, so a rebuilt pipeline
    skipped by k batches continues exactly where the first one was after k batches."""
    ds = fixed_stream(tasks, pre, **options)
    first = batches(ds)
    assert len(first) == 12
    assert _same(first, batches(ds))  # a second iterator: the same stream, not a reshuffle
    rebuilt = fixed_stream(tasks, pre, **options)
    assert _same(first[7:], batches(rebuilt.skip(7)))  # what a resumed run reads from step 7 on
    orders = [[tuple(owners(w, r)) for _, _, w in first[e * 4:(e + 1) * 4] for r in range(len(w["sent"]))]
              for e in range(3)]
    assert orders[0] != orders[1] != orders[2]  # epochs still differ inside the stream


def test_fixed_stream_reshuffles_each_pass_over_a_task(tasks, pre, ids):
    """Each pass over a task's examples is a new permutation of all of them."""
    examples = {"sent": [Example(text=w, label="pos", where=f"s:{i}") for i, w in
                         enumerate(["good", "bad", "great", "new", "john"])]}
    got = batches(mixture(tasks, examples, pre, batch_size=5, epochs=1, steps_per_epoch=4, seed=2,
                          reshuffle_each_iteration=False))
    passes = [tuple(x["token_ids"][:, 1]) for x, _, _ in got]  # batch = pass: 5 examples
    assert all(sorted(p) == sorted(ids.values()) for p in passes)
    assert len(set(passes)) > 1


def test_fixed_stream_keeps_the_sampling_rates(two_tasks, sized_examples, pre):
    got = batches(mixture(two_tasks, sized_examples, pre, batch_size=16, steps_per_epoch=40, seed=7,
                          reshuffle_each_iteration=False))
    assert abs(share_of_a(got) - 0.75) <= tolerance(0.75, 640)
