"""Per-task early stopping (issue 17, item 4): a task whose own figure stops improving is frozen
and leaves the training mixture while the others go on; a rerun after a crash stops it at the
same epoch and ends with the uninterrupted run's weights."""

import json
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from kmtl.demo import DEMO_CONFIG

CORPUS = DEMO_CONFIG.parent / "corpus"


# --------------------------------------------------------------------------- config
def _task(extra=""):
    return textwrap.dedent(f"""
    name: t
    backbone: tiny
    tasks:
      - name: sentiment
        kind: classification
        train: {{format: tsv, path: {CORPUS}/sentiment/train.tsv, text: sentence, label: label}}
        {extra}
      - name: entities
        kind: tagging
        train: {{format: conll, path: {CORPUS}/entities/train.conll}}
        early_stopping: {{patience: 3}}
    """)


def test_config_defaults_the_monitor_to_the_kinds_main_figure(tmp_path):
    from kmtl.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(_task("early_stopping: {monitor: val_sentiment_macro_f1, min_delta: 0.01}"))
    config = load_config(path)
    first, second = config.tasks
    assert (first.early_stopping.monitor, first.early_stopping.min_delta) == ("macro_f1", 0.01)  # prefixes dropped
    assert (second.early_stopping.monitor, second.early_stopping.patience) == ("entity_f1", 3)


