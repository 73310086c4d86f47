"""The optimizer: warm-up/decay schedule and a separate peak rate for the task heads."""

import numpy as np
import pytest

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example
from kmtl.training.optimizer import LayerRateAdamW, WarmupLinearDecay, make_optimizer


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
