"""What every task shares (`kmtl.sharing.counts.shared_variables`): the set PCGrad projects and
GradNorm measures on. It is declared by the layers (heads, ``task_specific`` sharing layers);
here it is checked against what the gradients say, for every sharing mode: a variable is
shared exactly when every task's loss reaches a common element of it
(`kmtl.training.affinity.shared_indices`, the data-driven rule).

Cheap by design: tiny backbone, one probe batch of 4 examples per task, eager gradients.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data.example import Example
from kmtl.sharing.counts import shared_variables, task_specific_variables
from kmtl.training.affinity import probe_batches, shared_indices
from kmtl.weighting import PCGrad
from kmtl.weighting.gradnorm import last_shared_kernel

MODES = {
    "full": {},
    "lora": {},
    "adapters": {},
    "soft": {"soft_top_layers": 1, "task_relation": "learned"},
    "scalar_mix": {},
    "mmoe": {"mmoe_experts": 2},
    "prefix": {"prefix_length": 2, "prefix_hidden": 8, "prefix_train_layer_norms": True},
    "progressive": {"column_size": 4},
}
RELATIONS = [("the <e1>fire</e1> caused the <e2>smoke</e2>", "Cause-Effect(e1,e2)"),
             ("a <e1>cat</e1> saw a <e2>dog</e2>", "Other")]


def _tasks():
    rel = kmtl.tasks.Relation("rel", ["Other", "Cause-Effect(e1,e2)"])  # a head with a hidden layer
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0), rel]


def _examples():
    return {"sent": [Example(text=t, label=l) for t, l in [("a good film", "pos"), ("a bad film", "neg")] * 2],
            "ner": [Example(tokens=("john", "saw", "paris"), label=("B-PER", "O", "O"))] * 4,
            "rel": [Example(text=t, label=l) for t, l in RELATIONS * 2]}


def _task_gradients(model, probe, variables):
    """Each task's gradient on ``variables`` from its own probe batch (``None``: not reached)."""
    gradients = []
    for task in model.tasks:
        x, y, w = probe[task.name]
        with tf.GradientTape() as tape:
            pred = model(x, training=False)[task.name]
            per = tf.cast(task.per_example_loss(task.conform_label(y[task.name], pred), pred), tf.float32)
            loss = tf.reduce_sum(per * w[task.name]) / tf.reduce_sum(w[task.name])
        gradients.append(tape.gradient(loss, variables))
    return gradients


@pytest.mark.parametrize("mode", list(MODES))
def test_shared_variables_are_those_every_tasks_gradient_reaches(mode):
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=16, sharing=mode, **MODES[mode])
    probe = probe_batches(model.tasks, _examples(), model.preprocessor, size=4)
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    for v in variables:  # zero-initialised factors (LoRA's B, adapters' up) would hide the gradient behind them
        if not np.any(v.numpy()):
            v.assign(rng.normal(0, 0.02, v.shape).astype(v.dtype))
    reached = shared_indices(variables, _task_gradients(model, probe, variables))
    declared = {id(v) for v in shared_variables(model)}
    assert sorted(v.path for i, v in enumerate(variables) if i in reached) == \
        sorted(v.path for v in variables if id(v) in declared)
    if mode in ("full", "soft", "mmoe"):
        assert declared, "the encoder's shared layers are trainable in this mode"
    head = [v.path for v in model.get_layer("rel_hidden").weights]
    assert head and not {v.path for v in shared_variables(model)} & set(head)


def test_pcgrad_keeps_the_regularisers_gradient_on_shared_layers():
    """A batch of one task: no other task's gradient to conflict with, so PCGrad's step must
    equal the plain step — including the task-relation regulariser's pull on the shared encoder
    (it is no task's loss; PCGrad once dropped its gradient there)."""
    after = {}
    for name, callbacks in (("static", []), ("pcgrad", [PCGrad()])):
        model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=16, sharing="soft", soft_top_layers=1,
                                 task_relation="learned", relation_weight=10.0)
        rng = np.random.default_rng(0)
        for v in task_specific_variables(model):  # the copies start equal: no distance, no pull, until moved
            v.assign(v.numpy() + rng.normal(0, 0.1, v.shape).astype(v.dtype))
        batch = probe_batches(model.tasks, _examples(), model.preprocessor, size=4)["rel"]
        model.compile(optimizer=keras.optimizers.SGD(0.5), run_eagerly=True)
        before = [v.numpy().copy() for v in model.trainable_variables]
        model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, callbacks=callbacks, verbose=0)
        after[name] = [v.numpy() for v in model.trainable_variables]
        shared = {id(v) for v in shared_variables(model)}
        assert any(not np.allclose(a, b) for a, b, v in zip(after[name], before, model.trainable_variables)
                   if id(v) in shared)
    for a, b in zip(after["pcgrad"], after["static"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["adapters", "progressive"])
def test_gradnorm_and_pcgrad_where_no_matrix_is_shared(mode):
    """Modes that freeze the encoder share no trainable matrix (adapters train the shared
    LayerNorms, progressive nothing): GradNorm measures each task on its own slice of the mode's
    last per-task matrix; PCGrad with nothing shared says it is the plain sum, and fits."""
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks()[:2], max_length=16, sharing=mode, **MODES[mode])
    assert all(len(v.shape) == 1 for v in shared_variables(model))
    kernel = last_shared_kernel(model)
    assert len(kernel.shape) == 3 and kernel.shape[0] == 2
    assert any(kernel is v for v in task_specific_variables(model, heads=False))
    if mode == "progressive":
        assert shared_variables(model) == []
        probe = probe_batches(model.tasks, _examples(), model.preprocessor, size=4)
        model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
        with pytest.warns(UserWarning, match="no trainable parameter is shared by every task"):
            history = model.fit(tf.data.Dataset.from_tensors(probe["sent"]), callbacks=[PCGrad()], verbose=0).history
        assert history["pcgrad_conflicts"] == [0.0] and np.isfinite(history["loss"][0])
