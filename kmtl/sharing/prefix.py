"""Per-task prefix tuning: trainable key/value prefixes in every attention layer (Li & Liang, ACL 2021).

Four pieces:

* `TaskPrefixes`: the prefixes of every task and transformer layer, trained through the
  paper's reparameterisation (a small MLP) or as plain variables; each example gets its own
  task's prefixes (routing by a ``task_id`` tensor), so mixed-task batches work;
* `PrefixedTransformerLayer`: a keras-hub ``TransformerEncoder`` run again, sharing its
  frozen weights, with its self-attention attending over ``[prefix; sequence]``;
* `Prefix`: the sharing mode that freezes the backbone and re-wires its graph through
  `PrefixedTransformerLayer`\\ s;
* `fold_prefixes`: the same model with the MLP folded away (the computed prefixes become
  the variables), for export.
"""

from __future__ import annotations

import math
from typing import Annotated

import keras
from keras import ops
from pydantic import Field

from kmtl.sharing.base import TASK_ID, Sharing, run_backbone_graph, transformer_layers

DEFAULT_LENGTH = 16
DEFAULT_HIDDEN = 512


@keras.saving.register_keras_serializable(package="kmtl")
class TaskPrefixes(keras.layers.Layer):
    """The key and value prefixes of every task and transformer layer, chosen per example.

    Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", ACL 2021,
    Sec. 4.3: optimising the prefixes directly is unstable, so they are computed by an MLP
    ``P = W2 tanh(W1 E + b1) + b2`` from a smaller embedding ``E`` (``length`` vectors of
    width ``embedding_dim``); after training only ``P`` is kept. With ``hidden=0`` the
    prefixes ``P`` are the variables themselves (what `fold_prefixes` makes for export;
    P-Tuning v2, Liu et al., ACL 2022, trains them so too).

    Every weight has a leading task axis (``embedding`` ``[tasks, length, e]``, ``kernel_1``
    ``[tasks, e, hidden]``, ``bias_1`` ``[tasks, hidden]``, ``kernel_2`` ``[tasks, hidden,
    width]``, ``bias_2`` ``[tasks, width]``; or ``prefix`` ``[tasks, length, width]``), with
    ``width = layers * heads * (key_dim + value_dim)``: slice ``t`` belongs to task ``t`` only
    and a task's loss reaches no other slice (routing multiplies a one-hot of ``task_id`` with
    the prefixes of all tasks). A task id outside ``[0, tasks)`` gets all-zero prefixes.

    Args:
        num_tasks: number of tasks.
        length: prefix length (virtual tokens per attention layer).
        num_layers: transformer layers.
        num_heads: attention heads per layer.
        key_dim: size of each head's keys (and queries).
        value_dim: size of each head's values; default ``key_dim``.
        hidden: width of the reparameterisation MLP; ``0``: no MLP.
        embedding_dim: width of the embedding ``E`` fed to the MLP; default ``num_heads *
            key_dim`` (the hidden size, as in P-Tuning v2 and PEFT).

    Returns (`call`): a list with one ``(key_prefix, value_prefix)`` pair per transformer
    layer, ``[batch, length, heads, key_dim]`` and ``[batch, length, heads, value_dim]``.

    Example:
        >>> prefixes = TaskPrefixes(num_tasks=3, length=8, num_layers=2, num_heads=2, key_dim=16, hidden=64)
        >>> key, value = prefixes(tf.constant([0, 2]))[1]    # the second layer's, [2, 8, 2, 16] each
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts
    task_specific = True  # per-task weights: left out of kmtl.sharing.counts.shared_variables
    rows_by_task = True  # every weight is [tasks, ...] in model.tasks' order (kmtl.sharing.counts.task_rows)

    def __init__(self, num_tasks: int, length: int, num_layers: int, num_heads: int, key_dim: int,
                 value_dim: int = None, hidden: int = DEFAULT_HIDDEN, embedding_dim: int = None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.length = int(num_tasks), int(length)
        self.num_layers, self.num_heads = int(num_layers), int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim if value_dim is not None else key_dim)
        self.hidden = int(hidden)
        self.embedding_dim = int(embedding_dim if embedding_dim is not None else num_heads * key_dim)
        self.width = self.num_layers * self.num_heads * (self.key_dim + self.value_dim)

    def build(self, input_shape=None):
        tasks, length, width = self.num_tasks, self.length, self.width
        normal = keras.initializers.RandomNormal(stddev=1.0)  # as torch's nn.Embedding (PEFT's prefix encoder)
        if self.hidden == 0:
            self.prefix = self.add_weight(name="prefix", shape=(tasks, length, width), initializer=normal)
            return
        e, hidden = self.embedding_dim, self.hidden
        self.embedding = self.add_weight(name="embedding", shape=(tasks, length, e), initializer=normal)
        self.kernel_1 = self.add_weight(name="kernel_1", shape=(tasks, e, hidden), initializer=_glorot(e, hidden))
        self.bias_1 = self.add_weight(name="bias_1", shape=(tasks, hidden), initializer="zeros")
        self.kernel_2 = self.add_weight(name="kernel_2", shape=(tasks, hidden, width),
                                        initializer=_glorot(hidden, width))
        self.bias_2 = self.add_weight(name="bias_2", shape=(tasks, width), initializer="zeros")

    def all_prefixes(self, dtype=None):
        """The prefixes of every task, ``[tasks, length, width]`` (the MLP applied, if any)."""
        dtype = dtype or self.compute_dtype
        if self.hidden == 0:
            return ops.cast(self.prefix, dtype)
        hidden = ops.tanh(ops.einsum("tle,teh->tlh", ops.cast(self.embedding, dtype), ops.cast(self.kernel_1, dtype))
                          + ops.cast(self.bias_1, dtype)[:, None, :])
        return (ops.einsum("tlh,thw->tlw", hidden, ops.cast(self.kernel_2, dtype))
                + ops.cast(self.bias_2, dtype)[:, None, :])

    def call(self, task_id):
        dtype = self.compute_dtype
        route = ops.one_hot(ops.cast(task_id, "int32"), self.num_tasks, dtype=dtype)  # [batch, tasks]
        chosen = ops.einsum("bt,tlw->blw", route, self.all_prefixes(dtype))
        heads, k, v = self.num_heads, self.key_dim, self.value_dim
        per_layer = ops.reshape(chosen, (-1, self.length, self.num_layers, heads * (k + v)))
        pairs = []
        for index in range(self.num_layers):
            layer = per_layer[:, :, index, :]
            pairs.append((ops.reshape(layer[:, :, : heads * k], (-1, self.length, heads, k)),
                          ops.reshape(layer[:, :, heads * k:], (-1, self.length, heads, v))))
        return pairs

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "length": self.length, "num_layers": self.num_layers,
                       "num_heads": self.num_heads, "key_dim": self.key_dim, "value_dim": self.value_dim,
                       "hidden": self.hidden, "embedding_dim": self.embedding_dim})
        return config


def _glorot(fan_in: int, fan_out: int):
    """Glorot-uniform for one task's ``[fan_in, fan_out]`` kernel (Keras' own would count the
    task axis into the fans)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="kmtl")
