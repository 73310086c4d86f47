"""The optimizer: warm-up/decay schedule and a separate peak rate for the task heads."""

import numpy as np
import pytest
from kernel_skip import kernel_or_skip

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.optimizer import LayerRateAdamW, WarmupLinearDecay, make_optimizer


def test_schedule_warms_up_then_decays_to_zero():
    schedule = WarmupLinearDecay(1e-3, total_steps=10, warmup_steps=4)
    rates = [float(schedule(step)) for step in range(11)]
    assert rates[0] == 0.0 and rates[2] == pytest.approx(5e-4) and rates[4] == pytest.approx(1e-3)
    assert rates[7] == pytest.approx(5e-4) and rates[10] == 0.0


def test_make_optimizer_uses_layer_rates_only_when_a_factor_differs_from_one():
    assert type(make_optimizer(1e-4, 10, rate_multipliers={"a": 1.0})).__name__ == "AdamW"
    optimizer = make_optimizer(1e-4, 10, rate_multipliers={"a": 20.0})
    assert isinstance(optimizer, LayerRateAdamW)
    assert LayerRateAdamW.from_config(optimizer.get_config()).rate_multipliers == {"a": 20.0}


def _step(rate_multipliers):
    """Head kernel and one encoder matrix before and after one training step."""
    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0)]
    encoder = tiny_encoder(seed=0)
    model = kmtl.build_model(encoder, tasks)
    examples = {"sent": [Example(text=t, label=l, where=f"s:{i}") for i, (t, l) in
                         enumerate([("a good film", "pos"), ("a bad plot", "neg")] * 4)]}
    ds = kmtl.data.mixture(tasks, examples, encoder.preprocessor(16), batch_size=8, sampling="uniform", seed=0)
    optimizer = LayerRateAdamW(rate_multipliers, learning_rate=1e-3, weight_decay=0.0)
    model.compile(optimizer=optimizer)
    head = model.get_layer("sent").kernel
    encoder = next(v for v in model.trainable_variables if not v.path.startswith("sent/") and len(v.shape) == 2)
    before = [np.array(head), np.array(encoder)]
    model.fit(ds.take(1), epochs=1, verbose=0)
    return [np.array(head) - before[0], np.array(encoder) - before[1]]


