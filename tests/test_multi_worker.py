"""Multi-worker training (issue 14): two worker processes on loopback train the run one process
trains with the same global batch.

`kmtl.training.train` runs in two processes with their own ``TF_CONFIG`` (``strategy: auto``
picks `MultiWorkerMirroredStrategy`), CPU only, tiny backbone. Checked: both exit 0 with the
same weights; the chief (worker 0) wrote the run folder and the other worker nothing in it
(its TensorBoard files would carry its process id) and left no scratch folder; the chief's
``model.weights.h5`` (weights and optimizer state) equals, within 1e-5, that of one process
with one replica and the global batch (2 × 8), which also shows that each worker trained on its own
half of every global batch (one epoch: each of the 48 examples once across the two workers, 3
steps). `kmtl.model.multi_worker_fit` says what Keras
3.15 needs for this (keras-team/keras#20329, #20585).

`test_a_killed_worker_and_a_rerun_end_with_the_uninterrupted_weights`: worker 1 is SIGKILLed
after global step 5 (the last backup: step 4, mid-epoch 2); the chief cannot go on (its next
all-reduce has no peer: it fails, or is killed after a grace time); both workers rerun with the
same config, resume at step 4 from their backups (the chief's in the run folder, worker 1's in
its scratch folder) and end with the weights of one uninterrupted process with the global batch.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from kmtl.demo import DEMO_CONFIG
from kmtl.training.launcher import free_ports

CORPUS = DEMO_CONFIG.parent / "corpus"
WORKERS = 2
BATCH = 8  # per replica: the global batch is 16
STEPS = 3  # an epoch: 2 tasks x 24 examples once, in global batches of 16 (the trainer's default)
TIMEOUT = 300  # seconds, both workers together
KILL_AT = STEPS + 2  # worker 1 is killed after global step 5 (step 2 of epoch 2) ...
LAST_BACKUP = 4  # ... so the last backup is global step 4 (backup_every: 2), mid-epoch 2 (epoch 1, step 1)
CHIEF_GRACE = 150  # seconds the chief gets to fail on its own once its peer is dead (TF's health check)

WORKER = """
import json, os, signal, sys
import keras
import numpy as np
from kmtl.config import load_config
from kmtl.training import train

class Kill(keras.callbacks.Callback):  # argv[2:4]: kill worker <index> after optimizer step <step>
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)

index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
kill = len(sys.argv) > 2 and int(sys.argv[2]) == index
# train's callbacks come after its StepBackup: the backup of a step is written before the kill
result = train(load_config(sys.argv[1]), verbose=0, export=False, callbacks=[Kill()] if kill else [])
print(json.dumps({"run_dir": str(result.run_dir), "loss": result.history["loss"], "dtype": result.model.compute_dtype,
                  "steps": int(result.model.optimizer.iterations.numpy()),
                  "weights": [float(np.sum(np.abs(w.numpy()))) for w in result.model.weights]}))
"""


def write_config(folder, batch_size, strategy):
    text = f"""
    name: workers
    backbone: tiny
    max_length: 32
    tasks:
      - name: sentiment
        kind: classification
        limit: 24
        dropout: 0.0  # dropout masks differ with the replica count
        train: {{format: tsv, path: {CORPUS}/sentiment/train.tsv, text: sentence, label: label}}
      - name: entities
        kind: tagging
        limit: 24
        dropout: 0.0
        train: {{format: conll, path: {CORPUS}/entities/train.conll}}
    mixture: {{batch_size: {batch_size}, sampling: temperature, length_buckets: [32]}}
    training: {{epochs: 2, learning_rate: 1.0e-3, seed: 3, backup_every: 2,
               strategy: {strategy}}}
    output_dir: {folder}/runs
    export: {{enabled: false}}
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def start_workers(config, scratch, *args, envs=None):
    """The two workers' processes (``args``: more arguments of `WORKER`; ``envs``: more environment
    variables, one dict per worker), on fresh loopback ports."""
    cluster = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    procs = []
    try:
        for index in range(WORKERS):
            tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), KERAS_BACKEND="tensorflow", TMPDIR=str(scratch),
                       CUDA_VISIBLE_DEVICES="", **(envs[index] if envs else {}))
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(config), *map(str, args)], env=env,
                                          text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    except BaseException:
        kill_all(procs)
        raise
    return procs