class PrefixedTransformerLayer(keras.layers.Layer):
    """A keras-hub ``TransformerEncoder`` whose self-attention also attends over prefixes.

    Runs the wrapped layer's own sublayers (their weights are shared, not copied) in the order
    of ``TransformerEncoder.call`` (keras-hub 0.32); only the attention differs: queries,
    keys and values come from the layer's own projections, the example's prefixes go in front
    of the keys and values (``[P_k; K]``, ``[P_v; V]``, per head), the padding mask gains
    ``length`` ones in front (prefixes are always visible), and Keras' own
    ``MultiHeadAttention._compute_attention`` (scaling, masked softmax, attention dropout)
    and output projection finish the job. With zero-length prefixes it returns what the
    wrapped layer returns; with prefixes that are the keys and values of real tokens ``z``
    it returns the wrapped layer's output on ``[z; x]`` at the positions of ``x``.

    keras-hub / Keras private attributes used: ``TransformerEncoder._self_attention_layer``,
    ``_self_attention_layer_norm``, ``_self_attention_dropout``, ``_feedforward_layer_norm``,
    ``_feedforward_intermediate_dense``, ``_feedforward_output_dense``, ``_feedforward_dropout``
    (as `kmtl.sharing.AdaptedTransformerLayer`), and ``MultiHeadAttention._query_dense``,
    ``_key_dense``, ``_value_dense``, ``_output_dense``, ``_compute_attention``, ``_use_gate``.

    Args:
        encoder: a built ``keras_hub.layers.TransformerEncoder``.

    Example:
        >>> twin = PrefixedTransformerLayer(encoder)
        >>> y = twin(hidden, padding_mask=mask, prefix=(key_prefix, value_prefix))  # [batch, length, heads, dim]
    """

    def __init__(self, encoder, **kwargs):
        kwargs.setdefault("name", f"{encoder.name}_prefixed")
        kwargs.setdefault("dtype", encoder.dtype_policy)
        super().__init__(**kwargs)
        self.encoder = encoder
        attention = encoder._self_attention_layer
        if getattr(attention, "_use_gate", False):
            raise ValueError(f"{encoder.name}: prefix tuning does not support gated attention (use_gate=True)")

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, prefix=None, training=None):
        from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask

        if prefix is None:
            raise ValueError(f"{self.name} attends over per-task prefixes: pass prefix=(key_prefix, value_prefix)")
        enc = self.encoder
        mask = merge_padding_and_attention_mask(inputs, padding_mask, attention_mask)
        x = inputs
        residual = x
        if enc.normalize_first:
            x = enc._self_attention_layer_norm(x)
        x = self._attend(x, mask, prefix, training)
        x = enc._self_attention_dropout(x, training=training)
        x = x + residual
        if not enc.normalize_first:
            x = enc._self_attention_layer_norm(x)

        residual = x
        if enc.normalize_first:
            x = enc._feedforward_layer_norm(x)
        x = enc._feedforward_intermediate_dense(x)
        x = enc._feedforward_output_dense(x)
        x = enc._feedforward_dropout(x, training=training)
        x = x + residual
        if not enc.normalize_first:
            x = enc._feedforward_layer_norm(x)
        return x

    def _attend(self, x, mask, prefix, training):
        attention = self.encoder._self_attention_layer
        key_prefix, value_prefix = prefix
        query = attention._query_dense(x)  # [batch, T, heads, key_dim]
        key = ops.concatenate([ops.cast(key_prefix, x.dtype), attention._key_dense(x)], axis=1)  # [batch, P+S, ...]
        value = ops.concatenate([ops.cast(value_prefix, x.dtype), attention._value_dense(x)], axis=1)
        if mask is not None:  # [batch, 1 or T, S] -> [batch, 1 or T, P+S], the prefixes always visible
            mask = ops.cast(mask, "int32")
            shape = ops.shape(mask)
            visible = ops.ones((shape[0], shape[1], ops.shape(key_prefix)[1]), dtype="int32")
            mask = ops.concatenate([visible, mask], axis=-1)
        output, _ = attention._compute_attention(query, key, value, mask, training)
        return attention._output_dense(output)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        """The wrapped layer is serialized whole (as `kmtl.sharing.AdaptedTransformerLayer`'s);
        a `kmtl.MultiTaskModel` re-wires a rebuilt backbone instead (`Prefix.encode`)."""
        config = super().get_config()
        config["encoder"] = keras.saving.serialize_keras_object(self.encoder)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kmtl")
