"""LoRA: one set of low-rank updates of the backbone, shared by all tasks (Hu et al., ICLR 2022)."""

from __future__ import annotations

from typing import Annotated, Optional, Tuple

import keras
from pydantic import Field, PositiveFloat

from kmtl.sharing.base import Sharing

DEFAULT_TARGETS = ("query", "value")
BERT_TARGETS = ("query", "key", "value", "attention_output", "feedforward_intermediate_dense",
                "feedforward_output_dense")
"""Layer names inside each keras-hub BERT transformer layer that LoRA can adapt."""


@keras.saving.register_keras_serializable(package="kmtl")
class LoRA(Sharing):
    """Shared low-rank adaptation: Hu et al., "LoRA: Low-Rank Adaptation of Large Language
    Models", ICLR 2022.

    Every backbone weight is frozen; each targeted projection ``W`` (in every transformer
    layer) gets a trainable update ``(alpha / rank) * A @ B``, ``A`` He-uniform and ``B`` zero
    so training starts from the pretrained model. The update is shared by all tasks; the
    heads train fully. Uses Keras' ``Dense``/``EinsumDense.enable_lora(rank, lora_alpha)``
    (keras-hub's ``Backbone.enable_lora`` takes no alpha); the biases of targeted layers stay
    frozen, as in the paper.

    Shapes: for a ``Dense`` kernel ``[in, out]`` (the feed-forward layers) ``A`` is
    ``[in, rank]`` and ``B`` ``[rank, out]``, as in the paper. For the attention projections
    (``EinsumDense``, kernel ``[d, heads, head_dim]``) Keras makes ``A`` ``[d, heads, rank]``
    and ``B`` ``[rank, head_dim]``: rank ``rank`` per head, ``B`` shared by the heads, about
    ``heads / 2`` times the paper's parameter count at the same rank.

    Saving note: Keras writes a LoRA layer's kernel with the update merged in and zeroes
    ``A``/``B`` on load; kmtl then re-draws ``A`` (``B`` stays zero), so a reloaded model
    predicts the same and its LoRA keeps learning (a resumed run included).

    Args:
        rank: rank of each update (``r`` in the paper).
        alpha: scale numerator; the update is multiplied by ``alpha / rank``. Default: ``rank``
            (scale 1).
        target_layers: names of the layers to adapt, matched against every layer of the
            backbone (keras-hub BERT: ``query``, ``key``, ``value``, ``attention_output``,
            ``feedforward_intermediate_dense``, ``feedforward_output_dense``). Default
            ``("query", "value")``, as in the paper.

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing=kmtl.sharing.LoRA(rank=8, alpha=16))
        >>> model = kmtl.build_model(encoder, tasks, sharing="lora", lora_rank=8,
        ...                          lora_targets=["query", "key", "value"])
    """

    name = "lora"
    choice_order = 2  # position in lists of choices (`kmtl.registry`)
    config_keys = {"rank": "lora_rank", "alpha": "lora_alpha", "target_layers": "lora_targets"}  # YAML keys

    def __init__(self, rank: Annotated[int, Field(ge=1)] = 8, alpha: Optional[PositiveFloat] = None,
                 target_layers: Tuple[str, ...] = DEFAULT_TARGETS):
        if int(rank) < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
        if alpha is not None and float(alpha) <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {alpha!r}")
        if isinstance(target_layers, str) or not target_layers:
            raise ValueError(f"LoRA target_layers must be a non-empty list of layer names, got {target_layers!r}")
        self.rank = int(rank)
        self.alpha = float(alpha) if alpha is not None else None
        self.target_layers = tuple(target_layers)

    def prepare(self, backbone, num_tasks: int) -> None:
        layers = [layer for layer in backbone._flatten_layers(include_self=False) if layer.weights]
        adaptable = sorted({layer.name for layer in layers if hasattr(layer, "enable_lora")})
        unknown = [name for name in self.target_layers if name not in adaptable]
        if unknown:
            raise ValueError(f"LoRA target layers {unknown} are not in the backbone; layers that LoRA can "
                             f"adapt: {', '.join(adaptable)}")
        backbone.trainable = True  # the backbone itself trains; each of its layers is frozen below
        for layer in backbone._flatten_layers(include_self=False):
            layer.trainable = False
        enabled = []
        for index, layer in enumerate(layers):
            if layer.name not in self.target_layers:
                continue
            if getattr(layer, "lora_enabled", False):
                raise ValueError(f"layer {layer.path!r} already has LoRA: this backbone was used for a LoRA "
                                 "model before; load a fresh backbone for each model")
            layer.trainable = True
            layer.enable_lora(self.rank, lora_alpha=self.alpha)
            for variable in layer.weights:  # the bias stays frozen; only A and B train
                variable.trainable = variable.name.startswith("lora_kernel")
            _restart_lora_after_load(layer)
            enabled.append(index)
        # what keras-hub's Backbone.enable_lora records, so backbone.save_lora_weights works
        backbone._lora_enabled_layers, backbone._lora_rank = enabled, self.rank

    def get_config(self):
        return {"rank": self.rank, "alpha": self.alpha, "target_layers": list(self.target_layers)}


def _restart_lora_after_load(layer) -> None:
    """Give ``A`` fresh He-uniform values whenever Keras loads the layer's weights.

    Keras saves a LoRA layer's kernel with ``A @ B`` merged in and, on load, zeroes both ``A``
    and ``B``; with both zero neither gets a gradient again, so LoRA would stop learning after
    `keras.callbacks.BackupAndRestore` resumes a run. Re-drawing ``A`` (``B`` stays zero) keeps
    the loaded model's outputs and lets training go on from the merged kernel.
    """
    load = layer.load_own_variables
    initializer = keras.initializers.HeUniform()

    def load_own_variables(store):
        load(store)
        layer.lora_kernel_a.assign(initializer(layer.lora_kernel_a.shape, dtype=layer.lora_kernel_a.dtype))

    layer.load_own_variables = load_own_variables
