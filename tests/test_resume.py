"""Exact resume after a crash (issue 11): a run interrupted mid-epoch and rerun ends with the
weights of the uninterrupted run, for a stateless (static) and a stateful (uncertainty)
weighting strategy.

The crash is a callback that raises right after a step, inside ``fit``: the backups are the
same files a ``kill -9`` would leave (written every ``save_every`` steps by
`kmtl.training.backup.StepBackup`, ``state.json`` renamed into place last), and nothing of
the crashed process survives into the rerun except them (the rerun builds a new model, new
datasets and new callbacks from the config). `test_kill_9_leaves_a_backup_the_rerun_resumes_from`
kills a real process.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kmtl.demo import DEMO_CONFIG

CORPUS = DEMO_CONFIG.parent / "corpus"
STEPS = 6  # 2 tasks x 24 examples / batch 8
EPOCHS = 3
CRASH_AT = STEPS + 3  # after step 4 of epoch 2 (global step 9)
SAVE_EVERY = 2  # so the last backup before the crash is mid-epoch 2 (global step 8)


def write_config(tmp_path, strategy):
    text = f"""
    name: resume
    backbone: tiny
    max_length: 32
    tasks:
      - name: sentiment
        kind: classification
        limit: 24
        train: {{format: tsv, path: {CORPUS}/sentiment/train.tsv, text: sentence, label: label}}
      - name: entities
        kind: tagging
        limit: 24
        train: {{format: conll, path: {CORPUS}/entities/train.conll}}
    mixture: {{batch_size: 8, sampling: temperature, length_buckets: [32]}}  # one shape: one trace
    training: {{epochs: {EPOCHS}, learning_rate: 1.0e-3, seed: 3, backup_every: {SAVE_EVERY}}}
    weighting: {{strategy: {strategy}}}
    output_dir: {tmp_path}/runs
    export: {{enabled: false}}
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def crash_after(step):
    import keras

    class Crash(keras.callbacks.Callback):
        """Raises right after global step ``step`` (the optimizer's step count)."""

        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == step:
                raise RuntimeError("simulated crash")

    return Crash()


def with_callback(fit_from_backup, extra):
    """``trainer._fit_from_backup`` with one more callback, last (after the backup's hook)."""

    def fit(*args, callbacks, **kwargs):
        return fit_from_backup(*args, callbacks=callbacks + [extra], **kwargs)

    return fit


def run(tmp_path, strategy, monkeypatch, crash_at=None):
    """Train the config (with ``crash_at``: crash there first, then rerun); returns the final
    weights and the `RunResult`."""
    from kmtl.config import load_config
    from kmtl.training import trainer

    config = load_config(write_config(tmp_path, strategy))
    if crash_at is not None:
        real = trainer._fit_from_backup
        monkeypatch.setattr(trainer, "_fit_from_backup", with_callback(real, crash_after(crash_at)))
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer.train(config, verbose=0, export=False)
        folder = tmp_path / "runs" / "resume" / "backup"
        state = json.loads((folder / "state.json").read_text())
        assert (state["epoch"], state["step"]) == (1, 2)  # the last backup: global step 8, mid-epoch 2
        assert [p.name for p in folder.glob("*.weights.h5")] == [state["weights"]]  # older ones deleted
        monkeypatch.setattr(trainer, "_fit_from_backup", real)
    result = trainer.train(config, verbose=0, export=False)
    assert not (tmp_path / "runs" / "resume" / "backup").exists()  # cleared after the finished run
    return [w.numpy() for w in result.model.weights], result


# uncertainty: state in the backup, and a superset of static's path (static: slow, run deliberately; CI time)
@pytest.mark.parametrize("strategy", [pytest.param("static", marks=pytest.mark.slow), "uncertainty"])
def test_interrupted_mid_epoch_and_rerun_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch, strategy):
    straight, full = run(tmp_path / "straight", strategy, monkeypatch)
    resumed, again = run(tmp_path / "crashed", strategy, monkeypatch, crash_at=CRASH_AT)
    assert len(full.history["loss"]) == EPOCHS
    assert len(again.history["loss"]) == 2  # the rest of epoch 2 (its own fit), then epoch 3
    assert len(straight) == len(resumed)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(straight, resumed))
    assert worst <= 1e-5, f"resumed weights differ from the uninterrupted run's by {worst}"
    # not vacuous: training moved the weights, and a resume from the wrong step would differ
    assert any(float(np.max(np.abs(a))) > 0 for a in straight)


KILLED = """
import os, signal, sys
import keras
from kmtl.config import load_config
from kmtl.training import trainer

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

fit = trainer._fit_from_backup
trainer._fit_from_backup = lambda *a, callbacks, **k: fit(*a, callbacks=callbacks + [Kill()], **k)
trainer.train(load_config(sys.argv[1]), verbose=0, export=False)
"""


def test_kill_9_leaves_a_backup_the_rerun_resumes_from(tmp_path):
    config = write_config(tmp_path, "static")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    out = subprocess.run([sys.executable, "-c", KILLED, str(config), str(CRASH_AT)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == -9, out.stderr[-3000:]
    backup = tmp_path / "runs" / "resume" / "backup"
    state = json.loads((backup / "state.json").read_text())
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 2, 8)
    assert (backup / state["weights"]).is_file()

    from kmtl.config import load_config
    from kmtl.training import trainer

    result = trainer.train(load_config(config), verbose=0, export=False)
    assert len(result.history["loss"]) == 2  # the rest of epoch 2, then epoch 3
    assert int(result.model.optimizer.iterations.numpy()) == EPOCHS * STEPS  # no step done twice


def test_a_resumed_auto_run_keeps_the_precision_it_started_in(tmp_path, monkeypatch):
    """`training.precision: auto` resolves per machine; a run started in bfloat16 and resumed on a
    CPU without native bfloat16 finishes in bfloat16 (it says why) instead of switching mid-run."""
    from kmtl.config import load_config
    from kmtl.model import precision as precision_lib
    from kmtl.training import train

    monkeypatch.delenv("KMTL_PRECISION", raising=False)
    monkeypatch.setattr(precision_lib, "cpu_bf16_flags", lambda cpuinfo=None: ["avx512_bf16"])
    config = write_config(tmp_path, "static")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_config(config), verbose=0, callbacks=[crash_after(CRASH_AT)])
    state = json.loads((tmp_path / "runs" / "resume" / "backup" / "state.json").read_text())
    assert state["extra"]["precision"] == "mixed_bfloat16"

    monkeypatch.setattr(precision_lib, "cpu_bf16_flags", lambda cpuinfo=None: [])  # "another machine"
    said = []
    result = train(load_config(config), verbose=0, echo=said.append)
    assert result.model.compute_dtype == "bfloat16"
    assert any("resumed in the precision the run started in (this machine alone: float32)" in line for line in said), said
    assert json.loads((result.run_dir / "run.json").read_text())["precision"] == "mixed_bfloat16"
    # a fresh start on this machine resolves afresh
    result = train(load_config(config), verbose=0, echo=said.append, rerun="overwrite")
    assert result.model.compute_dtype == "float32"