def test_head_rate_multiplier_scales_only_the_heads_update():
    plain_head, plain_encoder = _step({})
    fast_head, fast_encoder = _step({"sent": 10.0})
    # Adam's first step is lr * g / (|g| + eps): the head moves 10x as far, the encoder the same
    assert np.abs(plain_head).max() > 1e-4
    np.testing.assert_allclose(fast_head, 10.0 * plain_head, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(fast_encoder, plain_encoder, rtol=1e-5, atol=1e-9)


def test_head_learning_rate_in_the_config(tmp_path):
    from kmtl.config import config_from_dict
    from kmtl.errors import ConfigError

    base = {"name": "x", "backbone": "tiny", "tasks": [{"name": "a", "kind": "classification",
                                                          "train": {"format": "jsonl", "path": str(tmp_path / "t.jsonl")}}]}
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n')
    config = config_from_dict({**base, "training": {"learning_rate": 5e-5, "head_learning_rate": 1e-3}}, tmp_path)
    assert config.training.head_learning_rate == 1e-3
    with pytest.raises(ConfigError, match="training.head_learning_rate"):
        config_from_dict({**base, "training": {"head_learning_rate": 0}}, tmp_path)


# ------------------------------------------------- clipping the global norm (issue 11)
def test_clip_by_global_norm_scales_every_gradient_by_one_factor():
    import tensorflow as tf

    from kmtl.optimizer import clip_by_global_norm

    clipped = clip_by_global_norm([tf.constant([3.0]), None, tf.constant([[4.0]])], 1.0)  # norm 5
    assert clipped[1] is None
    np.testing.assert_allclose(clipped[0], [0.6], rtol=1e-6)
    np.testing.assert_allclose(clipped[2], [[0.8]], rtol=1e-6)
    small = clip_by_global_norm([tf.constant([0.3]), tf.constant([0.4])], 1.0)  # norm 0.5: unchanged
    np.testing.assert_allclose(np.concatenate(small), [0.3, 0.4], rtol=1e-6)
    # an embedding gradient with a repeated row: the norm of the summed row (6), not of 3 and 3
    rows = tf.IndexedSlices(tf.constant([[3.0], [3.0]]), tf.constant([0, 0]), tf.constant([2, 1]))
    np.testing.assert_allclose(clip_by_global_norm([rows], 2.0)[0], [[2.0], [0.0]], rtol=1e-6)
    assert np.isnan(clip_by_global_norm([tf.constant([np.inf]), tf.constant([1.0])], 1.0)[1]).all()


@pytest.mark.parametrize("clip_norm", [0.5, 100.0])  # binding and not
def test_clip_by_global_norm_on_merged_rows_equals_the_dense_table(clip_norm):
    """An embedding gradient clipped on its rows (each once, then scattered: the default) gives the
    dense table's figures, repeated, unsorted rows included."""
    import tensorflow as tf

    from kmtl.optimizer import clip_by_global_norm

    rng = np.random.default_rng(0)
    rows = tf.IndexedSlices(tf.constant(rng.normal(size=(7, 3)), tf.float32), tf.constant([5, 1, 5, 9, 0, 1, 5]),
                            tf.constant([12, 3]))
    other = tf.constant(rng.normal(size=(2, 2)), tf.float32)
    merged = clip_by_global_norm([rows, other], clip_norm)
    dense = clip_by_global_norm([rows, other], clip_norm, merge_rows=False)
    assert not isinstance(merged[0], tf.IndexedSlices) and merged[0].shape == (12, 3)
    for a, b in zip(merged, dense):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.abs(np.asarray(merged[0])).sum(1) > 0, np.isin(np.arange(12), [0, 1, 5, 9]))
    by_tf, _ = tf.clip_by_global_norm([tf.convert_to_tensor(rows), other], clip_norm)
    np.testing.assert_allclose(merged[0], by_tf[0], rtol=1e-6, atol=1e-7)


def _adam_steps(optimizer, gradients, scale=1.0):
    """Two variables after ``optimizer`` applied each list of ``gradients`` (times ``scale``)."""
    import keras

    variables = [keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones((2, 2), "float32"))]
    for grads in gradients:
        optimizer.apply([np.asarray(g, "float32") * scale for g in grads], variables)
    return [np.array(v) for v in variables]


# step 1: global norm 13 (clipped to 1); step 2: norm 0.5 (not clipped)
STEPS = [[[3.0, 0.0, 4.0], [[12.0, 0.0], [0.0, 0.0]]], [[0.3, 0.0, 0.0], [[0.0, 0.4], [0.0, 0.0]]]]


def test_global_clipnorm_clips_once_by_the_norm_of_all_gradients():
    import keras

    from kmtl.optimizer import AdamW, clip_by_global_norm

    ours = _adam_steps(AdamW(learning_rate=0.1, global_clipnorm=1.0), STEPS)
    by_hand = [[np.asarray(g) for g in clip_by_global_norm([np.asarray(g, "float32") for g in step], 1.0)]
               for step in STEPS]
    expected = _adam_steps(keras.optimizers.AdamW(learning_rate=0.1), by_hand)
    unclipped = _adam_steps(keras.optimizers.AdamW(learning_rate=0.1), STEPS)
    for a, b, _ in zip(ours, expected, unclipped):
        np.testing.assert_allclose(a, b, rtol=1e-5)  # ours: the fused Adam kernel, rounded its own way
    # Adam's update depends on the ratio of the two steps' gradients: clipping step 1 shows
    assert max(np.abs(a - c).max() for a, c in zip(ours, unclipped)) > 1e-3


