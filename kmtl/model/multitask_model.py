"""`MultiTaskModel`: a functional Keras model, shared encoder in, one named output per task."""

from __future__ import annotations

from typing import Dict, Sequence

import keras
import tensorflow as tf

from kmtl.model.pooling import MaskedMeanPooling

POOLINGS = ("mean", "cls")
SHARING_MODES = ("full", "frozen", "lora")


class MultiTaskModel(keras.Model):
    """A shared keras-hub encoder behind one named output per task.

    A functional `keras.Model` (inputs ``token_ids``, ``segment_ids``, ``padding_mask``; outputs
    ``{task.name: logits/score}``) that also computes the multi-task loss correctly:

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
        sharing: ``full`` (fine-tune everything), ``frozen`` (train heads only) or ``lora``
            (low-rank adapters in the backbone, Hu et al. 2021; heads fully trained).
        lora_rank: rank of the LoRA adapters.

    Example:
        >>> model = kmtl.build_model(kmtl.load_backbone("tiny"), [kmtl.tasks.Classification("s", ["a", "b"])])
        >>> model.compile(optimizer="adam")
        >>> model.fit(train_dataset, epochs=1)
    """

    def __init__(self, encoder, tasks: Sequence, pooling: str = "mean", sharing: str = "full",
                 lora_rank: int = 8, **kwargs):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if sharing not in SHARING_MODES:
            raise ValueError(f"unknown sharing mode {sharing!r}; choose one of: {', '.join(SHARING_MODES)}")
        names = [t.name for t in tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks must be non-empty with unique names, got {names}")
        backbone = getattr(encoder, "backbone", encoder)
        if sharing == "frozen":
            backbone.trainable = False
        elif sharing == "lora":
            backbone.enable_lora(lora_rank)

        if pooling == "mean" and hasattr(backbone, "get_layer"):
            try:  # the [CLS] pooler is unused with mean pooling: keep it out of the optimizer
                backbone.get_layer("pooled_dense").trainable = False
            except ValueError:
                pass
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name)
                  for name in ("token_ids", "segment_ids", "padding_mask")}
        encoded = backbone(inputs)
        sequence = encoded["sequence_output"]
        pooled = (MaskedMeanPooling(name="mean_pooling")(sequence, inputs["padding_mask"])
                  if pooling == "mean" else encoded["pooled_output"])
        features = {"sequence": sequence, "pooled": pooled}
        outputs = {task.name: task.build_head(features) for task in tasks}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.tasks = list(tasks)
        self.encoder_spec = getattr(encoder, "spec", None)
        self.pooling, self.sharing, self.lora_rank = pooling, sharing, lora_rank
        self.task_weights = {
            t.name: keras.Variable(1.0, trainable=False, dtype="float32", name=f"loss_weight_{t.name}")
            for t in tasks
        }
        self.task_loss_trackers = {t.name: keras.metrics.Mean(name=f"{t.name}_loss") for t in tasks}

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
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        replica = tf.distribute.get_replica_context()
        total = tf.constant(0.0, tf.float32)
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
            total += tf.cast(self.task_weights[task.name], tf.float32) * tf.math.divide_no_nan(local_sum, count)
        if self.losses:
            replicas = replica.num_replicas_in_sync if replica is not None else 1
            total += tf.add_n([tf.cast(l, tf.float32) for l in self.losses]) / replicas
        return total
