"""Multi-worker training: the run-level rules, with `tf.distribute.MultiWorkerMirroredStrategy`.

Start one process per worker, each with its ``TF_CONFIG``
(``{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": i}}``)
and the same config; ``training.strategy: auto`` (or ``multi_worker``) then trains one model
across them (``kmtl train CONFIG --workers N`` starts them on one machine:
`kmtl.training.launcher`). Keras 3.15's own ``fit`` fails under this strategy;
`kmtl.model.multi_worker_fit` says how `kmtl.MultiTaskModel` works around it.

The trainer adds the run-level rules (`kmtl.training.trainer.train`):

* every worker builds the run's whole stream of *global* batches (``batch_size`` × replicas
  over all workers, as on one machine), and ``fit`` hands each worker its part of every batch:
  `by_example` sets tf.data's DATA auto-shard policy, so TensorFlow splits each global batch
  into per-replica batches and worker ``i`` keeps the ``i``-th. A run on N workers then takes
  the same steps as one process with N replicas (`MirroredStrategy`) or with one replica and
  the global batch, and the stream stays one seeded stream that a resumed run skips by
  global step (`kmtl.training.backup.StepBackup`). Sharding whole batches by index (worker
  ``i`` takes batches ``i, i+N, ...``) would work too, but gives another run than the
  one-machine one; sharding by file (tf.data's AUTO) would depend on the sources' files.
  Each worker tokenizes the whole stream: cheap next to the model.
* only the chief (`kmtl.training.strategy.is_chief`) writes the run folder; the other workers
  run the same code with the run folder and the export folder moved to a scratch folder of
  their own (`worker_config`): saving reads synchronised variables (metrics), an all-reduce
  every worker must join, so every worker saves, as TensorFlow's multi-worker guide says.
  The scratch folder is deleted at the end of a finished run and kept after a crash: it holds
  the worker's step backup, which a rerun resumes from; `check_same_start` stops a rerun whose
  workers would start at different steps.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from kmtl.errors import KmtlError
from kmtl.model.multi_worker_fit import is_multi_worker
from kmtl.model.precision import PRECISIONS

WORKER_FOLDER = "kmtl-{task}-{digest}"  # in the system's temporary folder


def by_example(dataset, strategy):
    """``dataset`` with tf.data's DATA auto-shard policy under a multi-worker ``strategy``
    (each worker keeps its part of every batch; see the module), else unchanged."""
    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def worker_folder(run_dir, strategy) -> Path:
    """The scratch folder of this (non-chief) worker for the run in ``run_dir``: the same on
    every rerun of that run, so a worker finds its backup again."""
    resolver = strategy.cluster_resolver
    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode("utf-8")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / WORKER_FOLDER.format(task=f"{resolver.task_type}{resolver.task_id}",
                                                              digest=digest)


def worker_config(config, strategy):
    """``config`` with its output and export folders moved into `worker_folder`: what a
    non-chief worker trains with (same config hash: ``output_dir`` and ``export`` are not in it).

    Example:
        >>> worker_config(config, strategy).run_dir
        PosixPath('/tmp/kmtl-worker1-3f1c0a9b5e2d/demo')
    """
    folder = worker_folder(config.run_dir, strategy)
    return config.model_copy(update={"output_dir": folder, "export": config.export.model_copy(
        update={"dir": folder / "saved_models"})})


def remove_worker_folder(config) -> None:
    """Delete a non-chief worker's scratch folder (``config`` from `worker_config`), after a finished run."""
    shutil.rmtree(Path(config.output_dir), ignore_errors=True)


def agree_on_precision(strategy, precision: str, reason: str):
    """``(precision, reason)`` that every worker trains in: its own when all workers resolved the
    same, else ``float32`` on all of them. ``training.precision: auto`` resolves on each machine
    (`kmtl.model.precision.resolve_precision`), and workers on CPUs of two kinds (one with
    native bfloat16, one without) would otherwise all-reduce gradients of two different models.
    A no-op outside multi-worker training; in it, every worker must call it.

    Example:
        >>> agree_on_precision(tf.distribute.get_strategy(), "mixed_bfloat16", "auto: ...")
        ('mixed_bfloat16', 'auto: ...')
    """
    if not is_multi_worker(strategy):
        return precision, reason
    codes = strategy.gather(strategy.run(lambda: tf.constant([PRECISIONS.index(precision)], tf.int64)), axis=0)
    resolved = sorted({PRECISIONS[int(c)] for c in codes.numpy()})
    if len(resolved) == 1:
        return precision, reason
    return "float32", (f"the workers resolved {' and '.join(resolved)} (their CPUs or KMTL_PRECISION differ): "
                       "float32 on every worker")


def check_same_start(strategy, global_step: int) -> None:
    """Stop unless every worker starts (or resumes) at ``global_step``: workers that start at
    different steps would run different numbers of steps and wait on each other for ever.
    A no-op outside multi-worker training; in it, every worker must call it.

    Raises:
        KmtlError: the workers' backups stand at different steps (one was lost, or is
            another run's).
    """
    if not is_multi_worker(strategy):
        return
    steps = strategy.gather(strategy.run(lambda: tf.constant([global_step], tf.int64)), axis=0)
    steps = [int(s) for s in steps.numpy()]
    if len(set(steps)) > 1:
        raise KmtlError(f"the workers would start at different steps ({', '.join(map(str, steps))}, one per "
                        "worker: their backups differ); rerun every worker with --restart (Python: "
                        "train(config, rerun='restart')) to start over")
