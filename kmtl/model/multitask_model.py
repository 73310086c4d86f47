"""`MultiTaskModel`: a functional Keras model, shared encoder in, one named output per task."""

from __future__ import annotations

from typing import Dict, NamedTuple, Sequence

import keras
import tensorflow as tf

from kmtl.model.pooling import MaskedMeanPooling
from kmtl.sharing import INPUT_NAMES, TASK_ID, apply_sharing, make_sharing


class TaskLoss(NamedTuple):
    """One task's loss on one replica's part of a batch.

    Attributes:
        share: the replica's sum of the task's per-example losses divided by ``count``.
        count: examples (tokens, for token tasks) the task owns in the *global* batch.
    """

    share: tf.Tensor
    count: tf.Tensor

POOLINGS = ("mean", "cls")


class MultiTaskModel(keras.Model):
    """A shared keras-hub encoder behind one named output per task.

    A functional `keras.Model` (inputs ``token_ids``, ``segment_ids``, ``padding_mask``, plus
    ``task_id`` with per-task adapters; outputs ``{task.name: logits/score}``) that also
    computes the multi-task loss correctly:

    * each task's loss is the mean over the examples (tokens, for tagging) it *owns* in the
      batch, normalised by the owned count summed over all replicas, so 1 and N replicas give
      the same update and a task is not diluted by other tasks' examples;
    * the total is ``sum_t loss_weights[t] * loss_t``, where ``loss_weights`` are
      non-trainable variables that weighting callbacks assign between steps (no retrace);
    * ``<task>_loss`` in the logs is the mean over owned examples of the epoch.

    Build it with `kmtl.build_model`. `compile` fills in each task's metrics (weighted by
    ownership) and accepts ``loss_weights`` as floats.

    Args:
        encoder: a `kmtl.backbone.Encoder` (or a keras-hub backbone).
        tasks: the `kmtl.tasks.Task` list; names become output names.
        pooling: sentence vector for sentence-level heads: ``mean`` (masked mean of token
            vectors, default) or ``cls`` (the backbone's pooled ``[CLS]`` output).
        sharing: how tasks share the backbone (`kmtl.sharing`): ``full`` (fine-tune
            everything), ``frozen`` (train heads only), ``lora`` (shared low-rank updates, Hu
            et al. 2022), ``adapters`` (per-task bottleneck adapters, Houlsby et al. 2019;
            adds the ``task_id`` input), or a `kmtl.sharing.Sharing` object.
        lora_rank, lora_alpha, lora_targets: rank, scale numerator (default: the rank) and
            target layer names (default ``query``, ``value``) of ``lora``.
        adapter_size: bottleneck width of ``adapters``.

    Inputs given as a dict may carry keys the model does not read: kmtl's pipelines always
    add ``task_id`` (the example's task index in ``tasks``), which only ``adapters`` uses.

    Example:
        >>> model = kmtl.build_model(kmtl.load_backbone("tiny"), [kmtl.tasks.Classification("s", ["a", "b"])])
        >>> model.compile(optimizer="adam")
        >>> model.fit(train_dataset, epochs=1)
    """

    def __init__(self, encoder, tasks: Sequence, pooling: str = "mean", sharing="full",
                 lora_rank: int = 8, lora_alpha=None, lora_targets=None, adapter_size: int = 64, **kwargs):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        strategy = make_sharing(sharing, lora_rank=lora_rank, lora_alpha=lora_alpha,
                                lora_targets=lora_targets, adapter_size=adapter_size)
        names = [t.name for t in tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks must be non-empty with unique names, got {names}")
        backbone = getattr(encoder, "backbone", encoder)
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
        if strategy.routes_by_task:
            inputs[TASK_ID] = keras.Input(shape=(), dtype="int32", name=TASK_ID)
        encoded = apply_sharing(strategy, backbone, inputs, len(names))
        if pooling == "mean" and hasattr(backbone, "get_layer"):
            try:  # the [CLS] pooler is unused with mean pooling: keep it out of the optimizer
                backbone.get_layer("pooled_dense").trainable = False
            except ValueError:
                pass
        sequence = encoded["sequence_output"]
        pooled = (MaskedMeanPooling(name="mean_pooling")(sequence, inputs["padding_mask"])
                  if pooling == "mean" else encoded["pooled_output"])
        features = {"sequence": sequence, "pooled": pooled}
        outputs = {task.name: task.build_head(features) for task in tasks}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.tasks = list(tasks)
        self.encoder_spec = getattr(encoder, "spec", None)
        self.pooling, self.sharing = pooling, strategy.name
        self.sharing_options = strategy.get_config()  # rebuilds it: kmtl.sharing.sharing_from_config
        self.lora_rank = getattr(strategy, "rank", lora_rank)
        self.routes_by_task = strategy.routes_by_task
        self.task_weights = {
            t.name: keras.Variable(1.0, trainable=False, dtype="float32", name=f"loss_weight_{t.name}",
                                   aggregation="only_first_replica")
            for t in tasks
        }
        self.step_hook = None  # set by step-level weighting callbacks during fit
        self.task_loss_trackers = {t.name: keras.metrics.Mean(name=f"{t.name}_loss") for t in tasks}

    def __call__(self, inputs, *args, **kwargs):
        if getattr(self, "routes_by_task", False) and isinstance(inputs, dict) and TASK_ID not in inputs:
            raise ValueError(
                f"this model routes examples through per-task adapters (sharing={self.sharing!r}): its "
                f"inputs need {TASK_ID!r}, int32 [batch], the index of each example's task in "
                f"model.tasks {[t.name for t in self.tasks]}; kmtl.data pipelines add it")
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # kmtl's pipelines always put task_id in x; a model without adapters ignores it (Keras
        # would warn that the input structure does not match).
        if isinstance(inputs, dict):
            wanted = set(INPUT_NAMES) | ({TASK_ID} if getattr(self, "routes_by_task", False) else set())
            inputs = {name: value for name, value in inputs.items() if name in wanted}
        return super().call(inputs, training=training, mask=mask, **kwargs)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer="adamw", loss_weights=None, weighted_metrics=None, **kwargs):
        """Compile with each task's loss and metrics.

        Args:
            optimizer: any Keras optimizer (see `kmtl.training.make_optimizer` for AdamW with
                warm-up and linear decay).
            loss_weights: ``{task: float}`` initial loss weights (default 1.0 each); stored in
                the non-trainable ``task_weights`` variables that callbacks may change.
            weighted_metrics: ``{task: [metrics]}``; default: each task's `Task.metrics`.
            **kwargs: passed to `keras.Model.compile` (``jit_compile``, ``steps_per_execution``...).
        """
        if kwargs.pop("loss", None) is not None:
            raise ValueError("MultiTaskModel computes each task's loss itself; do not pass `loss`")
        for name, value in (loss_weights or {}).items():
            if name not in self.task_weights:
                raise ValueError(f"loss_weights names unknown task {name!r}; tasks: {sorted(self.task_weights)}")
            self.task_weights[name].assign(float(value))
        if weighted_metrics is None:
            weighted_metrics = {t.name: t.metrics() for t in self.tasks}
        super().compile(optimizer=optimizer, weighted_metrics=weighted_metrics, **kwargs)

    def fit(self, *args, shuffle=False, **kwargs):
        """`keras.Model.fit`; ``shuffle`` defaults to False since kmtl datasets shuffle themselves."""
        return super().fit(*args, shuffle=shuffle, **kwargs)

    @property
    def loss_weights_now(self) -> Dict[str, float]:
        """The current loss weights as Python floats."""
        return {name: float(v.numpy()) for name, v in self.task_weights.items()}

    # ------------------------------------------------------------------- loss
    def task_losses(self, y, y_pred, sample_weight) -> Dict[str, TaskLoss]:
        """Each task's `TaskLoss` for a batch on this replica; updates the ``<task>_loss`` trackers.

        ``share`` is the sum of the task's per-example (per-token) losses on this replica
        divided by the number it owns on *all* replicas, so shares summed over replicas give
        the task's mean loss over the global batch, and 1 or N replicas give one update.
        """
        replica = tf.distribute.get_replica_context()
        losses = {}
        for task in self.tasks:
            weight = tf.cast(sample_weight[task.name], tf.float32)
            per_example = tf.cast(task.per_example_loss(y[task.name], y_pred[task.name]), tf.float32)
            local_sum = tf.reduce_sum(per_example * weight)
            local_count = tf.reduce_sum(weight)
            count = local_count
            if replica is not None and replica.num_replicas_in_sync > 1:
                count = replica.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
            self.task_loss_trackers[task.name].update_state(
                tf.math.divide_no_nan(local_sum, local_count), sample_weight=local_count
            )
            losses[task.name] = TaskLoss(tf.math.divide_no_nan(local_sum, count), count)
        return losses

    def regularization_loss(self):
        """This replica's share of the layers' added losses (``self.losses``), or 0."""
        if not self.losses:
            return tf.constant(0.0, tf.float32)
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        return tf.add_n([tf.cast(l, tf.float32) for l in self.losses]) / replicas

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = self.task_losses(y, y_pred, sample_weight)
        total = tf.add_n([tf.cast(self.task_weights[name], tf.float32) * loss.share
                          for name, loss in losses.items()])
        return total + self.regularization_loss()

    def train_step(self, data):
        # A step-level weighting callback (GradNorm, PCGrad...) installs itself as
        # `step_hook` for the duration of `fit`; otherwise this is Keras's own step.
        if self.step_hook is None:
            return super().train_step(data)
        from kmtl.weighting.step import hooked_train_step

        return hooked_train_step(self, self.step_hook, data)