def test_loss_scaling_unscales_before_the_global_clip():
    import keras

    from kmtl.optimizer import AdamW

    plain = _adam_steps(AdamW(learning_rate=0.1, global_clipnorm=1.0), STEPS)
    scaled = keras.optimizers.LossScaleOptimizer(AdamW(learning_rate=0.1, global_clipnorm=1.0),
                                                 initial_scale=1024.0)
    # the gradients of a loss scaled by 1024; clipping before unscaling would clip step 2 too
    for a, b in zip(_adam_steps(scaled, STEPS, scale=1024.0), plain):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_make_optimizer_clips_the_global_norm_and_serializes():
    import keras

    from kmtl.optimizer import AdamW

    for multipliers in ({}, {"sent": 20.0}):
        optimizer = make_optimizer(1e-4, 10, clipnorm=0.5, rate_multipliers=multipliers)
        assert isinstance(optimizer, AdamW)
        assert optimizer.global_clipnorm == 0.5 and optimizer.clipnorm is None
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
        assert type(again) is type(optimizer) and again.global_clipnorm == 0.5
        assert again.get_config() == optimizer.get_config()  # schedule, rates, exclusions...
    assert make_optimizer(1e-4, 10, clipnorm=None).global_clipnorm is None


def test_mixed_float16_training_with_layer_rates_and_global_clipping():
    import keras

    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0)]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        encoder = tiny_encoder(seed=0)
        model = kmtl.build_model(encoder, tasks)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    examples = {"sent": [Example(text=t, label=l, where=f"s:{i}") for i, (t, l) in
                         enumerate([("a good film", "pos"), ("a bad plot", "neg")] * 4)]}
    ds = kmtl.data.mixture(tasks, examples, encoder.preprocessor(16), batch_size=8, sampling="uniform", seed=0)
    model.compile(optimizer=make_optimizer(1e-3, 4, warmup_ratio=0.0, clipnorm=0.1, rate_multipliers={"sent": 10.0}))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, LayerRateAdamW)
    before = [np.array(v) for v in model.trainable_variables]
    history = model.fit(ds.take(2), epochs=1, verbose=0)
    after = [np.array(v) for v in model.trainable_variables]
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(v).all() for v in after)
    assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 1e-4


def test_make_optimizer_given_the_model_trains_its_heads_at_the_default_head_rate():
    from kmtl import defaults

    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"]), kmtl.tasks.Tagging("ner", ["O", "B-X", "I-X"])]
    model = kmtl.build_model(tiny_encoder(seed=0), tasks)
    optimizer = make_optimizer(5e-5, 10, model=model)
    assert isinstance(optimizer, LayerRateAdamW)
    assert optimizer.rate_multipliers == pytest.approx({"sent": defaults.HEAD_LEARNING_RATE / 5e-5,
                                                        "ner": defaults.HEAD_LEARNING_RATE / 5e-5})
    own = make_optimizer(5e-5, 10, model=model, head_learning_rate=1e-4, rate_multipliers={"ner": 1.0})
    assert own.rate_multipliers == pytest.approx({"sent": 2.0, "ner": 1.0})
    assert type(make_optimizer(5e-5, 10)).__name__ == "AdamW"  # no model: one rate for everything
    with pytest.raises(ValueError, match="model=model"):
        make_optimizer(5e-5, 10, head_learning_rate=1e-3)


# ------------------------------------------------- the fused Adam update (issue 16)


def _trained_weights(fused: bool, rate_multipliers=None, adamw_kernel: bool = True, clipnorm: float = 0.5):
    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0), kmtl.tasks.Tagging("ner", ["O", "B-X"])]
    encoder = tiny_encoder(seed=0)
    model = kmtl.build_model(encoder, tasks)
    examples = {"sent": [Example(text=t, label=l, where=f"s:{i}") for i, (t, l) in
                         enumerate([("a good film", "pos"), ("a bad plot", "neg")] * 4)],
                "ner": [Example(tokens=("Paris", "is", "big"), label=("B-X", "O", "O"), where=f"n:{i}") for i in range(8)]}
    ds = kmtl.data.mixture(tasks, examples, encoder.preprocessor(16), batch_size=8, sampling="uniform", seed=0)
    optimizer = make_optimizer(1e-3, 4, warmup_ratio=0.25, clipnorm=clipnorm, rate_multipliers=rate_multipliers)
    optimizer.fused, optimizer.adamw_kernel = fused, adamw_kernel
    model.compile(optimizer=optimizer)
    model.fit(ds.take(4), epochs=1, verbose=0)
    return [np.array(v) for v in model.trainable_variables], [np.array(v) for v in optimizer.variables]


