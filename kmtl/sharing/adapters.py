"""Per-task bottleneck adapters in every transformer layer (Houlsby et al., ICML 2019).

Three pieces:

* `TaskAdapters`: one adapter per task at one place in the network; each example goes
  through its own task's adapter (routing by a ``task_id`` tensor), so mixed-task batches work;
* `AdaptedTransformerLayer`: a keras-hub ``TransformerEncoder`` run again with two
  `TaskAdapters` inserted, reusing (sharing) its frozen weights;
* `Adapters`: the sharing mode that freezes the backbone except its LayerNorms and re-wires
  the backbone's graph through `AdaptedTransformerLayer`\\ s.
"""

from __future__ import annotations

from typing import Annotated, Dict, List, Literal, Optional, Union

import keras
from keras import ops
from pydantic import Field

from kmtl.sharing.base import TASK_ID, Sharing, run_backbone_graph, transformer_layers
from kmtl.sharing.task_relation import (
    DEFAULT_RELATION_WEIGHT,
    ONE_TASK,
    TaskRelation,
    check_relation_options,
    related_outputs,
)

DEFAULT_SIZE = 64


@keras.saving.register_keras_serializable(package="kmtl")
class TaskAdapters(keras.layers.Layer):
    """One bottleneck adapter per task, chosen per example: ``x + up_t(act(down_t(x)))``.

    ``down_t`` projects the hidden size ``d`` to ``size`` (``m`` in the paper), ``up_t`` back
    to ``d``; ``t`` is the example's task id. The weights of all tasks live in four variables
    with a leading task axis (``down_kernel`` ``[tasks, d, m]``, ``down_bias`` ``[tasks, m]``,
    ``up_kernel`` ``[tasks, m, d]``, ``up_bias`` ``[tasks, d]``); slice ``t`` belongs to task
    ``t`` only: a task's loss reaches no other slice. Routing multiplies a one-hot of
    ``task_id`` with the weights, so gradients are dense tensors and the selection is exact.
    A task id outside ``[0, tasks)`` gets no adapter (the identity).

    Initialisation is near-identity, as in the paper: ``down`` from a truncated normal with
    standard deviation ``init_stddev`` (1e-2), ``up`` and the biases zero, so a fresh adapter
    returns its input exactly and training starts from the pretrained network.

    Args:
        num_tasks: number of tasks (adapters).
        size: bottleneck width ``m``.
        activation: the non-linearity between the projections: ``gelu_approximate`` (the tanh
            GELU of BERT's feed-forward layers; exact ``gelu`` does not convert to ONNX) or
            any Keras activation name.
        init_stddev: standard deviation of the down-projection's initial weights.

    Example:
        >>> adapters = TaskAdapters(num_tasks=3, size=16, name="attention_adapter")
        >>> y = adapters(hidden, task_id=tf.constant([0, 2]))     # hidden: [2, length, d]
    """

    parameter_part = "adapters"  # kmtl.sharing.trainable_parameter_counts
    task_specific = True  # per-task weights: left out of kmtl.sharing.counts.shared_variables
    rows_by_task = True  # every weight is [tasks, ...] in model.tasks' order (kmtl.sharing.counts.task_rows)

    def __init__(self, num_tasks: int, size: int = DEFAULT_SIZE, activation: str = "gelu_approximate",
                 init_stddev: float = 1e-2, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.size = int(size)
        self.activation_name = activation
        self.activation = _activation(activation)
        self.init_stddev = float(init_stddev)

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        tasks, size = self.num_tasks, self.size
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=(tasks, hidden, size),
            initializer=keras.initializers.TruncatedNormal(stddev=self.init_stddev))
        self.down_bias = self.add_weight(name="down_bias", shape=(tasks, size), initializer="zeros")
        self.up_kernel = self.add_weight(name="up_kernel", shape=(tasks, size, hidden), initializer="zeros")
        self.up_bias = self.add_weight(name="up_bias", shape=(tasks, hidden), initializer="zeros")

    def call(self, inputs, task_id):
        dtype = inputs.dtype
        route = ops.one_hot(ops.cast(task_id, "int32"), self.num_tasks, dtype=dtype)  # [batch, tasks]
        down = ops.einsum("bt,thm->bhm", route, ops.cast(self.down_kernel, dtype))
        up = ops.einsum("bt,tmh->bmh", route, ops.cast(self.up_kernel, dtype))
        down_bias = ops.matmul(route, ops.cast(self.down_bias, dtype))[:, None, :]
        up_bias = ops.matmul(route, ops.cast(self.up_bias, dtype))[:, None, :]
        hidden = self.activation(ops.einsum("blh,bhm->blm", inputs, down) + down_bias)
        return inputs + (ops.einsum("blm,bmh->blh", hidden, up) + up_bias)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "size": self.size,
                       "activation": self.activation_name,
                       "init_stddev": self.init_stddev})
        return config


