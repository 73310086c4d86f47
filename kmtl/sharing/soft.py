"""Soft parameter sharing: each task its own copy of the encoder's top layers, pulled together.

Three pieces:

* `TaskTransformerLayer`: a keras-hub ``TransformerEncoder`` layer with one copy of its weights
  per task (stacked on a leading task axis); each example runs through its own task's copy;
* `TaskLayerCopies`: the top ``k`` such layers, the L2 pull between the copies (``add_loss``)
  and, optionally, the `kmtl.sharing.task_relation.TaskRelation` penalty on their outputs;
* `SoftSharing`: the sharing mode (``soft``) that re-wires the backbone's graph through them.
"""

from __future__ import annotations

from typing import Annotated, Dict, List, Literal, Optional, Sequence, Union

import keras
import tensorflow as tf
from keras import ops
from pydantic import Field

from kmtl.activations import Float32Activation
from kmtl.dense import inference_dense
from kmtl.sharing.base import TASK_ID, Sharing, run_backbone_graph, transformer_layers
from kmtl.sharing.task_relation import (
    DEFAULT_RELATION_WEIGHT,
    TaskRelation,
    check_relation_options,
    related_outputs,
)

DEFAULT_TOP_LAYERS = 3  # issue 17: Δm +2.03 % over 3 seeds against +1.01 % for 2 (README "Does multi-task help?")
DEFAULT_PENALTY = 1e-3
TARGETS = ("mean", "pairwise")

# the stacked weights of one layer: name -> (shape from d hidden, n heads, h head size, f
# intermediate size; initializer of a copy built without a pretrained layer)
_ATTENTION = ("query", "key", "value")


def _shapes(d: int, n: int, h: int, f: int) -> Dict[str, tuple]:
    shapes = {}
    for name in _ATTENTION:
        shapes[f"{name}_kernel"], shapes[f"{name}_bias"] = (d, n, h), (n, h)
    shapes.update({
        "attention_output_kernel": (n, h, d), "attention_output_bias": (d,),
        "attention_norm_gamma": (d,), "attention_norm_beta": (d,),
        "intermediate_kernel": (d, f), "intermediate_bias": (f,),
        "output_kernel": (f, d), "output_bias": (d,),
        "feedforward_norm_gamma": (d,), "feedforward_norm_beta": (d,),
    })
    return shapes


def _pretrained(encoder) -> Dict[str, object]:
    """The keras-hub 0.32 ``TransformerEncoder``'s variables under `_shapes`' names."""
    attention = encoder._self_attention_layer
    dense = {"query": attention._query_dense, "key": attention._key_dense, "value": attention._value_dense,
             "attention_output": attention._output_dense,
             "intermediate": encoder._feedforward_intermediate_dense, "output": encoder._feedforward_output_dense}
    found = {}
    for name, layer in dense.items():
        found[f"{name}_kernel"], found[f"{name}_bias"] = layer.kernel, layer.bias
    for name, layer in (("attention_norm", encoder._self_attention_layer_norm),
                        ("feedforward_norm", encoder._feedforward_layer_norm)):
        found[f"{name}_gamma"], found[f"{name}_beta"] = layer.gamma, layer.beta
    return found


def encoder_values(copies: Optional["TaskTransformerLayer"], encoder, task: Optional[int] = None) -> Dict[str, object]:
    """``{variable path: NumPy value}`` that turn the keras-hub ``TransformerEncoder`` ``encoder``
    into copy ``task`` of ``copies`` (``task=None``: the copies' mean): what a model without soft
    sharing starting from a soft-shared run (`kmtl.training.warm_start`) puts in the layer the
    copies replaced. ``copies=None``: the encoder's own values, keyed by `TaskTransformerLayer`'s
    weight names instead (what each copy of a soft model starting from such a run gets).

    Example:
        >>> encoder_values(copies, backbone.transformer_layers[-1], task=0)["transformer_layer_1/..."].shape
    """
    values = {}
    for name, variable in _pretrained(encoder).items():
        if copies is None:
            values[name] = ops.convert_to_numpy(ops.cast(variable, "float32"))
            continue
        stacked = ops.convert_to_numpy(ops.cast(copies.copies[name], "float32"))
        values[variable.path] = stacked[task] if task is not None else stacked.mean(axis=0)
    return values