@pytest.mark.parametrize("rates", [None, {"sent": 10.0}])
@pytest.mark.parametrize("adamw_kernel", [True, False])
def test_fused_adam_update_is_keras_adamw(rates, adamw_kernel, monkeypatch):
    """One fused update per variable (kmtl's AdamW kernel, or TensorFlow's ResourceApplyAdam after the
    decay) gives Keras' AdamW to float rounding: weights, moments, decay and clipping included, with
    and without per-layer rates."""
    import tensorflow as tf

    from kmtl import kernels

    updated = []
    if adamw_kernel:
        kernel = kernel_or_skip("adamw")
        monkeypatch.setattr(kernels, "adamw", lambda: lambda *a: updated.append(a[0]) or kernel(*a))
    else:
        fused_op = tf.raw_ops.ResourceApplyAdam
        monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam", lambda **kw: updated.append(kw["var"]) or fused_op(**kw))
    fused, fused_state = _trained_weights(True, rates, adamw_kernel)
    assert len(updated) >= len(fused) - 1  # every variable (the token embedding's sparse gradient may not)
    monkeypatch.undo()
    plain, plain_state = _trained_weights(False, rates)
    moved = max(np.abs(a - b).max() for a, b in zip(plain, _initial_weights()))
    assert moved > 1e-3
    for a, b in zip(fused + fused_state, plain + plain_state):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_without_the_clip_an_embeddings_sparse_gradient_keeps_keras_update():
    """No global clip: the token embedding's `tf.IndexedSlices` gradient keeps Keras' own update (its
    moments move on the touched rows only), not the rows kernel's dense one; the rest is fused."""
    kernel_or_skip("adamw")
    fused, fused_state = _trained_weights(True, None, adamw_kernel=True, clipnorm=None)
    plain, plain_state = _trained_weights(False, None, clipnorm=None)
    for a, b in zip(fused + fused_state, plain + plain_state):  # (a dense update of the table: 1e-3 off, its slots 0.1)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rates", [None, {"sent": 10.0}])
def test_the_adamw_kernel_gives_tensorflows_figures_to_the_bit(rates):
    """kmtl's kernel (decay and Adam in one pass) against the TensorFlow ops it replaces (the decay's
    Mul + AssignSub, then ResourceApplyAdam): the same float operations in the same order."""
    kernel_or_skip("adamw")
    with_kernel, kernel_state = _trained_weights(True, rates, adamw_kernel=True)
    with_ops, ops_state = _trained_weights(True, rates, adamw_kernel=False)
    for a, b in zip(with_kernel + kernel_state, with_ops + ops_state):
        np.testing.assert_array_equal(a, b)


