"""The multi-task loss and metrics: per-task figures over owned examples, weights as variables."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example


@pytest.fixture
def tiny():
    """A fresh tiny encoder per test: these tests train it (the session-wide one must stay intact)."""
    return tiny_encoder(seed=0)


def _tasks():
    return [
        kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
        kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0),
        kmtl.tasks.PairRegression("sim", dropout=0.0),
    ]


def _examples():
    rng = np.random.default_rng(0)
    words = "the a good bad film john paris new york story acting plot".split()
    sent = [Example(text=" ".join(rng.choice(words, 3 + i % 5)), label=["neg", "pos"][i % 2], where=f"s:{i}")
            for i in range(36)]
    ner = [Example(tokens=tuple(rng.choice(words, 2 + i % 6)), label=None, where=f"n:{i}") for i in range(20)]
    ner = [Example(tokens=e.tokens, label=tuple("B-PER" if t == "john" else "O" for t in e.tokens), where=e.where)
           for e in ner]
    sim = [Example(text=" ".join(rng.choice(words, 4)), text_pair="a story", label=float(i % 5), where=f"r:{i}")
           for i in range(24)]
    return {"sent": sent, "ner": ner, "sim": sim}


def _fixed_batches(tasks, pre):
    ds = kmtl.data.mixture(tasks, _examples(), pre, batch_size=8, sampling="uniform", seed=3)
    batches = list(ds)

    def gen():
        yield from batches

    signature = tf.nest.map_structure(lambda t: tf.TensorSpec([None] * t.shape.rank, t.dtype), batches[0])
    return batches, tf.data.Dataset.from_generator(gen, output_signature=signature)


def _hand_figures(model, tasks, batches):
    """Per-task mean loss and accuracy over owned examples, computed with NumPy."""
    sums = {t.name: [0.0, 0.0, 0.0] for t in tasks}  # loss*w, w, correct*w
    batch_means = {t.name: [] for t in tasks}
    for x, y, w in batches:
        out = model(x, training=False)
        for t in tasks:
            yt, yp, wt = np.asarray(y[t.name]), np.asarray(out[t.name], np.float64), np.asarray(w[t.name])
            if t.kind == "pair_regression":
                per = (yp[:, 0] - yt[:, 0]) ** 2
                correct = np.zeros_like(per)
            else:
                logp = yp - np.log(np.exp(yp).sum(-1, keepdims=True))
                per = -np.take_along_axis(logp, yt[..., None].astype(int), -1)[..., 0]
                correct = (yp.argmax(-1) == yt).astype(float)
            sums[t.name][0] += (per * wt).sum()
            sums[t.name][1] += wt.sum()
            sums[t.name][2] += (correct * wt).sum()
            batch_means[t.name].append((per * wt).sum() / wt.sum() if wt.sum() else 0.0)
    return sums, batch_means


def test_logged_task_losses_are_means_over_owned_examples(tiny):
    tasks = _tasks()
    model = kmtl.build_model(tiny, tasks)
    pre = tiny.preprocessor(32)
    batches, ds = _fixed_batches(tasks, pre)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))  # weights stay fixed
    history = model.fit(ds, epochs=1, verbose=0).history
    sums, batch_means = _hand_figures(model, tasks, batches)
    for t in tasks:
        owned_mean = sums[t.name][0] / sums[t.name][1]
        assert history[f"{t.name}_loss"][0] == pytest.approx(owned_mean, rel=1e-4, abs=1e-5)
        # the diluted figure Keras would log (mean of per-batch means, zeros included) differs
        assert abs(np.mean(batch_means[t.name]) - owned_mean) > 1e-3
    for name in ("sent", "ner"):
        assert history[f"{name}_accuracy"][0] == pytest.approx(sums[name][2] / sums[name][1], abs=1e-5)
    assert history["sim_mse"][0] == pytest.approx(sums["sim"][0] / sums["sim"][1], rel=1e-4)
    # the total loss is the per-batch weighted sum of per-task means, averaged over batches
    totals = []
    for x, y, w in batches:
        totals.append(float(model.compute_loss(x, y, model(x, training=False), w)))
    assert history["loss"][0] == pytest.approx(np.mean(totals), rel=1e-4)


def test_evaluate_reports_the_same_per_task_figures(tiny):
    tasks = _tasks()
    model = kmtl.build_model(tiny, tasks)
    pre = tiny.preprocessor(32)
    val = kmtl.data.validation_dataset(tasks, _examples(), pre, batch_size=8)
    model.compile(optimizer="sgd")
    logs = model.evaluate(val, return_dict=True, verbose=0)
    sums, _ = _hand_figures(model, tasks, list(val))
    for t in tasks:
        assert logs[f"{t.name}_loss"] == pytest.approx(sums[t.name][0] / sums[t.name][1], rel=1e-4, abs=1e-5)


def _head_kernel(model, name):
    return np.array(model.get_layer(name).kernel)


def test_loss_weights_are_variables_that_change_training_without_recompiling(tiny):
    tasks = _tasks()
    model = kmtl.build_model(tiny, tasks)
    pre = tiny.preprocessor(32)
    _, ds = _fixed_batches(tasks, pre)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss_weights={"ner": 0.0})
    assert model.loss_weights_now == {"sent": 1.0, "ner": 0.0, "sim": 1.0}
    before = {n: _head_kernel(model, n) for n in ("sent", "ner")}
    model.fit(ds.take(2), epochs=1, verbose=0)
    assert np.array_equal(_head_kernel(model, "ner"), before["ner"])  # weight 0: no gradient
    assert not np.allclose(_head_kernel(model, "sent"), before["sent"])

    model.task_weights["ner"].assign(1.0)  # what a weighting callback does between steps
    model.fit(ds.take(2), epochs=1, verbose=0)
    assert not np.allclose(_head_kernel(model, "ner"), before["ner"])


def test_weighting_callback_assigns_and_logs_weights(tiny):
    tasks = _tasks()
    model = kmtl.build_model(tiny, tasks)
    _, ds = _fixed_batches(tasks, tiny.preprocessor(32))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    schedule = kmtl.callbacks.LinearWeighting(start={"ner": 1.0}, end={"ner": 0.0}, epochs=3)
    history = model.fit(ds.take(1), epochs=3, verbose=0, callbacks=[schedule]).history
    assert history["loss_weight_ner"] == pytest.approx([1.0, 0.5, 0.0])
    assert history["loss_weight_sent"] == pytest.approx([1.0, 1.0, 1.0])


def test_compile_rejects_unknown_task_weights_and_explicit_loss(tiny):
    model = kmtl.build_model(tiny, _tasks())
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        model.compile(loss_weights={"nope": 1.0})
    with pytest.raises(ValueError, match="do not pass `loss`"):
        model.compile(loss="mse")


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_sharing_modes_change_what_trains():
    from kmtl.backbone import tiny_encoder

    heads = None
    counts = {}
    for mode in ("full", "frozen", "lora"):
        model = kmtl.build_model(tiny_encoder(seed=1), _tasks(), sharing=mode, lora_rank=2)
        counts[mode] = _trainable(model)
        if mode == "frozen":
            heads = sum(_trainable_layer(model.get_layer(t.name)) for t in model.tasks)
    assert counts["frozen"] == heads  # only the heads train
    assert heads < counts["lora"] < counts["full"]


def _trainable_layer(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_build_model_validates_arguments(tiny):
    with pytest.raises(ValueError, match="unknown pooling"):
        kmtl.build_model(tiny, _tasks(), pooling="max")
    with pytest.raises(ValueError, match="unique names"):
        kmtl.build_model(tiny, [kmtl.tasks.Regression("a"), kmtl.tasks.Regression("a")])
