"""`MultiTaskModel.fit` under `tf.distribute.MultiWorkerMirroredStrategy`: Keras 3.15's two failures, worked around.

Start one process per worker, each with its ``TF_CONFIG``
(``{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": i}}``)
and the same config; ``training.strategy: auto`` (or ``multi_worker``) then trains one model
across them. Keras 3.15's own ``fit`` fails under this strategy in two places, which
`kmtl.MultiTaskModel` works around with the helpers here:

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the metrics and optimizer from the first
   batch, made by ``strategy.reduce("MEAN", batch, axis=None)``: the multi-worker strategy's
   reduce takes one tensor, not a dict of them, and fails with "Attempt to convert a value
   ({'token_ids': PerReplica:{...}, ...}) with an unsupported type (<class 'dict'>) to a
   Tensor" (keras-team/keras#20329, dict inputs; keras-team/keras#20585, TensorFlow's own
   multi-worker Keras tutorial, fails since TF 2.16). A local batch serves as well: the build
   needs shapes and dtypes only (`local_batch`).
2. ``reduce_per_replica`` reduces every figure a step logs with
   ``strategy.reduce("MEAN", value, axis=0)`` in multi-worker mode, and a scalar has no axis
   0: "Invalid reduction dimension 0 for input with 0 dimensions". The model's train and test
   steps log shape-``[1]`` tensors there (`rank1_logs`); the reduce turns them back into scalars
   (the mean over workers, as MirroredStrategy means its replicas' step figures). It costs
   two scalar all-reduces per logged figure per step.

Remove both when those issues are fixed (check with ``tests/test_multi_worker.py``, after
deleting ``MultiTaskModel._maybe_symbolic_build`` and the `rank1_logs` calls).

The run-level rules (data sharding, the chief's files): `kmtl.training.multi_worker`.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` spans several worker processes (a `MultiWorkerMirroredStrategy`
    whose cluster, from ``TF_CONFIG``, names more than one chief or worker task)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker")) > 1


def local_batch(strategy, batch):
    """``batch`` with each distributed value replaced by this worker's first local replica's part.

    For ``MultiTaskModel._maybe_symbolic_build`` (keras-team/keras#20329, see the module)."""
    return keras.tree.map_structure(
        lambda value: strategy.experimental_local_results(value)[0]
        if isinstance(value, tf.distribute.DistributedValues) else value, batch)


def rank1_logs(logs: dict) -> dict:
    """``logs`` with each scalar tensor reshaped to ``[1]``, for Keras' multi-worker reduce of
    the step's figures (``axis=0``; see the module). Other values are left as they are."""
    return {key: tf.reshape(value, [1]) if tf.is_tensor(value) and value.shape.rank == 0 else value
            for key, value in logs.items()}