def test_the_adamw_kernel_applies_the_global_clip_to_tensorflows_figures_to_the_bit(monkeypatch):
    """With the kernel the global-norm clip's multiply is the kernel's (``g = grad * grad_scale``), the
    embeddings' merged rows included (``KmtlApplyAdamWRows``: no dense gradient), and a fit ends where
    the TensorFlow ops (the clip's Mul on every gradient, the rows scattered into a dense gradient,
    decay, ResourceApplyAdam) end, to the bit, with a clip that binds on every step and with one that
    never does."""
    import tensorflow as tf

    from kmtl import kernels
    from kmtl import optimizer as optimizer_module

    kernel_or_skip("adamw")
    rows_kernel = kernels.adamw_rows()
    scaled = optimizer_module._scaled
    scale_multiplies = {True: [], False: []}
    row_updates = []

    def counted_rows(*args):
        row_updates.append(args[-1])
        return rows_kernel(*args)

    finals = {}
    for clipnorm in (1e-3, 1e6):  # the gradient's global norm is far above 1e-3 and far below 1e6
        for adamw_kernel in (True, False):
            seen = scale_multiplies[adamw_kernel]
            monkeypatch.setattr(optimizer_module, "_scaled", lambda g, scale, seen=seen: seen.append(g) or scaled(g, scale))
            monkeypatch.setattr(kernels, "adamw_rows", lambda: counted_rows)
            finals[clipnorm, adamw_kernel] = _trained_weights(True, None, adamw_kernel=adamw_kernel, clipnorm=clipnorm)
            monkeypatch.undo()
        (with_kernel, kernel_state), (with_ops, ops_state) = finals[clipnorm, True], finals[clipnorm, False]
        for a, b in zip(with_kernel + kernel_state, with_ops + ops_state):
            np.testing.assert_array_equal(a, b)
    # the clip bound: Adam's steps of a gradient scaled down to a global norm of 1e-3 (elements
    # near epsilon) are far shorter than the unclipped ones
    binding, free = finals[1e-3, True][0], finals[1e6, True][0]
    assert max(np.abs(a - b).max() for a, b in zip(binding, free)) > 1e-4
    # with the kernels no gradient is multiplied by the clip before its update; without, every one,
    # the embeddings' rows (scattered into a dense gradient after) included
    assert not scale_multiplies[True] and row_updates
    assert sum(not isinstance(g, tf.IndexedSlices) for g in scale_multiplies[False]) >= len(binding) - 2
    assert any(isinstance(g, tf.IndexedSlices) for g in scale_multiplies[False])


def _clipped_apply_steps(adamw_kernel: bool, steps, monkeypatch, wrap=None, **options):
    """The variables (a vector, a matrix, an embedding table given sparse rows) after ``optimizer.apply``
    of each step's gradients, and the ``grad_scale`` of every kernel call."""
    import keras
    import tensorflow as tf

    from kmtl import kernels
    from kmtl.optimizer import AdamW

    scales = []
    if adamw_kernel:
        kernel, rows_kernel = kernel_or_skip("adamw"), kernels.adamw_rows()
        monkeypatch.setattr(kernels, "adamw", lambda: lambda *a: scales.append(float(a[-1])) or kernel(*a))
        monkeypatch.setattr(kernels, "adamw_rows", lambda: lambda *a: scales.append(float(a[-1])) or rows_kernel(*a))
    optimizer = AdamW(learning_rate=0.1, weight_decay=0.1, global_clipnorm=1.0, adamw_kernel=adamw_kernel, **options)
    if wrap is not None:
        optimizer = wrap(optimizer)
    variables = [keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones((2, 2), "float32")),
                 keras.Variable(np.ones((4, 2), "float32"))]
    for dense, rows in steps:
        table = tf.IndexedSlices(tf.constant(rows, tf.float32), tf.constant([2, 0]), tf.constant([4, 2]))
        optimizer.apply([tf.constant(g, tf.float32) for g in dense] + [table], variables)
    monkeypatch.undo()
    return [np.array(v) for v in variables], scales


# step 1: global norm 13 (clipped to 1); step 2: norm 0.5 (not clipped)
SPARSE_STEPS = [([[3.0, 0.0, 0.0], [[0.0, 0.0], [0.0, 4.0]]], [[12.0, 0.0], [0.0, 0.0]]),
                ([[0.3, 0.0, 0.0], [[0.0, 0.4], [0.0, 0.0]]], [[0.0, 0.0], [0.0, 0.0]])]


def test_the_kernel_takes_the_clips_scale_and_ends_where_the_ops_end(monkeypatch):
    """Eager steps, one clipped (norm 13), one not: the kernels get the clip's scale (1/13, then 1)
    with the dense gradients and with the embedding's rows (``KmtlApplyAdamWRows``); the variables are
    the TensorFlow ops' (the rows scaled, scattered into a dense gradient, then updated) to the bit."""
    with_kernel, scales = _clipped_apply_steps(True, SPARSE_STEPS, monkeypatch)
    with_ops, _ = _clipped_apply_steps(False, SPARSE_STEPS, monkeypatch)
    assert scales == pytest.approx([1 / 13] * 3 + [1.0] * 3, rel=1e-6)
    for a, b in zip(with_kernel, with_ops):
        np.testing.assert_array_equal(a, b)
    assert np.abs(with_kernel[2][[0, 2]] - 1.0).min() > 1e-3 and (with_kernel[2][[1, 3]] != 1.0).all()  # decayed