@keras.saving.register_keras_serializable(package="kmtl")
class AdaptedTransformerLayer(keras.layers.Layer):
    """A keras-hub ``TransformerEncoder`` with per-task adapters, as in Houlsby et al. 2019, Fig. 2.

    Runs the wrapped layer's own sublayers (their weights are shared, not copied) in the
    order of ``TransformerEncoder.call`` (keras-hub 0.32), with an adapter after the
    attention output projection (and its dropout) and one after the feed-forward output
    projection, each before the residual connection and the LayerNorm::

        x = LayerNorm(x + adapter_attention(Dropout(Attention(x))))
        x = LayerNorm(x + adapter_feedforward(Dropout(Dense_out(Dense_in(x)))))

    (pre-norm layers, ``normalize_first=True``, get the adapters at the same places.) With
    every adapter at the identity (zero up-projection) it returns exactly what the wrapped
    layer returns.

    With a ``relation`` (`kmtl.sharing.TaskRelation`; `Adapters` gives the top layer one),
    training runs the batch through every task's adapters, and the relation's penalty pulls
    the tasks' mean-pooled outputs together (`kmtl.sharing.task_relation.related_outputs`);
    each example still gets its own task's output. Inference is unchanged.

    Args:
        encoder: a built ``keras_hub.layers.TransformerEncoder``.
        num_tasks: number of tasks.
        size: adapter bottleneck width.
        relation: an optional `TaskRelation` over this layer's per-task outputs.
    """

    def __init__(self, encoder, num_tasks: int, size: int = DEFAULT_SIZE, relation: Optional[TaskRelation] = None,
                 **kwargs):
        kwargs.setdefault("name", f"{encoder.name}_adapted")
        kwargs.setdefault("dtype", encoder.dtype_policy)
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_tasks, self.size = int(num_tasks), int(size)
        self.attention_adapter = TaskAdapters(num_tasks, size, dtype=self.dtype_policy, name="attention_adapter")
        self.feedforward_adapter = TaskAdapters(num_tasks, size, dtype=self.dtype_policy, name="feedforward_adapter")
        self.relation = relation

    @property
    def logged_values(self):
        """The relation's ``R`` entries (`TaskRelation.logged_values`); ``None`` without one, so
        `kmtl.MultiTaskModel` logs only the layer that has a relation."""
        return None if self.relation is None else self.relation.logged_values

    @property
    def task_names(self):
        """The tasks' names (the relation's log names); `kmtl.MultiTaskModel` sets them."""
        return None if self.relation is None else self.relation.task_names

    @task_names.setter
    def task_names(self, names):
        if self.relation is not None:
            self.relation.task_names = names

    def build(self, input_shape):
        self.attention_adapter.build(input_shape)
        self.feedforward_adapter.build(input_shape)

    def call(self, inputs, padding_mask=None, attention_mask=None, task_id=None, training=None):
        if task_id is None:
            raise ValueError(f"{self.name} routes examples through per-task adapters: pass task_id")
        if not (training and self.relation is not None and padding_mask is not None):
            return self._run(inputs, padding_mask, attention_mask, task_id, training)
        return related_outputs(
            lambda t: self._run(inputs, padding_mask, attention_mask, ops.full_like(task_id, t), training),
            self.num_tasks, padding_mask, task_id, self.relation, training)

    def _run(self, inputs, padding_mask, attention_mask, task_id, training):
        from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask

        enc = self.encoder
        mask = merge_padding_and_attention_mask(inputs, padding_mask, attention_mask)
        x = inputs
        residual = x
        if enc.normalize_first:
            x = enc._self_attention_layer_norm(x)
        x = enc._self_attention_layer(query=x, value=x, attention_mask=mask, training=training)
        x = enc._self_attention_dropout(x, training=training)
        x = self.attention_adapter(x, task_id=task_id)
        x = x + residual
        if not enc.normalize_first:
            x = enc._self_attention_layer_norm(x)

        residual = x
        if enc.normalize_first:
            x = enc._feedforward_layer_norm(x)
        x = enc._feedforward_intermediate_dense(x)
        x = enc._feedforward_output_dense(x)
        x = enc._feedforward_dropout(x, training=training)
        x = self.feedforward_adapter(x, task_id=task_id)
        x = x + residual
        if not enc.normalize_first:
            x = enc._feedforward_layer_norm(x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        """The wrapped layer is serialized whole: a layer rebuilt from this config owns a copy
        of it, no longer shared with a backbone. A `kmtl.MultiTaskModel` does not rebuild its
        adapted layers from their configs: its ``from_config`` re-wires a rebuilt backbone
        (`Adapters.encode`), so the sharing holds after ``keras.saving.load_model``."""
        config = super().get_config()
        config.update({"encoder": keras.saving.serialize_keras_object(self.encoder),
                       "num_tasks": self.num_tasks, "size": self.size,
                       "relation": None if self.relation is None else keras.saving.serialize_keras_object(self.relation)})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("relation") is not None:
            config["relation"] = keras.saving.deserialize_keras_object(config["relation"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kmtl")
class Adapters(Sharing):
    """Per-task bottleneck adapters: Houlsby et al., "Parameter-Efficient Transfer Learning
    for NLP", ICML 2019.

    Every transformer layer of the backbone gets two adapters per task (after the attention
    output projection and after the feed-forward output projection, before each residual
    connection and LayerNorm); the backbone's weights are frozen except its LayerNorms, which
    train (shared by the tasks), as in the paper. Adapters and heads train. Each example goes
    through its own task's adapters, so joint (mixed-task) batches work: the model gets a
    fourth input ``task_id`` (int32 ``[batch]``, the index of the example's task in
    ``model.tasks``) that `kmtl.data` pipelines and the exported serving graph fill in.

    Per task and transformer layer the adapters add ``2 * (2 * d * m + d + m)`` parameters
    (``d`` hidden size, ``m`` = ``size``): about 0.4 % of MiniLM-L6 per task at ``size=16``.

    Needs a keras-hub backbone built from ``keras_hub.layers.TransformerEncoder`` layers
    (BERT and its relatives); its functional graph is run again with each transformer layer
    replaced by an `AdaptedTransformerLayer` that shares its weights.

    Optionally, the task-relation regulariser (`TaskRelation`, as in `SoftSharing`:
    ``relation_weight * sum_ij R_ij |f_i - f_j|^2``) on the top transformer layer: in training
    it runs the batch through that layer with every task's adapters, ``f_t`` being the
    mean-pooled output with task ``t``'s, and pulls related tasks' adapters towards each other;
    ``R`` is ``given`` (``relation_matrix``) or ``learned`` (Zhang & Yeung, UAI 2010). The top
    layer then costs ``tasks`` times as much per training step; the layers below, the heads and
    inference do not change. (Features through every task's adapters in *every* layer would
    cost ``tasks`` whole encoder passes a step.)

    Args:
        size: adapter bottleneck width ``m`` (the paper tries 8, 64 and 256).
        relation: ``none``, ``given`` or ``learned`` (YAML ``task_relation``).
        relation_matrix: ``R`` for ``task_relation: given``: ``{task: {task: weight}}`` or a
            list of lists in the tasks' order.
        relation_weight: the relation penalty's factor.

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="adapters", adapter_size=64)
        >>> sorted(model.input)                         # the routing input comes with the mode
        ['padding_mask', 'segment_ids', 'task_id', 'token_ids']
        >>> model.fit(kmtl.data.mixture(tasks, train, pre, granularity="joint"), epochs=3)
    """

    name = "adapters"
    choice_order = 3  # position in lists of choices (`kmtl.registry`)
    config_keys = {"size": "adapter_size", "relation": "task_relation"}  # YAML keys
    routes_by_task = True

    def __init__(self, size: Annotated[int, Field(ge=1)] = DEFAULT_SIZE,
                 relation: Literal["none", "given", "learned"] = "none",
                 relation_matrix: Optional[Union[Dict[str, Dict[str, float]], List[List[float]]]] = None,
                 relation_weight: Annotated[float, Field(ge=0)] = DEFAULT_RELATION_WEIGHT):
        if int(size) < 1:
            raise ValueError(f"adapter size must be a positive integer, got {size!r}")
        check_relation_options(relation, relation_matrix, relation_weight)
        self.size = int(size)
        self.relation, self.relation_matrix, self.relation_weight = relation, relation_matrix, float(relation_weight)
        self._num_tasks = None

    def for_one_task(self, task: str):
        """A single-task baseline relates to no other task: ``task_relation: none``."""
        return self.name, (dict(ONE_TASK) if self.relation != "none" else {})

    def prepare(self, backbone, num_tasks: int) -> None:
        transformer_layers(backbone, self.name)  # fail early on backbones without keras-hub transformer layers
        if self.relation != "none" and num_tasks < 2:
            raise ValueError(f"task_relation: {self.relation} relates tasks to each other: it needs at least two tasks")
        backbone.trainable = False
        for layer in backbone._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.LayerNormalization):
                layer.trainable = True
        self._num_tasks = int(num_tasks)

    def encode(self, backbone, inputs: dict) -> dict:
        if self._num_tasks is None:
            raise RuntimeError("call prepare(backbone, num_tasks) before encode")
        task_id = inputs[TASK_ID]
        layers = transformer_layers(backbone, self.name)
        relation = None
        if self.relation != "none":  # a {task: {task: weight}} matrix is read when the model names the tasks
            matrix = self.relation_matrix if self.relation == "given" else None
            relation = TaskRelation(self._num_tasks, matrix, self.relation_weight, name="task_relation")
        adapted = {id(layer): AdaptedTransformerLayer(layer, self._num_tasks, self.size,
                                                      relation=relation if layer is layers[-1] else None)
                   for layer in layers}

        def operation_fn(operation):
            layer = adapted.get(id(operation))
            if layer is None:
                return operation
            return lambda *args, **kwargs: layer(*args, task_id=task_id, **kwargs)

        # Run the backbone's own functional graph on our inputs, with each transformer layer
        # swapped for its adapted twin (Keras 3.15 Function._run_through_graph).
        return run_backbone_graph(backbone, inputs, operation_fn)

    def get_config(self):
        if self.relation == "none":  # as before the relation existed: run.json and kmtl.json stay as they were
            return {"size": self.size}
        return {"size": self.size, "relation": self.relation, "relation_matrix": self.relation_matrix,
                "relation_weight": self.relation_weight}


def _activation(name: str):
    if name == "gelu_approximate":
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)