def test_a_monitor_the_task_does_not_log_is_an_error_at_its_key(tmp_path):
    from kmtl.config import load_config
    from kmtl.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(_task("early_stopping: {monitor: entity_f1}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "tasks[0].early_stopping.monitor: 'entity_f1' is not a figure a classification task logs" in str(err.value)
    assert "loss, accuracy, macro_f1" in str(err.value)


# --------------------------------------------------------------------------- mixture
def test_a_stopped_task_draws_nothing_from_its_epoch_and_the_epochs_before_are_unchanged(tiny):
    from kmtl.data import mixture
    from kmtl.data.example import Example
    from kmtl.tasks import Classification

    tasks = [Classification("a", labels=["x", "y"]), Classification("b", labels=["x", "y"])]
    examples = {name: [Example(text=f"good {i}", label="xy"[i % 2], where=f"{name}:{i}") for i in range(24)]
                for name in ("a", "b")}
    pre = tiny.preprocessor(16)

    def owners(stopped):
        ds = mixture(tasks, examples, pre, batch_size=8, epochs=3, steps_per_epoch=4, seed=1,
                     reshuffle_each_iteration=False, stopped=stopped)
        return [x["task_id"].tolist() for x, _, _ in ds.as_numpy_iterator()]

    full, without = owners(None), owners({"a": 1})
    assert without[:4] == full[:4]  # epoch 1: the same batches
    assert all(i == 1 for batch in without[4:] for i in batch) and len(without) == 12  # then b fills every batch
    assert any(i == 0 for batch in full[4:] for i in batch)  # not vacuous
    with pytest.raises(ValueError, match="every task has stopped by epoch 2"):
        mixture(tasks, examples, pre, epochs=3, steps_per_epoch=4, stopped={"a": 1, "b": 2})


# --------------------------------------------------------------------------- the callback
def test_the_callback_stops_a_task_that_ran_out_of_patience_and_keeps_its_count():
    from kmtl.training.early_stopping import TaskEarlyStopping

    lines = []
    stopper = TaskEarlyStopping({"a": {"monitor": "val_a_accuracy", "patience": 1, "mode": "max"},
                                 "b": {"monitor": "val_b_loss", "patience": 2}}, echo=lines.append)
    model = SimpleNamespace(metrics=[], stop_training=False)
    stopper.set_model(model)
    stopper.set_params({"epochs": 5})
    stopper.on_epoch_end(0, {"val_a_accuracy": 0.6, "val_b_loss": 1.0})
    stopper.on_epoch_end(1, {"val_a_accuracy": 0.6, "val_b_loss": 0.9})  # a: no better
    assert stopper.stopped == {"a": 2} and model.stop_training  # the fit ends; from epoch 3 without a
    assert "task 'a': val_a_accuracy has not improved for 1 epoch(s) (best 0.6000 after epoch 1)" in lines[0]
    saved = json.loads(json.dumps(stopper.get_state()))
    again = TaskEarlyStopping(stopper.rules, echo=lines.append)
    again.set_state(saved)
    again.set_model(SimpleNamespace(metrics=[], stop_training=False))
    again.set_params({"epochs": 5})
    again.on_epoch_end(2, {"val_b_loss": 0.95})
    again.on_epoch_end(3, {"val_b_loss": 0.95})  # b: two epochs without a better loss
    assert again.stopped == {"a": 2, "b": 4} and again.all_stopped and again.model.stop_training


# --------------------------------------------------------------------------- end to end
EPOCHS = 3


def _config(tmp_path):
    text = f"""
    name: stops
    backbone: tiny
    max_length: 32
    tasks:
      - name: sentiment
        kind: classification
        limit: 24
        train: {{format: tsv, path: {CORPUS}/sentiment/train.tsv, text: sentence, label: label}}
        dev: {{format: tsv, path: {CORPUS}/sentiment/dev.tsv, text: sentence, label: label}}
        early_stopping: {{monitor: accuracy, patience: 1, min_delta: 2.0}}  # never better after epoch 1
      - name: entities
        kind: tagging
        limit: 24
        train: {{format: conll, path: {CORPUS}/entities/train.conll}}
    mixture: {{batch_size: 8, length_buckets: [32]}}
    training: {{epochs: {EPOCHS}, learning_rate: 1.0e-3, seed: 3}}
    weighting: {{strategy: uncertainty}}
    output_dir: {tmp_path}/runs
    export: {{enabled: false}}
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "c.yaml").write_text(textwrap.dedent(text))
    from kmtl.config import load_config

    return load_config(tmp_path / "c.yaml")


def _watch(heads, crash_after_epoch=None):
    """A callback that records each head's weights at every epoch's end (and may crash there)."""
    import keras

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            heads.append({name: [w.numpy().copy() for w in self.model.get_layer(name).weights]
                          for name in ("sentiment", "entities")})
            if epoch == crash_after_epoch:
                raise RuntimeError("simulated crash")

    return Watch()


def test_a_stopped_task_is_frozen_leaves_the_mixture_and_a_rerun_stops_it_at_the_same_epoch(tmp_path):
    from kmtl.training import trainer

    heads, lines = [], []
    straight = trainer.train(_config(tmp_path / "straight"), verbose=0, echo=lines.append,
                             callbacks=[_watch(heads)])
    assert len(straight.history["loss"]) == EPOCHS  # the run went on without sentiment
    assert any("task 'sentiment': val_sentiment_accuracy has not improved" in line for line in lines)
    run = json.loads((tmp_path / "straight" / "runs" / "stops" / "run.json").read_text())
    assert run["tasks_stopped"] == {"sentiment": 2}
    # epoch 3 trained entities only: the sentiment head did not move, the entities head did
    for a, b in zip(heads[1]["sentiment"], heads[2]["sentiment"]):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(heads[1]["entities"], heads[2]["entities"]))
    # no sentiment example in its batches: its training figures end at its stop (History, TensorBoard)
    assert len(straight.history["sentiment_loss"]) == 2 and len(straight.history["val_sentiment_accuracy"]) == 3
    assert len(straight.history["sentiment_accuracy"]) == 2
    assert straight.model.get_layer("sentiment").trainable  # unfrozen for whoever trains the saved model on

    crashed = _config(tmp_path / "crashed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train(crashed, verbose=0, callbacks=[_watch([], crash_after_epoch=1)])
    folder = tmp_path / "crashed" / "runs" / "stops"
    assert not (folder / "model.weights.h5").exists()  # nothing half-done where a reader would load it
    state = json.loads((folder / "backup" / "state.json").read_text())
    assert (state["epoch"], state["extra"]["task_early_stopping"]["stopped"]) == (2, {"sentiment": 2})
    resumed = trainer.train(crashed, verbose=0, callbacks=[_watch([])])
    assert len(resumed.history["loss"]) == 1  # epoch 3 only, without sentiment
    worst = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(straight.model.weights,
                                                                            resumed.model.weights))
    assert worst <= 1e-5, f"the resumed run's weights differ from the uninterrupted run's by {worst}"


def test_a_stopped_tasks_rows_of_the_per_task_weights_are_held_still(tiny):
    """AdamW's momentum and decay move weights that get no gradient: the stopped task's adapter rows
    are put back after every step, the other task's move on."""
    import kmtl
    from kmtl.sharing.counts import task_rows
    from kmtl.tasks import Classification
    from kmtl.training.early_stopping import TaskEarlyStopping

    model = kmtl.build_model(tiny, [Classification("a", labels=["x", "y"]), Classification("b", labels=["x", "y"])],
                             sharing="adapters", adapter_size=4, max_length=16)
    rows = task_rows(model)
    assert rows and all(int(v.shape[0]) == 2 for v in rows)  # every adapter weight, stacked by task
    stopper = TaskEarlyStopping({"a": {"monitor": "val_a_accuracy"}}, trained=["a", "b"])
    stopper.set_model(model)
    stopper.freeze(model, ["a"])
    assert not model.get_layer("a").trainable and model.get_layer("b").trainable
    before = [v.numpy().copy() for v in rows]
    stopper.on_train_batch_begin(0)
    for v in rows:  # what an optimizer step with momentum would do to every row
        v.assign(v.value + 0.5)
    stopper.on_train_batch_end(0)
    for v, old in zip(rows, before):
        np.testing.assert_array_equal(v.numpy()[0], old[0])  # task a: held
        np.testing.assert_allclose(v.numpy()[1], old[1] + 0.5)  # task b: moved
