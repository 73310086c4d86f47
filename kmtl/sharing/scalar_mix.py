"""Per-task scalar mix of the encoder's layers (ELMo's scalar mix; UDify's per-task layer attention).

Two pieces:

* `TaskScalarMix`: per task, a softmax over the encoder's hidden states and a scale; each
  example is mixed with its own task's weights (routing by a ``task_id`` tensor);
* `ScalarMix`: the sharing mode that runs the backbone once, keeps every layer's output and
  hands the heads the mixed sequence.
"""

from __future__ import annotations

from typing import Annotated, Dict, Optional, Sequence

import keras
from keras import ops
from pydantic import Field

from kmtl.sharing.base import TASK_ID, Sharing, hidden_states, transformer_layers

_DROPPED = 1e4
"""What layer dropout subtracts from a dropped layer's logit (a finite "minus infinity": an
example whose layers are all dropped keeps its plain softmax instead of NaNs)."""


@keras.saving.register_keras_serializable(package="kmtl")
class TaskScalarMix(keras.layers.Layer):
    """Per-task weighted sum of hidden states: ``gamma_t * sum_l softmax(s_t)_l * h_l``.

    ``t`` is the example's task id. The weights of all tasks live in two variables with a
    leading task axis, ``mix_logits`` ``[tasks, states]`` (zeros: every layer weighs the same
    at first, as in ELMo) and ``scale`` ``[tasks]`` (ones); row ``t`` belongs to task ``t``
    only. Routing multiplies a one-hot of ``task_id`` with them, so a task's loss reaches no
    other task's row. A task id outside ``[0, tasks)`` gets a zero vector.

    Layer dropout (UDify): while training, each example drops each hidden state with
    probability ``layer_dropout`` before the softmax (its logit is pushed to a large negative
    value), so no task leans on one layer alone.

    Call args:
        states: a list of ``[batch, length, hidden]`` tensors, the same shape each.
        task_id: int ``[batch]``.

    Args:
        num_tasks: number of tasks.
        num_states: number of hidden states mixed (``L + 1`` for an ``L``-layer encoder).
        layer_dropout: probability of dropping a hidden state while training.
        task_names: names of the tasks, for the logged figures; default ``task0``, ``task1``...
            (`kmtl.MultiTaskModel` sets the real ones).

    Example:
        >>> mix = TaskScalarMix(num_tasks=3, num_states=7)
        >>> mixed = mix([h0, h1, h2, h3, h4, h5, h6], task_id=tf.constant([0, 2]))   # h_l: [2, length, d]
        >>> sorted(mix.logged_values())[:2]
        ['task0_mix_layer_0', 'task0_mix_layer_1']
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts
    task_specific = True  # per-task weights: left out of kmtl.sharing.counts.shared_variables
    rows_by_task = True  # every weight is [tasks, ...] in model.tasks' order (kmtl.sharing.counts.task_rows)

    def __init__(self, num_tasks: int, num_states: int, layer_dropout: float = 0.0,
                 task_names: Optional[Sequence[str]] = None, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.num_states = int(num_tasks), int(num_states)
        self.layer_dropout = float(layer_dropout)
        self.task_names = tuple(task_names) if task_names else tuple(f"task{t}" for t in range(self.num_tasks))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.layer_dropout > 0 else None

    def build(self, states_shape, task_id_shape=None):
        self.mix_logits = self.add_weight(name="mix_logits", shape=(self.num_tasks, self.num_states),
                                          initializer="zeros", autocast=False)
        self.scale = self.add_weight(name="scale", shape=(self.num_tasks,), initializer="ones", autocast=False)

    def call(self, states, task_id, training=None):
        if len(states) != self.num_states:
            raise ValueError(f"{self.name} mixes {self.num_states} hidden states, got {len(states)}")
        dtype = states[0].dtype
        route = ops.one_hot(ops.cast(task_id, "int32"), self.num_tasks, dtype="float32")  # [batch, tasks]
        logits = ops.matmul(route, self.mix_logits)  # [batch, states]
        if training and self.layer_dropout > 0:
            drop = keras.random.uniform(ops.shape(logits), seed=self.seed_generator) < self.layer_dropout
            logits = logits - _DROPPED * ops.cast(drop, logits.dtype)
        weights = ops.softmax(logits, axis=-1) * ops.matmul(route, self.scale[:, None])  # [batch, states]
        stacked = ops.stack(states, axis=0)  # [states, batch, length, hidden]
        return ops.einsum("bs,sblh->blh", ops.cast(weights, dtype), stacked)

    def compute_output_shape(self, states_shape, task_id_shape=None):
        return states_shape[0]

    def mix_weights(self):
        """``[tasks, states]``: each task's softmax over the hidden states (no dropout)."""
        return ops.softmax(self.mix_logits, axis=-1)

    def logged_values(self) -> Dict:
        """``<task>_mix_layer_<l>`` (the weight of hidden state ``l``; 0 is the embeddings) and
        ``<task>_mix_scale`` (``gamma``), for the training logs (`kmtl.MultiTaskModel.train_step`)."""
        weights = self.mix_weights()
        values = {}
        for t, task in enumerate(self.task_names):
            values.update({f"{task}_mix_layer_{s}": weights[t, s] for s in range(self.num_states)})
            values[f"{task}_mix_scale"] = ops.convert_to_tensor(self.scale[t])
        return values

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "num_states": self.num_states,
                       "layer_dropout": self.layer_dropout, "task_names": list(self.task_names), "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="kmtl")