class Prefix(Sharing):
    """Per-task prefix tuning: Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for
    Generation", ACL 2021; for encoders and understanding tasks, Liu et al., "P-Tuning v2:
    Prompt Tuning Can Be Comparable to Fine-tuning Universally Across Scales and Tasks", ACL 2022.

    Every self-attention layer of the backbone attends over ``length`` trainable key and value
    vectors (per head) in front of the sequence's own; each task has its own prefixes, and
    each example uses its task's, so joint (mixed-task) batches work: the model gets the
    ``task_id`` input (int32 ``[batch]``), which `kmtl.data` pipelines and the exported serving
    graph fill in. The backbone is frozen (its LayerNorms too, unless ``train_layer_norms``);
    the prefixes and the heads train. The prefixes are trained through the paper's
    reparameterisation, an MLP of width ``hidden`` per task (`TaskPrefixes`);
    `fold_prefixes` replaces it by the prefixes it computes, which is all a deployed model
    needs (export the folded model).

    Trained parameters per task: ``length * L * 2d`` prefixes (``L`` layers, ``d`` hidden
    size) with ``hidden=0``, else ``length * d + d*h + h + h * L * 2d + L * 2d`` (MLP of
    width ``h``); on MiniLM-L6 (``L=6``, ``d=384``) with ``length=16``: 73,728 folded,
    about 2.6 M with ``hidden=512``.

    Needs a keras-hub backbone built from ``keras_hub.layers.TransformerEncoder`` layers
    (BERT and its relatives); its functional graph is run again with each transformer layer
    replaced by a `PrefixedTransformerLayer` that shares its weights.

    Args:
        length: prefix length, virtual tokens per attention layer (the papers use 5-200;
            P-Tuning v2 finds 20 enough for simple classification, 100+ for hard tasks).
        hidden: width of the reparameterisation MLP (the paper: 512 for table-to-text, 800 for
            summarisation); ``0`` trains the prefixes directly.
        train_layer_norms: also train the backbone's LayerNorms (shared by the tasks).

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="prefix", prefix_length=16, prefix_hidden=512)
        >>> model.fit(kmtl.data.mixture(tasks, train, pre, granularity="joint"), epochs=3)
        >>> kmtl.export.saved_model(kmtl.sharing.fold_prefixes(model), "saved_models/demo")
    """

    name = "prefix"
    choice_order = 4  # position in lists of choices (`kmtl.registry`)
    config_keys = {"length": "prefix_length", "hidden": "prefix_hidden",
                   "train_layer_norms": "prefix_train_layer_norms"}  # YAML keys
    routes_by_task = True

    def __init__(self, length: Annotated[int, Field(ge=1)] = DEFAULT_LENGTH,
                 hidden: Annotated[int, Field(ge=0)] = DEFAULT_HIDDEN, train_layer_norms: bool = False):
        if isinstance(length, bool) or int(length) < 1:
            raise ValueError(f"prefix length must be a positive integer, got {length!r}")
        if isinstance(hidden, bool) or int(hidden) < 0:
            raise ValueError(f"prefix hidden (MLP width) must be 0 (no MLP) or a positive integer, got {hidden!r}")
        self.length, self.hidden = int(length), int(hidden)
        self.train_layer_norms = bool(train_layer_norms)
        self._num_tasks = None

    def prepare(self, backbone, num_tasks: int) -> None:
        transformer_layers(backbone, self.name)  # fail early on backbones without keras-hub transformer layers
        backbone.trainable = False
        if self.train_layer_norms:
            for layer in backbone._flatten_layers(include_self=False):
                if isinstance(layer, keras.layers.LayerNormalization):
                    layer.trainable = True
        self._num_tasks = int(num_tasks)

    def encode(self, backbone, inputs: dict) -> dict:
        if self._num_tasks is None:
            raise RuntimeError("call prepare(backbone, num_tasks) before encode")
        layers = transformer_layers(backbone, self.name)
        attention = layers[0]._self_attention_layer
        prefixes = TaskPrefixes(self._num_tasks, self.length, len(layers), attention.num_heads, attention.key_dim,
                                attention.value_dim, hidden=self.hidden, dtype=layers[0].dtype_policy,
                                name="prefixes")(inputs[TASK_ID])
        twins = {id(layer): (PrefixedTransformerLayer(layer), prefixes[index]) for index, layer in enumerate(layers)}

        def operation_fn(operation):
            if id(operation) not in twins:
                return operation
            twin, prefix = twins[id(operation)]
            return lambda *args, **kwargs: twin(*args, prefix=prefix, **kwargs)

        # Run the backbone's own functional graph on our inputs, with each transformer layer
        # swapped for its prefixed twin (Keras 3.15 Function._run_through_graph, as Adapters).
        return run_backbone_graph(backbone, inputs, operation_fn)

    @classmethod
    def for_export(cls, model):
        """Exports serve the prefixes, not the MLP that computes them (`fold_prefixes`)."""
        return fold_prefixes(model)

    def get_config(self):
        return {"length": self.length, "hidden": self.hidden, "train_layer_norms": self.train_layer_norms}