def kill_all(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finish(procs):
    """Wait for both workers (`TIMEOUT` in all); their reports. Leftovers are killed."""
    try:
        deadline = time.monotonic() + TIMEOUT
        outputs = [proc.communicate(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    finally:
        kill_all(procs)
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, one replica, the global batch: the run the workers must match."""
    from kmtl.config import load_config
    from kmtl.training import train

    folder = tmp_path_factory.mktemp("single")
    result = train(load_config(write_config(folder, BATCH * WORKERS, "default")), verbose=0, export=False)
    # not vacuous: it ran every step, and learned
    assert int(result.model.optimizer.iterations.numpy()) == 2 * STEPS
    assert result.history["loss"][1] < result.history["loss"][0]
    return result


def assert_same_weights(run_dir, single):
    expected = h5_arrays(single.run_dir / "model.weights.h5")
    got = h5_arrays(run_dir / "model.weights.h5")
    assert sorted(got) == sorted(expected)
    worst = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    assert worst <= 1e-5, f"the workers' weights differ from one process's by {worst}"


@pytest.mark.slow  # ~30 s on a 2-core machine, plus the reference run (~20 s, shared with the next test)
def test_two_workers_train_as_one_process_with_the_global_batch(tmp_path, single):
    config = write_config(tmp_path / "workers", BATCH, "auto")
    scratch = tmp_path / "tmp"  # the workers' temporary folder (TMPDIR): where the non-chief writes
    scratch.mkdir()
    procs = start_workers(config, scratch)
    reports = finish(procs)

    run_dir = tmp_path / "workers" / "runs" / "workers"
    assert all(r["run_dir"] == str(run_dir) for r in reports)
    assert reports[0]["weights"] == reports[1]["weights"]  # one model on both workers
    assert [r["steps"] for r in reports] == [2 * STEPS] * WORKERS  # an epoch: every example once, all workers
    assert (run_dir / "run.json").is_file() and (run_dir / "model.weights.h5").is_file()
    assert not (run_dir / "backup").exists()
    # TensorBoard names its files events.out.tfevents.<time>.<host>.<process id>.<n>.v2
    writers = {int(e.name.split(".")[-3]) for e in run_dir.glob("logs/*/events.out.tfevents.*")}
    assert writers == {procs[0].pid}, (writers, [p.pid for p in procs])  # the non-chief's logs went elsewhere
    assert not list(scratch.glob("kmtl-worker*"))  # ... into a scratch folder, removed at the end

    assert_same_weights(run_dir, single)
    assert np.allclose(reports[0]["loss"], single.history["loss"], atol=1e-4), (reports[0]["loss"], single.history)


@pytest.mark.slow  # 70-170 s on the 2-core machine (loaded): the killed cluster, the chief failing (~10 s), the rerun
def test_a_killed_worker_and_a_rerun_end_with_the_uninterrupted_weights(tmp_path, single):
    config = write_config(tmp_path / "workers", BATCH, "auto")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run_dir = tmp_path / "workers" / "runs" / "workers"

    procs = start_workers(config, scratch, 1, KILL_AT)  # worker 1 kills itself after step KILL_AT
    try:
        _, err = procs[1].communicate(timeout=TIMEOUT)
        assert procs[1].returncode == -9, err[-3000:]
        killed = time.monotonic()
        try:  # the chief's next all-reduce has no peer: it must not finish
            _, chief_err = procs[0].communicate(timeout=CHIEF_GRACE)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            _, chief_err = procs[0].communicate()
    finally:
        kill_all(procs)
    assert procs[0].returncode != 0, chief_err[-3000:]
    print(f"chief after its peer's kill: exit status {procs[0].returncode} after {time.monotonic() - killed:.0f} s"
          f"{' (killed after the grace time)' if procs[0].returncode == -9 else ''}: {chief_err.strip()[-300:]}")
    assert not (run_dir / "model.weights.h5").exists()  # the run did not finish

    state = json.loads((run_dir / "backup" / "state.json").read_text())
    assert (state["global_step"], state["epoch"], state["step"]) == (LAST_BACKUP, 1, 1)
    [worker_backup] = scratch.glob("kmtl-worker1-*/workers/backup/state.json")  # kept after the crash
    assert json.loads(worker_backup.read_text())["global_step"] == LAST_BACKUP

    reports = finish(start_workers(config, scratch))  # the same config again: both resume
    assert all(len(r["loss"]) == 1 for r in reports), reports  # only the rest of epoch 2 (its own fit)
    assert [r["steps"] for r in reports] == [2 * STEPS] * WORKERS  # the optimizer's count: no step twice
    assert reports[0]["weights"] == reports[1]["weights"]
    assert not (run_dir / "backup").exists() and not list(scratch.glob("kmtl-worker*"))  # a finished run
    assert_same_weights(run_dir, single)  # nothing lost, nothing done twice


@pytest.mark.slow  # ~40 s on a 2-core machine
def test_workers_that_resolve_different_precisions_all_train_in_float32(tmp_path):
    """`precision: auto` resolves on each machine: a worker on a bfloat16 CPU and one on another
    (stood in for by KMTL_PRECISION) must not all-reduce two different models' gradients."""
    config = write_config(tmp_path / "workers", BATCH, "auto")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    envs = [{"KMTL_PRECISION": "mixed_bfloat16"}, {"KMTL_PRECISION": "float32"}]
    reports = finish(start_workers(config, scratch, envs=envs))
    assert [r["dtype"] for r in reports] == ["float32", "float32"]
    assert reports[0]["weights"] == reports[1]["weights"]
    run = json.loads((tmp_path / "workers" / "runs" / "workers" / "run.json").read_text())
    assert run["precision"] == "float32"