@keras.saving.register_keras_serializable(package="kmtl")
class TaskTransformerLayer(keras.layers.Layer):
    """A keras-hub ``TransformerEncoder`` with one copy of its weights per task.

    The computation is ``TransformerEncoder.call``'s (keras-hub 0.32: self-attention, dropout,
    residual, LayerNorm, feed-forward, dropout, residual, LayerNorm; pre-norm with
    ``normalize_first``); every weight, LayerNorms included, has a leading task axis.
    `from_encoder` fills every copy with a built layer's (pretrained) weights, so at the start
    each copy returns exactly what that layer returns.

    Two ways to call it:

    * ``task=<int tensor [batch]>``: each example through its own task's copy. The rows are
      grouped by task (``tf.dynamic_partition``), each group runs through its copy with plain
      matrix products and the outputs are put back in the batch's order
      (``tf.dynamic_stitch``): the cost of one layer on the whole batch, and a task's loss
      reaches only its own slice. Ids must lie in ``[0, tasks)``. Inside an XLA-compiled
      function (``jit_compile``), where shapes must be static, the copies are picked instead by
      multiplying a one-hot of the ids with the stacked weights (``batch x layer weights`` of
      memory for per-example weights; ids outside the range get all-zero weights).
    * ``task=<python int>``: every example through that one copy (plain matrix products).

    Args:
        num_tasks: number of copies.
        num_heads: attention heads.
        intermediate_dim: feed-forward width.
        activation: the feed-forward activation (a Keras activation or its serialized name).
        dropout: dropout rate (attention probabilities, attention output, feed-forward output).
        layer_norm_epsilon: LayerNorm epsilon.
        normalize_first: pre-norm (``True``) or post-norm (BERT, ``False``) layer.

    Example:
        >>> copies = TaskTransformerLayer.from_encoder(backbone.transformer_layers[-1], num_tasks=3)
        >>> y = copies(hidden, padding_mask=mask, task=tf.constant([0, 2]))  # hidden: [2, length, d]
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts
    task_specific = True  # per-task copies: left out of kmtl.sharing.counts.shared_variables
    rows_by_task = True  # every weight is [tasks, ...] in model.tasks' order (kmtl.sharing.counts.task_rows)

    def __init__(self, num_tasks: int, num_heads: int, intermediate_dim: int, activation="gelu",
                 dropout: float = 0.0, layer_norm_epsilon: float = 1e-12, normalize_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.num_heads, self.intermediate_dim = int(num_tasks), int(num_heads), int(intermediate_dim)
        self.activation = keras.activations.get(activation)
        self._activation = Float32Activation(self.activation)  # float32 under mixed precision (kmtl.activations)
        self.dropout, self.layer_norm_epsilon = float(dropout), float(layer_norm_epsilon)
        self.normalize_first = bool(normalize_first)
        self.attention_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="attention_dropout")
        self.self_attention_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy,
                                                           name="self_attention_dropout")
        self.feedforward_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="feedforward_dropout")
        self.copies = {}

    @classmethod
    def from_encoder(cls, encoder, num_tasks: int, **kwargs) -> "TaskTransformerLayer":
        """``num_tasks`` copies of a built keras-hub ``TransformerEncoder`` (its weights in each)."""
        config = encoder.get_config()
        kwargs.setdefault("name", f"{encoder.name}_copies")
        kwargs.setdefault("dtype", encoder.dtype_policy)
        layer = cls(num_tasks, config["num_heads"], config["intermediate_dim"], activation=config["activation"],
                    dropout=config["dropout"], layer_norm_epsilon=config["layer_norm_epsilon"],
                    normalize_first=config["normalize_first"], **kwargs)
        weights = _pretrained(encoder)
        layer.build((None, None, int(weights["query_kernel"].shape[0])))
        for name, variable in layer.copies.items():
            value = ops.convert_to_tensor(weights[name])
            variable.assign(ops.repeat(ops.expand_dims(ops.cast(value, variable.dtype), 0), num_tasks, axis=0))
        return layer

    def build(self, input_shape):
        d = int(input_shape[-1])
        if d % self.num_heads:
            raise ValueError(f"{self.name}: hidden size {d} is not a multiple of num_heads={self.num_heads}")
        for name, shape in _shapes(d, self.num_heads, d // self.num_heads, self.intermediate_dim).items():
            initializer = ("ones" if name.endswith("gamma") else "zeros" if name.endswith(("bias", "beta"))
                           else "glorot_uniform")
            self.copies[name] = self.add_weight(name=name, shape=(self.num_tasks, *shape), initializer=initializer)
        self.built = True

    def distances(self):
        """``[tasks]``: each copy's squared L2 distance to the copies' mean, over all its weights."""
        total = 0.0
        for variable in self.copies.values():
            value = ops.cast(variable, "float32")
            offset = value - ops.mean(value, axis=0, keepdims=True)
            total = total + ops.sum(ops.reshape(ops.square(offset), (self.num_tasks, -1)), axis=1)
        return total

    def call(self, inputs, padding_mask=None, task=None, training=None):
        if task is None:
            raise ValueError(f"{self.name} holds one copy per task: pass task (an int, or a [batch] tensor of task ids)")
        if isinstance(task, int):
            return self._run(inputs, padding_mask, task, training)
        task = tf.cast(task, tf.int32)
        if _in_xla():  # static shapes: no partition; each example's weights picked by a one-hot
            return self._run(inputs, padding_mask, task, training)
        # rows grouped by task, each group through its copy (plain GEMMs), then back in order
        rows = tf.dynamic_partition(tf.range(tf.shape(inputs)[0]), task, self.num_tasks)
        parts = tf.dynamic_partition(inputs, task, self.num_tasks)
        masks = [None] * self.num_tasks if padding_mask is None else tf.dynamic_partition(padding_mask, task,
                                                                                          self.num_tasks)
        outputs = [self._run(part, mask, t, training) for t, (part, mask) in enumerate(zip(parts, masks))]
        out = tf.dynamic_stitch(rows, outputs)
        out.set_shape(inputs.shape)
        return out

    def _run(self, inputs, padding_mask, task, training):
        """The layer with copy ``task`` (an int) or, per example, with the copies a one-hot of
        ``task`` (an int tensor ``[batch]``) picks."""
        from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask

        dtype = inputs.dtype
        if isinstance(task, int):
            weights = {k: ops.cast(v[task], dtype) for k, v in self.copies.items()}
            b, per = "", (lambda bias: bias)
        else:
            route = ops.one_hot(task, self.num_tasks, dtype=dtype)  # [batch, tasks]
            weights = {k: ops.tensordot(route, ops.cast(v, dtype), axes=1) for k, v in self.copies.items()}
            b, per = "b", (lambda bias: ops.expand_dims(bias, 1))
        w = weights

        def norm(x, name):
            return (ops.layer_normalization(x, None, None, -1, self.layer_norm_epsilon) * per(w[f"{name}_gamma"])
                    + per(w[f"{name}_beta"]))

        mask = merge_padding_and_attention_mask(inputs, padding_mask, None)
        x = residual = inputs
        if self.normalize_first:
            x = norm(x, "attention_norm")
        q, k, v = (ops.einsum(f"bld,{b}dnh->blnh", x, w[f"{n}_kernel"]) + per(w[f"{n}_bias"]) for n in _ATTENTION)
        scale = 1.0 / float(int(q.shape[-1])) ** 0.5
        scores = ops.einsum("bknh,bqnh->bnqk", k, q * ops.cast(scale, dtype))
        if mask is not None:
            mask = ops.cast(mask, "bool")
            scores = ops.where(ops.expand_dims(mask, 1), scores, ops.cast(-1e9, dtype))
        probabilities = self.attention_dropout(ops.softmax(scores, axis=-1), training=training)
        context = ops.einsum("bnqk,bknh->bqnh", probabilities, v)
        x = ops.einsum(f"bqnh,{b}nhd->bqd", context, w["attention_output_kernel"]) + per(w["attention_output_bias"])
        x = self.self_attention_dropout(x, training=training) + residual
        if not self.normalize_first:
            x = norm(x, "attention_norm")

        residual = x
        if self.normalize_first:
            x = norm(x, "feedforward_norm")
        fused = (inference_dense(x, w["intermediate_kernel"], w["intermediate_bias"], self.activation)
                 if isinstance(task, int) else None)  # serving: one oneDNN op (kmtl.dense)
        x = fused if fused is not None else self._activation(
            ops.einsum(f"bld,{b}df->blf", x, w["intermediate_kernel"]) + per(w["intermediate_bias"]))
        x = ops.einsum(f"blf,{b}fd->bld", x, w["output_kernel"]) + per(w["output_bias"])
        x = self.feedforward_dropout(x, training=training) + residual
        if not self.normalize_first:
            x = norm(x, "feedforward_norm")
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "num_heads": self.num_heads,
                       "intermediate_dim": self.intermediate_dim,
                       "activation": keras.activations.serialize(self.activation), "dropout": self.dropout,
                       "layer_norm_epsilon": self.layer_norm_epsilon, "normalize_first": self.normalize_first})
        return config


@keras.saving.register_keras_serializable(package="kmtl")
class TaskLayerCopies(keras.layers.Layer):
    """The top transformer layers of a soft-shared encoder: one copy per task, pulled together.

    Runs `TaskTransformerLayer`\\ s one after the other, each example through its own task's
    copies (``task_id``). In training it adds ``penalty * sum_t |theta_t - theta_mean|^2``
    over all the copies' weights (``target="mean"``), or ``penalty * sum_{s<t} |theta_s -
    theta_t|^2`` (``"pairwise"``, which equals ``tasks`` times the former). With a
    ``relation`` (`TaskRelation`) it also runs the whole batch through every task's copies,
    mean-pools each over the padding mask into ``f_t`` and adds the relation penalty; the
    training step then costs ``tasks`` times the top layers (inference never does this).

    ``logged_values()``: ``<task>_copy_distance`` (``|theta_t - theta_mean|^2``) per task,
    and the relation's ``<task_i>_relation_<task_j>``.

    Args:
        layers: the `TaskTransformerLayer`\\ s, bottom first.
        penalty: the pull's factor ``lambda`` (0: independent copies).
        target: ``mean`` or ``pairwise``.
        relation: a `TaskRelation`, or ``None``.
        task_names: names for the log figures (default ``task0``...).

    Example:
        >>> top = TaskLayerCopies([TaskTransformerLayer.from_encoder(layer, 3)], penalty=1e-3)
        >>> y = top(hidden, padding_mask=mask, task_id=tf.constant([0, 2]), training=True)
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts

    def __init__(self, layers: Sequence[TaskTransformerLayer], penalty: float = DEFAULT_PENALTY, target: str = "mean",
                 relation: Optional[TaskRelation] = None, task_names: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        if not layers:
            raise ValueError("TaskLayerCopies needs at least one TaskTransformerLayer")
        self.copied_layers = list(layers)
        self.num_tasks = self.copied_layers[0].num_tasks
        self.penalty, self.target = float(penalty), _choice(target, TARGETS, "soft_target")
        self.relation = relation
        self.task_names = task_names

    @property
    def task_names(self) -> List[str]:
        """The task names of the log figures (`kmtl.MultiTaskModel` sets them; the relation gets them too)."""
        return list(self._names)

    @task_names.setter
    def task_names(self, names):
        self._names = tuple(names) if names else tuple(f"task{i}" for i in range(self.num_tasks))
        if self.relation is not None:
            self.relation.task_names = names

    def build(self, input_shape):
        for layer in self.copied_layers:
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def distances(self):
        """``[tasks]``: ``|theta_t - theta_mean|^2`` summed over the layers."""
        return sum(layer.distances() for layer in self.copied_layers)

    def pull(self):
        """The soft-sharing penalty (without the relation's)."""
        total = ops.sum(self.distances())
        return self.penalty * (self.num_tasks if self.target == "pairwise" else 1) * total

    def run(self, x, padding_mask, task, training=None):
        """The layers for ``task`` (an int, or the per-example ids)."""
        for layer in self.copied_layers:
            x = layer(x, padding_mask=padding_mask, task=task, training=training)
        return x

    def for_task(self, task: int):
        """What runs in this layer's place to compute task ``task``'s outputs for a whole batch
        (`kmtl.model.per_task.run_tasks`: serving, ``predict`` without ``task_id``): every example
        through that task's copies, with plain matrix products; no penalty (inference). The
        layers below run once for all tasks."""
        def run(inputs, padding_mask=None, task_id=None, training=None):
            return self.run(inputs, padding_mask, int(task), training)

        return run

    def call(self, inputs, padding_mask=None, task_id=None, training=None):
        if task_id is None:
            raise ValueError(f"{self.name}: soft sharing routes examples by task: pass task_id")
        if training and self.penalty > 0:
            self.add_loss(self.pull())
        if not (training and self.relation is not None):
            return self.run(inputs, padding_mask, task_id, training)
        return related_outputs(lambda t: self.run(inputs, padding_mask, t, training), self.num_tasks, padding_mask,
                               task_id, self.relation, training)

    def logged_values(self) -> Dict[str, object]:
        """Per-task copy distances and, with a relation, its entries."""
        distances = self.distances()
        values = {f"{name}_copy_distance": distances[t] for t, name in enumerate(self.task_names)}
        if self.relation is not None:
            values.update(self.relation.logged_values())
        return values

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"layers": [keras.saving.serialize_keras_object(layer) for layer in self.copied_layers],
                       "penalty": self.penalty, "target": self.target,
                       "relation": None if self.relation is None else keras.saving.serialize_keras_object(self.relation),
                       "task_names": list(self.task_names)})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(layer) for layer in config["layers"]]
        if config.get("relation") is not None:
            config["relation"] = keras.saving.deserialize_keras_object(config["relation"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kmtl")
class SoftSharing(Sharing):
    """Soft parameter sharing: Duong et al., "Low Resource Dependency Parsing: Cross-lingual
    Parameter Sharing in a Neural Network Parser", ACL 2015; Yang & Hospedales, "Trace Norm
    Regularised Deep Multi-Task Learning", ICLR 2017 workshop.

    Each task gets its own copy of the backbone's top ``top_layers`` transformer layers, all
    starting from the pretrained weights; the layers below (and the embeddings) are shared
    and fine-tuned by every task. An L2 penalty ``penalty * sum_t |theta_t - theta_mean|^2``
    (``target="mean"``; ``"pairwise"`` sums ``|theta_s - theta_t|^2`` over pairs as Duong et
    al. do, which is ``tasks`` times as much) pulls the copies towards each other: ``0``
    gives independent top layers, a large one hard sharing. Each example runs through its
    own task's copies (the ``task_id`` input), so joint batches work; `TaskTransformerLayer`
    picks each example's weights by one-hot routing, one pass at the cost of one copy.

    Optionally, the task-relation regulariser (`TaskRelation`: ``relation_weight * sum_ij R_ij
    |f_i - f_j|^2`` over each task's mean-pooled output for the batch) with ``R`` ``given``
    (``relation_matrix``: ``{task: {task: weight}}`` or a list of lists in the tasks' order)
    or ``learned`` (Zhang & Yeung, UAI 2010). It runs the batch through every task's copies
    in training: the top layers then cost ``tasks`` times as much per step.

    The pretrained top layers leave the model (their weights live on in every copy): a model
    serves ``(tasks - 1) * top_layers`` layers more than the backbone has. With MiniLM-L6
    (about 1.75 M parameters per layer), 3 tasks and the default 3 layers that is 10.5 M more
    (22.7 M -> 33.2 M), all trained; with all 6 layers, 21.0 M more. The top layers are the
    most task-specific ones, hence the default: on four tasks over 3 seeds the top 3 gave Δm
    +2.03 % against single-task models, the top 2 +1.01 % (README "Does multi-task help?"),
    for 13 % more serving time (4 tasks, batch 32: `benchmarks/routed_serving.py`).

    Args:
        top_layers: how many of the top transformer layers each task copies (YAML
            ``soft_top_layers``; at most the backbone's layer count); default: the top 3, or
            every layer of a backbone with fewer.
        penalty: the pull's factor (``soft_penalty``).
        target: ``mean`` or ``pairwise`` (``soft_target``).
        relation: ``none``, ``given`` or ``learned`` (``task_relation``).
        relation_matrix: ``R`` for ``task_relation: given`` (``relation_matrix``).
        relation_weight: the relation penalty's factor (``relation_weight``).

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="soft", soft_top_layers=2, soft_penalty=1e-3,
        ...                          task_relation="learned")
        >>> sorted(model.input)
        ['padding_mask', 'segment_ids', 'task_id', 'token_ids']
        >>> model.fit(kmtl.data.mixture(tasks, train, pre, granularity="joint"), epochs=3)
    """

    name = "soft"
    choice_order = 6  # position in lists of choices (`kmtl.registry`)
    config_keys = {"top_layers": "soft_top_layers", "penalty": "soft_penalty", "target": "soft_target",
                   "relation": "task_relation"}  # YAML keys
    routes_by_task = True

    def __init__(self, top_layers: Optional[Annotated[int, Field(ge=1)]] = None,
                 penalty: Annotated[float, Field(ge=0)] = DEFAULT_PENALTY,
                 target: Literal["mean", "pairwise"] = "mean",
                 relation: Literal["none", "given", "learned"] = "none",
                 relation_matrix: Optional[Union[Dict[str, Dict[str, float]], List[List[float]]]] = None,
                 relation_weight: Annotated[float, Field(ge=0)] = DEFAULT_RELATION_WEIGHT):
        if top_layers is not None and (isinstance(top_layers, bool) or int(top_layers) != top_layers
                                       or int(top_layers) < 1):
            raise ValueError(f"soft_top_layers must be a positive integer, got {top_layers!r}")
        if not float(penalty) >= 0:
            raise ValueError(f"soft_penalty must be >= 0, got {penalty!r}")
        check_relation_options(relation, relation_matrix, relation_weight)
        self.top_layers = None if top_layers is None else int(top_layers)
        self.penalty, self.relation_weight = float(penalty), float(relation_weight)
        self.target = _choice(target, TARGETS, "soft_target")
        self.relation = relation
        self.relation_matrix = relation_matrix
        self._num_tasks = None

    def for_one_task(self, task: str):
        """A single-task baseline is plain fine-tuning, ``full``: with one task there is one copy
        of the top layers, the pull towards the copies' mean (or between pairs) is zero and no
        task relates to another, so the model computes what ``full`` computes (the one-hot
        gather of a single copy picks its weights exactly; tests/test_sharing_soft.py checks
        it). Naming it ``full`` lets every mode's comparison share one cached baseline."""
        return "full", {}

    def prepare(self, backbone, num_tasks: int) -> None:
        found = _transformer_layers(backbone)
        if self.top_layers is not None and self.top_layers > len(found):
            raise ValueError(f"soft_top_layers={self.top_layers} but the backbone has {len(found)} transformer layers; "
                             f"set sharing.soft_top_layers to at most {len(found)}")
        if self.relation != "none" and num_tasks < 2:
            raise ValueError(f"task_relation: {self.relation} relates tasks to each other: it needs at least two tasks")
        backbone.trainable = True
        self._num_tasks = int(num_tasks)

    def encode(self, backbone, inputs: dict) -> dict:
        if self._num_tasks is None:
            raise RuntimeError("call prepare(backbone, num_tasks) before encode")
        found = _transformer_layers(backbone)
        top = found[-min(self.top_layers or DEFAULT_TOP_LAYERS, len(found)):]
        relation = None
        if self.relation != "none":  # a {task: {task: weight}} matrix is read when the model names the tasks
            matrix = self.relation_matrix if self.relation == "given" else None
            relation = TaskRelation(self._num_tasks, matrix, self.relation_weight, name="task_relation")
        copies = TaskLayerCopies([TaskTransformerLayer.from_encoder(layer, self._num_tasks) for layer in top],
                                 self.penalty, self.target, relation, name="soft_shared_top")
        task_id = inputs[TASK_ID]
        first, skipped = id(top[0]), {id(layer) for layer in top[1:]}

        def operation_fn(operation):
            if id(operation) == first:
                return lambda x, padding_mask=None, **kwargs: copies(x, padding_mask=padding_mask, task_id=task_id)
            if id(operation) in skipped:  # already run inside `copies`
                return lambda x, **kwargs: x
            return operation

        # Run the backbone's own functional graph on our inputs with the top layers swapped for
        # the per-task copies (Keras 3.15 Function._run_through_graph), as `Adapters` does.
        return run_backbone_graph(backbone, inputs, operation_fn)

    def get_config(self):
        return {"top_layers": self.top_layers, "penalty": self.penalty, "target": self.target,
                "relation": self.relation, "relation_matrix": self.relation_matrix,
                "relation_weight": self.relation_weight}


def _in_xla() -> bool:
    """Whether ops are being traced into an XLA-compiled function (``tf.function(jit_compile=True)``,
    Keras' ``jit_compile``), where ``tf.dynamic_partition``'s data-dependent shapes cannot go.
    TF's own private check: there is no public one."""
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _choice(value, choices, key: str) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of: {', '.join(choices)}; got {value!r}")
    return value


def _transformer_layers(backbone):
    """The backbone's keras-hub ``TransformerEncoder`` layers, bottom first; they must run one
    after the other (each reads the previous one's output), as in BERT."""
    layers = transformer_layers(backbone, SoftSharing.name)
    for below, above in zip(layers, layers[1:]):
        if len(above._inbound_nodes) != 1 or above._inbound_nodes[0].input_tensors[0] is not below.output:
            raise ValueError(f"sharing mode 'soft' needs the transformer layers in a chain; {above.name} does not "
                             f"read {below.name}'s output")
    return layers