class ScalarMix(Sharing):
    """Per-task scalar mix of the encoder's layers: Peters et al., "Deep contextualized word
    representations", NAACL 2018 (ELMo's scalar mix), per task as in Kondratyuk & Straka,
    "75 Languages, 1 Model: Parsing Universal Dependencies Universally", EMNLP 2019 (UDify).

    The backbone runs once; its ``L + 1`` hidden states (the embeddings' output and each
    transformer layer's) are kept, and each task ``t`` sees its own mix
    ``gamma_t * sum_l softmax(s_t)_l * h_l`` (`TaskScalarMix`) instead of the last layer
    alone: tagging may lean on lower layers, sentence tasks on upper ones. Each example is
    mixed with its own task's weights, so joint (mixed-task) batches work: the model gets a
    fourth input ``task_id`` that `kmtl.data` pipelines and the exported serving graph fill in.

    Sentence vector: with ``pooling="mean"`` the masked mean of the mixed sequence; with
    ``pooling="cls"`` the backbone's ``[CLS]`` pooler (``pooled_dense``) applied to the
    mixed ``[CLS]`` vector. The training logs carry each task's weights as
    ``<task>_mix_layer_<l>`` (``l = 0`` the embeddings) and its scale as ``<task>_mix_scale``.

    The mix adds ``tasks * (L + 2)`` parameters; the backbone trains too (as in ``full``)
    unless ``freeze_backbone`` (then only the mixes and the heads train: ELMo's own recipe).

    Needs a keras-hub backbone built from ``keras_hub.layers.TransformerEncoder`` layers
    (BERT and its relatives).

    Args:
        freeze_backbone: keep the backbone's weights fixed.
        layer_dropout: probability of dropping a hidden state from an example's mix while
            training (UDify uses 0.1).

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="scalar_mix", mix_layer_dropout=0.1)
        >>> sorted(model.input)                         # the routing input comes with the mode
        ['padding_mask', 'segment_ids', 'task_id', 'token_ids']
        >>> model.fit(kmtl.data.mixture(tasks, train, pre, granularity="joint"), epochs=3)
    """

    name = "scalar_mix"
    choice_order = 5  # position in lists of choices (`kmtl.registry`)
    config_keys = {"freeze_backbone": "mix_freeze_backbone", "layer_dropout": "mix_layer_dropout"}  # YAML keys
    routes_by_task = True

    def __init__(self, freeze_backbone: bool = False, layer_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0):
        if not 0 <= float(layer_dropout) < 1:
            raise ValueError(f"scalar_mix layer_dropout must be in [0, 1), got {layer_dropout!r}")
        self.freeze_backbone = bool(freeze_backbone)
        self.layer_dropout = float(layer_dropout)
        self._num_tasks = None

    def prepare(self, backbone, num_tasks: int) -> None:
        transformer_layers(backbone, self.name)  # fail early on backbones without keras-hub transformer layers
        backbone.trainable = not self.freeze_backbone
        self._num_tasks = int(num_tasks)

    def encode(self, backbone, inputs: dict) -> dict:
        if self._num_tasks is None:
            raise RuntimeError("call prepare(backbone, num_tasks) before encode")
        _, states = hidden_states(backbone, inputs, self.name)  # one pass through the backbone's own graph
        policy = transformer_layers(backbone, self.name)[-1].dtype_policy  # mixed precision: the encoder's
        mix = TaskScalarMix(self._num_tasks, len(states), self.layer_dropout, dtype=policy,
                            name="scalar_mix")
        sequence = mix(states, task_id=inputs[TASK_ID])
        cls = sequence[:, 0, :]
        try:
            cls = backbone.get_layer("pooled_dense")(cls)
        except ValueError:
            pass
        return {"sequence_output": sequence, "pooled_output": cls}

    def get_config(self):
        return {"freeze_backbone": self.freeze_backbone, "layer_dropout": self.layer_dropout}

