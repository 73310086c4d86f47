"""Pieces of the config-driven trainer: early stopping, weighting from the config, task building."""

import textwrap

import pytest

from kmtl.config import load_config
from kmtl.data import Example
from kmtl.training import trainer


def _config(tmp_path, extra):
    train = tmp_path / "t.tsv"
    train.write_text("sentence\tlabel\na\tpos\nb\tneg\n", encoding="utf-8")
    text = f"""
    backbone: tiny
    tasks:
      - name: sentiment
        kind: classification
        weight: 0.5
        train: {{format: tsv, path: {train}}}
      - name: other
        kind: classification
        train: {{format: tsv, path: {train}}}
    """
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.dedent(extra), encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize("monitor,has_dev,expected", [
    ("sentiment_accuracy", True, "val_sentiment_accuracy"),
    ("sentiment_loss", True, "val_sentiment_loss"),
    ("loss", False, "loss"),
    ("sentiment_macro_f1", True, "val_sentiment_macro_f1"),
])  # a monitor the run will not log is refused when the config loads: tests/test_validation_edges.py
def test_early_stopping_monitor_and_direction(tmp_path, monitor, has_dev, expected):
    config = _config(tmp_path, f"training: {{early_stopping: {{monitor: {monitor}, patience: 1}}}}\n")
    stopper = trainer._early_stopping(config, has_dev)
    assert stopper.monitor == expected
    assert stopper.mode == "auto"  # kmtl's metrics carry their direction (tests/test_metrics.py)


def test_no_early_stopping_unless_asked(tmp_path):
    assert trainer._early_stopping(_config(tmp_path, ""), True) is None


def test_weighting_from_config_merges_task_weights(tmp_path):
    static = trainer.weighting_callback(_config(tmp_path, "weighting: {strategy: static, weights: {other: 2.0}}\n"))
    assert static.weights == {"sentiment": 0.5, "other": 2.0}
    linear = trainer.weighting_callback(
        _config(tmp_path, "training: {epochs: 3}\nweighting: {strategy: linear, end: {other: 0.0}}\n"))
    assert linear.weights_for_epoch(0, None) == {"sentiment": 0.5, "other": 1.0}
    assert linear.weights_for_epoch(2, None) == {"sentiment": 0.5, "other": 0.0}


def test_make_tasks_infers_labels_from_train(tmp_path):
    config = _config(tmp_path, "")
    train = {"sentiment": [Example(text="a", label="pos"), Example(text="b", label="neg")],
             "other": [Example(text="c", label="x")]}
    tasks = trainer.make_tasks(config, train)
    assert [t.labels for t in tasks] == [["neg", "pos"], ["x"]]


def test_each_task_head_gets_its_own_learning_rate_on_all_its_layers(tmp_path):
    """``tasks[i].head_learning_rate`` over ``training.head_learning_rate`` over ``learning_rate``,
    on every layer of the head (a relation head's hidden dense too, not only its output layer)."""
    import kmtl
    from kmtl.backbone import tiny_encoder
    from kmtl.tasks import Classification, Relation

    config = _config(tmp_path, "training: {learning_rate: 1.0e-4, head_learning_rate: 1.0e-3}\n")
    sections = [config.tasks[0].model_copy(update={"head_learning_rate": 2.0e-4}),
                config.tasks[1].model_copy(update={"name": "rel", "kind": "relation"})]
    config = config.model_copy(update={"tasks": tuple(sections)})
    model = kmtl.build_model(tiny_encoder(seed=0), [Classification("sentiment", ["neg", "pos"]),
                                                    Relation("rel", ["Other", "x"])], max_length=16)
    assert trainer.head_rate_multipliers(config, model) == pytest.approx(
        {"sentiment": 2.0, "rel": 10.0, "rel_hidden": 10.0})
    from kmtl.config.load import config_from_dict
    from kmtl.errors import ConfigError

    task = {"name": "a", "kind": "classification", "head_learning_rate": 0, "train": {"format": "tsv", "path": "t.tsv"}}
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.head_learning_rate: Input should be greater than 0"):
        config_from_dict({"tasks": [task]}, tmp_path)