@pytest.mark.parametrize("options", [{"gradient_accumulation_steps": 2, "use_ema": True}, {"loss_scale": 1024.0}],
                         ids=["accumulation_ema", "loss_scale"])
def test_the_kernels_clip_with_accumulation_ema_and_loss_scaling(options, monkeypatch):
    """Gradient accumulation with EMA, and `keras.optimizers.LossScaleOptimizer` (which unscales before
    the clip): the kernel's clip gives the ops' figures to the bit."""
    import keras

    options = dict(options)
    factor = options.pop("loss_scale", None)
    wrap, steps = None, SPARSE_STEPS * 2
    if factor is not None:
        def wrap(optimizer):
            return keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=factor)

        steps = [([np.asarray(g) * factor for g in dense], np.asarray(rows) * factor) for dense, rows in steps]
    with_kernel, scales = _clipped_apply_steps(True, steps, monkeypatch, wrap, **options)
    with_ops, _ = _clipped_apply_steps(False, steps, monkeypatch, wrap, **options)
    assert scales and min(scales) < 0.5  # the kernel ran, given a clip that binds
    for a, b in zip(with_kernel, with_ops):
        np.testing.assert_array_equal(a, b)
    assert np.abs(with_kernel[0] - 1.0).max() > 1e-3


@pytest.mark.parametrize("adamw_kernel", [True, False])
def test_a_gradient_with_a_non_finite_norm_makes_every_update_nan(adamw_kernel, monkeypatch):
    steps = [([[np.inf, 0.0, 0.0], [[0.0, 0.0], [0.0, 1.0]]], [[1.0, 0.0], [0.0, 0.0]])]
    variables, _ = _clipped_apply_steps(adamw_kernel, steps, monkeypatch)
    assert np.isnan(variables[0]).all() and np.isnan(variables[1]).all()
    assert np.isnan(variables[2][[0, 2]]).all()  # the table's rows in the batch (the others only decay)


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_the_rows_kernel_is_the_dense_kernel_on_the_scattered_rows_to_the_bit(index_dtype):
    """``KmtlApplyAdamWRows`` on a table's rows (each index once) ends where ``KmtlApplyAdamW`` ends on
    the rows times the scale scattered into zeros, given a scale of 1: every row decays and moves with
    its moments, the untouched rows with a gradient of exactly 0 (also under a NaN scale); it says
    which index is wrong when one repeats or falls outside the table."""
    import tensorflow as tf

    from kmtl import kernels

    dense_kernel, rows_kernel = kernel_or_skip("adamw"), kernels.adamw_rows()
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(6, 3)).astype("float32") for _ in range(3)]  # var, m, v (v made positive)
    start[2] = np.abs(start[2])
    rows = tf.constant(rng.normal(size=(3, 3)).astype("float32"))
    indices = tf.constant([4, 0, 2], index_dtype)
    settings = [tf.constant(x, tf.float32) for x in (0.9 ** 3, 0.999 ** 3, 0.01, 0.9, 0.999, 1e-6, 1e-3)]
    for scale in (0.25, float("nan")):
        table = [tf.Variable(x) for x in start]
        dense = [tf.Variable(x) for x in start]
        for _ in range(2):
            rows_kernel(*(v.handle for v in table), *settings, rows, indices, tf.constant(scale))
            scattered = tf.scatter_nd(tf.reshape(tf.cast(indices, tf.int32), [-1, 1]), rows * scale, [6, 3])
            dense_kernel(*(v.handle for v in dense), *settings, scattered, tf.constant(1.0))
        for a, b in zip(table, dense):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        untouched = table[0].numpy()[[1, 3, 5]]
        assert np.isfinite(untouched).all() and not np.array_equal(untouched, start[0][[1, 3, 5]])
    table = [tf.Variable(x) for x in start]
    with pytest.raises(tf.errors.InvalidArgumentError, match="index 4 given twice; merge the rows first"):
        rows_kernel(*(v.handle for v in table), *settings, rows, tf.constant([4, 0, 4], index_dtype), tf.constant(1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="index 6 outside the table's 6 rows"):
        rows_kernel(*(v.handle for v in table), *settings, rows, tf.constant([6, 0, 1], index_dtype), tf.constant(1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rows must be \[len\(indices\)\]"):
        rows_kernel(*(v.handle for v in table), *settings, rows[:2], indices, tf.constant(1.0))


def test_variables_off_the_cpu_take_tensorflows_ops_and_keep_their_decay(monkeypatch):
    """The kernel is CPU-only: a variable on a GPU is updated by ResourceApplyAdam, decayed first (the
    kernel's optimizer skips `_apply_weight_decay`), and ends where the ops-only optimizer ends."""
    from kmtl import kernels
    from kmtl import optimizer as optimizer_module

    kernel = kernel_or_skip("adamw")
    calls = []
    monkeypatch.setattr(kernels, "adamw", lambda: lambda *a: calls.append(1) or kernel(*a))
    monkeypatch.setattr(optimizer_module, "on_cpu", lambda variable: False)
    off_cpu, off_cpu_state = _trained_weights(True, None, adamw_kernel=True)
    assert calls == []
    monkeypatch.undo()
    with_ops, ops_state = _trained_weights(True, None, adamw_kernel=False)
    for a, b in zip(off_cpu + off_cpu_state, with_ops + ops_state):
        np.testing.assert_array_equal(a, b)

    class OnGpu:
        device = "/job:localhost/replica:0/task:0/device:GPU:0"

    import tensorflow as tf

    assert not optimizer_module.on_cpu(OnGpu()) and optimizer_module.on_cpu(tf.Variable(1.0))


def test_without_a_compiler_the_kernel_is_skipped_with_one_warning(tmp_path, monkeypatch):
    from kmtl import kernels

    monkeypatch.setenv("KMTL_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-kmtl")
    kernels._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler 'no-such-compiler-kmtl'.*KMTL_KERNELS=0"):
            assert kernels.adamw() is None
        assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
        monkeypatch.setenv("KMTL_KERNELS", "0")
        kernels._load.cache_clear()
        assert kernels.adamw() is None  # turned off: no build, no warning
    finally:
        kernels._load.cache_clear()


def _initial_weights():
    tasks = [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0), kmtl.tasks.Tagging("ner", ["O", "B-X"])]
    return [np.array(v) for v in kmtl.build_model(tiny_encoder(seed=0), tasks).trainable_variables]


def test_fused_flag_round_trips():
    optimizer = make_optimizer(1e-4, 10)
    assert optimizer.fused is True and optimizer.adamw_kernel is True
    optimizer.fused, optimizer.adamw_kernel = False, False
    again = type(optimizer).from_config(optimizer.get_config())
    assert again.fused is False and again.adamw_kernel is False


@pytest.mark.parametrize("fused", [True, False])
def test_decoupled_weight_decay_is_one_multiply_of_lr_times_wd(fused):
    """The fused optimizer decays each variable in one pass (``var * (lr * wd)``); Keras' path
    (``var * wd * lr``) gives the same figures, biases and LayerNorm parameters stay."""
    import keras

    optimizer = make_optimizer(0.1, 10, warmup_ratio=0.0, weight_decay=0.5)
    optimizer.fused, optimizer.adamw_kernel = fused, False  # with the kernel the decay is in update_step
    kernel = keras.Variable(np.arange(1, 7, dtype="float32").reshape(2, 3), name="kernel")
    bias = keras.Variable(np.ones(3, "float32"), name="bias")
    optimizer.build([kernel, bias])
    optimizer._apply_weight_decay([kernel, bias])
    rate = float(optimizer.learning_rate) * 0.5  # the schedule's rate at step 0: the peak
    assert rate > 0.01
    np.testing.assert_allclose(np.array(kernel), np.arange(1, 7).reshape(2, 3) * (1 - rate), rtol=1e-6)
    np.testing.assert_array_equal(np.array(bias), np.ones(3))
