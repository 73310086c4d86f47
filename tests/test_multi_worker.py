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
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from kmtl.demo import DEMO_CONFIG

CORPUS = DEMO_CONFIG.parent / "corpus"
WORKERS = 2
BATCH = 8  # per replica: the global batch is 16
STEPS = 3  # an epoch: 2 tasks x 24 examples once, in global batches of 16 (the trainer's default)
TIMEOUT = 300  # seconds, both workers together

WORKER = """
import json, sys
import numpy as np
from kmtl.config import load_config
from kmtl.training import train

result = train(load_config(sys.argv[1]), verbose=0, export=False)
print(json.dumps({"run_dir": str(result.run_dir), "loss": result.history["loss"],
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


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow  # ~2 minutes on a loaded 2-core machine: two TF processes, then the reference run
def test_two_workers_train_as_one_process_with_the_global_batch(tmp_path):
    config = write_config(tmp_path / "workers", BATCH, "auto")
    scratch = tmp_path / "tmp"  # the workers' temporary folder (TMPDIR): where the non-chief writes
    scratch.mkdir()
    cluster = [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]
    procs = []
    try:
        for index in range(WORKERS):
            tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), KERAS_BACKEND="tensorflow", TMPDIR=str(scratch),
                       CUDA_VISIBLE_DEVICES="")
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(config)], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        deadline = time.monotonic() + TIMEOUT
        outputs = [proc.communicate(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

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

    # one process, one replica, the global batch: the same steps
    from kmtl.config import load_config
    from kmtl.training import train

    single = train(load_config(write_config(tmp_path / "single", BATCH * WORKERS, "default")), verbose=0,
                   export=False)
    expected = h5_arrays(single.run_dir / "model.weights.h5")
    got = h5_arrays(run_dir / "model.weights.h5")
    assert sorted(got) == sorted(expected)
    worst = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    assert worst <= 1e-5, f"the workers' weights differ from one process's by {worst}"
    # not vacuous: both ran every step, and learned
    assert int(single.model.optimizer.iterations.numpy()) == 2 * STEPS
    assert single.history["loss"][1] < single.history["loss"][0]
    assert np.allclose(reports[0]["loss"], single.history["loss"], atol=1e-4), (reports[0]["loss"], single.history)
