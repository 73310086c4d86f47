"""Multi-gate Mixture-of-Experts over the encoder's top transformer layers (Ma et al., KDD 2018).

Two pieces:

* `MultiGateExperts`: ``E`` expert stacks of transformer layers shared by all tasks and one
  softmax gate per task; each example is mixed by its own task's gate (routing by
  ``task_id``);
* `MMoE`: the sharing mode that runs the backbone's lower layers once and puts the experts
  in place of its top layers.
"""

from __future__ import annotations

from typing import Annotated, Dict, List, Optional, Sequence

import keras
from keras import ops
from pydantic import Field

from kmtl.sharing.base import TASK_ID, Sharing, run_backbone_graph, transformer_layers


@keras.saving.register_keras_serializable(package="kmtl")
class MultiGateExperts(keras.layers.Layer):
    """Experts shared by the tasks, mixed per example by its task's gate:
    ``y = sum_e softmax(x_pooled @ W_t + b_t)_e * expert_e(x)``.

    Each expert is a stack of keras-hub ``TransformerEncoder`` layers built from
    ``layer_configs`` (`MMoE` copies the backbone's top layers into every expert). The gate of
    task ``t`` reads the masked mean of the input hidden states (what the shared layers below
    the experts say about the whole example) and gives a softmax over the experts; the gates of
    all tasks live in two variables with a leading task axis, ``gate_kernel``
    ``[tasks, hidden, experts]`` (truncated normal, ``gate_stddev``) and ``gate_bias``
    ``[tasks, experts]`` (zeros); row ``t`` belongs to task ``t`` only. Routing multiplies a
    one-hot of ``task_id`` with them, so a task's loss reaches no other task's gate. A task id
    outside ``[0, tasks)`` gets equal gates.

    Every expert runs on every example (a dense mixture, as in the paper); while training,
    each task's mean gate over its examples in the batch is kept in the non-trainable
    ``gate_means`` ``[tasks, experts]`` (a task absent from the batch keeps its last value;
    under a distribution strategy the replicas' values are averaged) and logged as
    ``<task>_gate_<e>`` (`logged_values`).

    Call args:
        inputs: ``[batch, length, hidden]`` hidden states of the layers below the experts.
        padding_mask: ``[batch, length]``, 1 for real tokens.
        task_id: int ``[batch]``.

    Args:
        num_tasks: number of tasks (gates).
        num_experts: number of experts ``E``.
        layer_configs: ``TransformerEncoder.get_config()`` of each layer of an expert, bottom
            first.
        gate_stddev: standard deviation of the gates' initial kernel.
        task_names: names of the tasks, for the logged figures; default ``task0``, ``task1``...
            (`kmtl.MultiTaskModel` sets the real ones).

    Example:
        >>> layer = backbone.get_layer("transformer_layer_5")
        >>> moe = MultiGateExperts(num_tasks=3, num_experts=4, layer_configs=[layer.get_config()])
        >>> y = moe(hidden, padding_mask=mask, task_id=tf.constant([0, 2]))   # hidden: [2, length, d]
        >>> moe.initialize_from([layer])        # every expert a copy of the pretrained layer
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts

    def __init__(self, num_tasks: int, num_experts: int, layer_configs: Sequence[Dict], gate_stddev: float = 0.02,
                 task_names: Optional[Sequence[str]] = None, **kwargs):
        from keras_hub.layers import TransformerEncoder

        super().__init__(**kwargs)
        self.num_tasks, self.num_experts = int(num_tasks), int(num_experts)
        self.layer_configs = [dict(c) for c in layer_configs]
        self.gate_stddev = float(gate_stddev)
        self.task_names = tuple(task_names) if task_names else tuple(f"task{t}" for t in range(self.num_tasks))
        # expert e's layers are expert_layers[e * depth : (e + 1) * depth], bottom first
        self.expert_layers = [TransformerEncoder.from_config({**config, "name": f"expert_{e}_{config['name']}"})
                              for e in range(self.num_experts) for config in self.layer_configs]

    @property
    def depth(self) -> int:
        """Transformer layers per expert."""
        return len(self.layer_configs)

    def experts(self) -> List[List[keras.layers.Layer]]:
        """The experts' layers: ``experts()[e]`` is expert ``e``'s stack, bottom first."""
        d = self.depth
        return [self.expert_layers[e * d:(e + 1) * d] for e in range(self.num_experts)]

    def build(self, inputs_shape, padding_mask_shape=None, task_id_shape=None):
        hidden = int(inputs_shape[-1])
        for layer in self.expert_layers:
            layer.build(inputs_shape)
        # the gates compute in float32 whatever the policy (bfloat16 serving copies too)
        self.gate_kernel = self.add_weight(
            name="gate_kernel", shape=(self.num_tasks, hidden, self.num_experts), autocast=False, dtype="float32",
            initializer=keras.initializers.TruncatedNormal(stddev=self.gate_stddev))
        self.gate_bias = self.add_weight(name="gate_bias", shape=(self.num_tasks, self.num_experts),
                                         initializer="zeros", autocast=False, dtype="float32")
        self.gate_means = self.add_weight(
            name="gate_means", shape=(self.num_tasks, self.num_experts), trainable=False, autocast=False, dtype="float32",
            initializer=keras.initializers.Constant(1.0 / self.num_experts), aggregation="mean")

    rows_by_task = True  # its task_specific_weights are [tasks, ...] in model.tasks' order (counts.task_rows)

    def task_specific_weights(self) -> list:
        """The per-task gates (the experts are shared): `kmtl.sharing.counts.shared_variables`."""
        return [self.gate_kernel, self.gate_bias, self.gate_means]

    def initialize_from(self, layers: Sequence[keras.layers.Layer]) -> None:
        """Give every expert the weights of ``layers`` (the backbone's top layers, bottom first):
        with identical experts the mixture returns exactly what those layers return."""
        if len(layers) != self.depth:
            raise ValueError(f"{self.name}: experts have {self.depth} layers, got {len(layers)} to copy")
        for expert in self.experts():
            for mine, source in zip(expert, layers):
                mine.set_weights(source.get_weights())

    def gates(self, inputs, padding_mask, task_id):
        """``[batch, experts]``: each example's softmax over the experts, from its task's gate."""
        if padding_mask is None:
            mask = ops.ones(ops.shape(inputs)[:2] + (1,), "float32")
        else:
            mask = ops.cast(ops.expand_dims(padding_mask, -1), "float32")
        pooled = ops.sum(ops.cast(inputs, "float32") * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
        route = ops.one_hot(ops.cast(task_id, "int32"), self.num_tasks, dtype="float32")  # [batch, tasks]
        logits = ops.einsum("bh,the->bte", pooled, self.gate_kernel) + self.gate_bias[None]  # every task's gate
        return ops.softmax(ops.einsum("bt,bte->be", route, logits), axis=-1)

    def call(self, inputs, padding_mask=None, task_id=None, attention_mask=None, training=None):
        if task_id is None:
            raise ValueError(f"{self.name} mixes its experts with per-task gates: pass task_id")
        gates = self.gates(inputs, padding_mask, task_id)
        outputs = []
        for expert in self.experts():
            x = inputs
            for layer in expert:
                x = layer(x, padding_mask=padding_mask, attention_mask=attention_mask, training=training)
            outputs.append(x)
        mixed = ops.einsum("be,eblh->blh", ops.cast(gates, inputs.dtype), ops.stack(outputs, axis=0))
        if training:
            route = ops.one_hot(ops.cast(task_id, "int32"), self.num_tasks, dtype="float32")
            count = ops.sum(route, axis=0)[:, None]  # [tasks, 1]
            means = ops.matmul(ops.transpose(route), gates) / ops.maximum(count, 1.0)
            self.gate_means.assign(ops.where(count > 0, means, self.gate_means))
        return mixed

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None, task_id_shape=None):
        return inputs_shape

    def logged_values(self) -> Dict:
        """``<task>_gate_<e>``: the task's mean gate weight of expert ``e`` in the last training
        batch, for the training logs (`kmtl.MultiTaskModel.train_step`)."""
        return {f"{task}_gate_{e}": ops.convert_to_tensor(self.gate_means[t, e])
                for t, task in enumerate(self.task_names) for e in range(self.num_experts)}

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "num_experts": self.num_experts,
                       "layer_configs": self.layer_configs, "gate_stddev": self.gate_stddev,
                       "task_names": list(self.task_names)})
        return config


@keras.saving.register_keras_serializable(package="kmtl")
class MMoE(Sharing):
    """Multi-gate Mixture-of-Experts: Ma et al., "Modeling Task Relationships in Multi-task
    Learning with Multi-gate Mixture-of-Experts", KDD 2018.

    The backbone's lower layers stay shared (fine-tuned by every task, as in ``full``); its
    top ``top_layers`` transformer layers are replaced by ``experts`` expert stacks shared by
    all tasks, and each task has its own softmax gate over the experts, computed per example
    from the masked mean of the hidden states below the experts (`MultiGateExperts`). Tasks
    that agree come to use the same experts, tasks that conflict different ones. Each example
    is mixed by its own task's gate, so joint (mixed-task) batches work: the model gets a
    fourth input ``task_id`` that `kmtl.data` pipelines and the exported serving graph fill in.

    Experts are copies of the pretrained top layers, not bottleneck adapters on the last
    hidden states: every expert starts as the pretrained layer, so the model starts exactly
    as the pretrained encoder (whatever the gates say), experts have the capacity of the
    layers they replace, and token heads read expert outputs as they read the last layer.
    The experts drift apart as each task's gate weighs their gradients differently. The price
    is parameters and time: each expert adds the parameters of ``top_layers`` layers (about
    1.8 M per MiniLM-L6 layer: 4 experts of 1 layer add 5.3 M over ``full``) and every expert
    runs on every example. The training logs carry each task's mean gate per expert as
    ``<task>_gate_<e>``.

    Needs a keras-hub backbone built from ``keras_hub.layers.TransformerEncoder`` layers
    (BERT and its relatives).

    Args:
        experts: number of experts ``E``.
        top_layers: how many of the backbone's top transformer layers each expert copies (and
            replaces); at most the backbone's number of layers.

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="mmoe", mmoe_experts=4, mmoe_top_layers=1)
        >>> model.fit(kmtl.data.mixture(tasks, train, pre, granularity="joint"), epochs=3)
        >>> model.fit(...).history["sentiment_gate_0"]          # how much sentiment uses expert 0
    """

    name = "mmoe"
    choice_order = 7  # position in lists of choices (`kmtl.registry`)
    config_keys = {"experts": "mmoe_experts", "top_layers": "mmoe_top_layers"}  # YAML keys
    routes_by_task = True

    def __init__(self, experts: Annotated[int, Field(ge=1)] = 4, top_layers: Annotated[int, Field(ge=1)] = 1):
        if int(experts) < 1:
            raise ValueError(f"mmoe experts must be a positive integer, got {experts!r}")
        if int(top_layers) < 1:
            raise ValueError(f"mmoe top_layers must be a positive integer, got {top_layers!r}")
        self.experts, self.top_layers = int(experts), int(top_layers)
        self._num_tasks = None

    def prepare(self, backbone, num_tasks: int) -> None:
        layers = transformer_layers(backbone, self.name)
        if self.top_layers > len(layers):
            raise ValueError(f"mmoe top_layers is {self.top_layers} but the backbone has {len(layers)} transformer "
                             f"layers: set sharing.mmoe_top_layers to at most {len(layers)}")
        backbone.trainable = True
        self._num_tasks = int(num_tasks)

    def encode(self, backbone, inputs: dict) -> dict:
        if self._num_tasks is None:
            raise RuntimeError("call prepare(backbone, num_tasks) before encode")
        top = transformer_layers(backbone, self.name)[-self.top_layers:]
        moe = MultiGateExperts(self._num_tasks, self.experts, [layer.get_config() for layer in top],
                               dtype=top[0].dtype_policy, name="mmoe")
        task_id = inputs[TASK_ID]
        first, skipped = id(top[0]), {id(layer) for layer in top[1:]}

        def operation_fn(operation):
            if id(operation) == first:  # the experts take the place of the top layers
                return lambda x, *args, **kwargs: moe(x, *args, task_id=task_id, **kwargs)
            if id(operation) in skipped:
                return lambda x, *args, **kwargs: x
            return operation

        # one pass through the backbone's own functional graph (Keras 3.15 Function._run_through_graph)
        outputs = run_backbone_graph(backbone, inputs, operation_fn)
        moe.initialize_from(top)
        return outputs

    def get_config(self):
        return {"experts": self.experts, "top_layers": self.top_layers}

