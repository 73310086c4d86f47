"""Pick a `tf.distribute` strategy from the machine (or from the config)."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

from kmtl.config.schema import TPU_UNSUPPORTED
from kmtl.errors import ConfigError, KmtlError
from kmtl.model.multi_worker_fit import is_multi_worker

log = logging.getLogger(__name__)
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def choose_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy for training.

    ``auto`` picks: multi-worker mirrored when ``TF_CONFIG`` names several workers;
    `MirroredStrategy` when several GPUs (or several logical CPU devices, as tests configure)
    are visible; otherwise the default strategy.

    ``tpu`` is refused with `kmtl.config.schema.TPU_UNSUPPORTED` (TensorFlow 2.19 was the last
    release with TPU support; kmtl runs on TF 2.21), the explanation a config with
    ``training.strategy: tpu`` gets; ``auto`` ignores ``TPU_NAME``, with a warning.

    Args:
        name: ``auto``, ``default``, ``mirrored`` or ``multi_worker``.

    Example:
        >>> strategy = choose_strategy()
        >>> with strategy.scope():
        ...     model = kmtl.build_model(encoder, tasks)
    """
    if name not in STRATEGIES:
        raise KmtlError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name == "auto":
        name = _detect()
    if name == "tpu":
        raise ConfigError([("training.strategy", TPU_UNSUPPORTED)])
    if name == "multi_worker":
        # Keras 3.15's own fit fails under this strategy (keras-team/keras#20329, #20585);
        # MultiTaskModel works around it: kmtl.model.multi_worker_fit
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=_replica_devices())
    return tf.distribute.get_strategy()


def _replica_devices():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _detect() -> str:
    if os.environ.get("TPU_NAME"):
        log.warning("TPU_NAME is set but not used: %s", TPU_UNSUPPORTED)
    workers = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {}).get("worker", [])
    if len(workers) > 1:
        return "multi_worker"
    if len(_replica_devices()) > 1:
        return "mirrored"
    return "default"


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: always, except in a multi-worker cluster,
    where only the chief does (the ``chief`` task, or worker 0 of a cluster without one, as
    in TensorFlow's multi-worker guide); the other workers write into a scratch folder
    (`kmtl.training.multi_worker.worker_config`).

    Example:
        >>> # TF_CONFIG={"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 1}}
        >>> is_chief(choose_strategy())
        False
    """
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