def prefix_layer(model) -> TaskPrefixes:
    """The `TaskPrefixes` layer of a model built with ``sharing="prefix"``."""
    found = [layer for layer in model.layers if isinstance(layer, TaskPrefixes)]
    if len(found) != 1:
        raise ValueError(f"{getattr(model, 'name', model)!r} has {len(found)} TaskPrefixes layers, not one: "
                         "was it built with sharing='prefix'?")
    return found[0]


def fold_prefixes(model):
    """A copy of a ``sharing="prefix"`` model with the reparameterisation MLP folded away.

    Li & Liang (2021) keep only the prefixes once training ends. The copy is the same model
    built with ``prefix_hidden=0``: its `TaskPrefixes` holds the prefixes the MLP computes now
    as its only weight, every other weight (backbone, heads, loss weights) copied, so it
    predicts the same; kmtl's exports (SavedModel, ONNX) fold a prefix model themselves
    (`Prefix.for_export`), so the files carry the prefixes, not the MLP. A model already
    without MLP is returned as it is.

    Example:
        >>> folded = fold_prefixes(model)
        >>> kmtl.export.saved_model(folded, "saved_models/demo")
    """
    if getattr(model, "sharing", None) != Prefix.name:
        raise ValueError(f"fold_prefixes needs a model built with sharing='prefix', not {getattr(model, 'sharing', None)!r}")
    layer = prefix_layer(model)
    if layer.hidden == 0:
        return model
    prefixes = ops.convert_to_numpy(layer.all_prefixes("float32"))
    config = model.get_config()
    config["sharing_options"] = {**model.sharing_options, "hidden": 0}
    folded = type(model).from_config(config)
    folded_layer = prefix_layer(folded)
    skip_source, skip_folded = {id(v) for v in layer.weights}, {id(v) for v in folded_layer.weights}
    source = [v for v in model.weights if id(v) not in skip_source]
    target = [v for v in folded.weights if id(v) not in skip_folded]
    if len(source) != len(target) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(source, target)):
        raise RuntimeError("fold_prefixes: the rebuilt model's weights do not line up with the original's "
                           f"({len(source)} vs {len(target)}); this is a kmtl bug, please report it")
    for a, b in zip(source, target):
        b.assign(a)
    folded_layer.prefix.assign(prefixes)
    folded.encoder_spec = getattr(model, "encoder_spec", None)
    if hasattr(model, "preprocessor"):
        folded.preprocessor = model.preprocessor
    return folded

