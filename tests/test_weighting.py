"""The weighting strategies: each one's rule against an independent computation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.model.multitask_model import TaskLoss
from kmtl.weighting import (
    STRATEGIES,
    DynamicWeightAverage,
    GradNorm,
    RandomLossWeighting,
    UncertaintyWeighting,
    get_weighting,
)
from kmtl.weighting.pcgrad import project_conflicting


def reference_pcgrad(grads, orders):
    """PCGrad as written in Yu et al. (2020), Algorithm 1, in NumPy."""
    out = []
    for i, g in enumerate(grads):
        g = g.copy()
        for j in orders[i]:
            if j == i:
                continue
            dot = g @ grads[j]
            if dot < 0:
                g = g - dot / (grads[j] @ grads[j]) * grads[j]
        out.append(g)
    conflicts = sum(grads[i] @ grads[j] < 0 for i in range(len(grads)) for j in range(i + 1, len(grads)))
    return np.sum(out, axis=0), conflicts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcgrad_projection_matches_the_papers_algorithm(seed):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(4, 7)).astype(np.float32)
    orders = np.stack([rng.permutation(4) for _ in range(4)]).astype(np.int32)
    summed, conflicts = project_conflicting(tf.constant(grads), tf.constant(orders))
    expected, expected_conflicts = reference_pcgrad(grads, orders)
    np.testing.assert_allclose(summed.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert int(conflicts) == expected_conflicts


def test_pcgrad_leaves_agreeing_gradients_alone_and_removes_the_conflict():
    grads = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)  # no conflict: plain sum
    summed, conflicts = project_conflicting(tf.constant(grads), tf.constant([[0, 1], [1, 0]], tf.int32))
    np.testing.assert_allclose(summed.numpy(), [1.5, 0.5])
    assert int(conflicts) == 0
    grads = np.array([[1.0, 0.0], [-1.0, 1.0]], np.float32)  # conflict: each loses the other's component
    summed, conflicts = project_conflicting(tf.constant(grads), tf.constant([[0, 1], [1, 0]], tf.int32))
    assert int(conflicts) == 1
    np.testing.assert_allclose(summed.numpy(), [0.5 + 0.0, 0.5 + 1.0], atol=1e-6)


# ------------------------------------------------------------------ training
def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0),
            kmtl.tasks.Regression("score", dropout=0.0)]


def _examples():
    words = "the a good bad film john paris story".split()
    rng = np.random.default_rng(0)
    sent = [Example(text=" ".join(rng.choice(words, 3)), label=["neg", "pos"][i % 2]) for i in range(24)]
    ner = []
    for i in range(24):
        toks = tuple(rng.choice(words, 2 + i % 4))
        ner.append(Example(tokens=toks, label=tuple("B-PER" if t == "john" else "O" for t in toks)))
    score = [Example(text=" ".join(rng.choice(words, 3)), label=float(i % 5)) for i in range(24)]
    return {"sent": sent, "ner": ner, "score": score}


@pytest.fixture(scope="module")
def setup():
    encoder = tiny_encoder(seed=0)
    pre = encoder.preprocessor(16)
    data = kmtl.data.mixture(_tasks(), _examples(), pre, batch_size=12, seed=1)
    return data


def _fit(data, callback, epochs=2, steps=2):
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[callback])
    return model, history.history


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n not in ("static", "linear")])
def test_each_strategy_trains_inside_fit_and_logs_its_weights(setup, name):
    model, history = _fit(setup, get_weighting(name))
    for task in ("sent", "ner", "score"):
        assert len(history[f"loss_weight_{task}"]) == 2
        assert all(math.isfinite(v) for v in history[f"{task}_loss"])
    assert model._fit_hook is None  # the step hook only lives during fit
    if name == "pcgrad":
        assert "pcgrad_conflicts" in history and 0.0 <= history["pcgrad_conflict_rate"][-1] <= 1.0
        # afterwards a plain fit is Keras's own step again
        assert "pcgrad_conflicts" not in model.fit(setup, epochs=1, steps_per_epoch=1, verbose=0).history
    if name == "gradnorm":
        assert all(history[f"gradnorm_{t}"][-1] > 0 for t in ("sent", "ner", "score"))
        assert abs(sum(model.loss_weights_now.values()) - 3.0) < 1e-4
    if name == "uncertainty":
        assert "log_variance_score" in history


def test_random_loss_weighting_is_reproducible_and_averages_one():
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    model.compile(optimizer=keras.optimizers.SGD(0.0))

    def draws(seed):
        cb = RandomLossWeighting(seed=seed)
        cb.set_model(model)
        out = []
        for step in range(3):
            model.optimizer.iterations.assign(step)
            cb.before_loss(model)
            out.append(model.loss_weights_now)
        cb.on_train_end()
        return out

    first, again, other = draws(3), draws(3), draws(4)
    assert first == again and first != other
    assert first[0] != first[1]  # a new draw each step
    for weights in first:
        assert sum(weights.values()) == pytest.approx(3.0, rel=1e-5)
        assert all(w > 0 for w in weights.values())


def _task_losses(values):
    return {name: TaskLoss(tf.constant(v, tf.float32), tf.constant(4.0)) for name, v in values.items()}


def test_uncertainty_update_is_a_gradient_step_on_kendalls_objective():
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    cb = UncertaintyWeighting(learning_rate=0.1, initial_log_variance=0.3)
    cb.set_model(model)
    losses = {"sent": 0.7, "ner": 2.0, "score": 5.0}
    s = tf.Variable([0.3, 0.3, 0.3])
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(0.5 * tf.exp(-s) * tf.constant(list(losses.values())) + 0.5 * s)
    expected = s - 0.1 * tape.gradient(objective, s)
    cb.before_loss(model)
    assert model.loss_weights_now["ner"] == pytest.approx(0.5 * math.exp(-0.3), rel=1e-6)
    cb.after_step(model, _task_losses(losses))
    np.testing.assert_allclose(cb.log_variances.numpy(), expected.numpy(), rtol=1e-6)
    cb.on_train_end()


def test_gradnorm_moves_weight_from_the_task_with_the_largest_gradient(setup):
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    cb = GradNorm(alpha=1.5, learning_rate=0.01)
    cb.set_model(model)
    x, y, w = next(iter(setup))
    with tf.GradientTape(persistent=True) as tape:
        losses = model.task_losses(y, model(x, training=True), w)
        weighted = {n: l.share for n, l in losses.items()}
        total = tf.add_n(list(weighted.values()))
    norms = {n: float(tf.norm(tape.gradient(l.share, cb.shared_kernel))) for n, l in losses.items()}
    cb.gradients(model, tape, total, losses, weighted, model.trainable_weights)
    after = model.loss_weights_now
    largest, smallest = max(norms, key=norms.get), min(norms, key=norms.get)
    # first step: all training rates are equal, so the target is the mean gradient norm
    assert after[largest] < 1.0 < after[smallest]
    assert sum(after.values()) == pytest.approx(3.0, rel=1e-5)
    cb.on_train_end()


def test_gradnorm_needs_a_trainable_shared_layer():
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), sharing="frozen")
    with pytest.raises(ValueError, match="frozen"):
        GradNorm().set_model(model)


def test_dwa_weights_follow_the_loss_ratios_of_the_last_two_periods():
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks())
    cb = DynamicWeightAverage(temperature=2.0)
    cb.set_model(model)
    cb.on_train_begin()
    assert cb.weights_for_epoch(0, None) == {"sent": 1.0, "ner": 1.0, "score": 1.0}
    cb.weights_for_epoch(1, {"sent_loss": 1.0, "ner_loss": 2.0, "score_loss": 4.0})
    weights = cb.weights_for_epoch(2, {"sent_loss": 0.5, "ner_loss": 2.0, "score_loss": 3.0})
    ratios = np.array([0.5, 1.0, 0.75])
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    np.testing.assert_allclose([weights[t] for t in ("sent", "ner", "score")], expected, rtol=1e-6)


def test_dwa_with_step_windows_changes_weights_within_an_epoch(setup):
    _, history = _fit(setup, DynamicWeightAverage(window_steps=1), epochs=1, steps=4)
    assert any(abs(history[f"loss_weight_{t}"][0] - 1.0) > 1e-4 for t in ("sent", "ner", "score"))
    assert sum(history[f"loss_weight_{t}"][0] for t in ("sent", "ner", "score")) == pytest.approx(3.0, rel=1e-5)


@pytest.mark.parametrize("name, options, message", [
    ("gradnorm", {"alpha": -1}, "alpha"),
    ("dwa", {"temperature": 0}, "temperature"),
    ("uncertainty", {"learning_rate": 0}, "learning_rate"),
    ("pcgrad", {"alpha": 1.0}, "its options are: seed"),
    ("nope", {}, "choose one of: static, linear, dwa, uncertainty, gradnorm, pcgrad, rlw"),
])
def test_bad_strategy_or_options_name_the_valid_choices(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_weighting(name, **options)
