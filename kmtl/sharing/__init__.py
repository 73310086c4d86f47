"""How tasks share the backbone: full fine-tuning, frozen, shared LoRA, per-task adapters.

| mode | class | what trains |
|---|---|---|
| ``full`` | `FullFineTuning` | everything (hard parameter sharing) |
| ``frozen`` | `FrozenBackbone` | the heads |
| ``lora`` | `LoRA` (Hu et al., ICLR 2022) | low-rank updates shared by all tasks, and the heads |
| ``adapters`` | `Adapters` (Houlsby et al., ICML 2019) | per-task bottleneck adapters in every transformer layer, the backbone's LayerNorms, and the heads |

`kmtl.build_model` takes a mode name (with ``lora_rank``, ``lora_alpha``, ``lora_targets``,
``adapter_size``) or one of these objects; `trainable_parameter_counts` reports what trains.

Example:
    >>> model = kmtl.build_model(encoder, tasks, sharing="adapters", adapter_size=32)
    >>> print(kmtl.sharing.format_parameter_counts(kmtl.sharing.trainable_parameter_counts(model)))
"""

from __future__ import annotations

from typing import Optional, Union

from kmtl.registry import SHARING
from kmtl.sharing.adapters import AdaptedTransformerLayer, Adapters, TaskAdapters
from kmtl.sharing.base import INPUT_NAMES, TASK_ID, Sharing
from kmtl.sharing.counts import PARTS, format_parameter_counts, trainable_parameter_counts
from kmtl.sharing.full import FrozenBackbone, FullFineTuning
from kmtl.sharing.lora import BERT_TARGETS, DEFAULT_TARGETS, LoRA

SHARING_CLASSES = {name: entry.load() for name, entry in SHARING.entries().items()}
"""``{mode: class}``: every `Sharing` subclass in kmtl/sharing/ that sets ``name``
(`kmtl.registry.SHARING`, which the config schema reads too); a new file there is a new mode."""
SHARING_MODES = tuple(SHARING_CLASSES)
"""The mode names: ``full``, ``frozen``, ``lora``, ``adapters``."""


def make_sharing(mode: Union[str, Sharing] = "full", **options) -> Sharing:
    """The `Sharing` for a mode name and the options that mode reads.

    ``options`` are keyed as in the YAML ``sharing`` section (``lora_rank``, ``lora_alpha``,
    ``lora_targets``, ``adapter_size``: each mode's ``config_keys``); those of other modes are
    ignored, ``None`` means the mode's default, and a key no mode reads is an error. The mode
    class checks the values. A `Sharing` object is returned as it is.

    Example:
        >>> make_sharing("lora", lora_rank=4, lora_alpha=8)
        LoRA(rank=4, alpha=8.0, target_layers=['query', 'value'])
    """
    if isinstance(mode, Sharing):
        return mode
    entry = SHARING.get(mode)  # ValueError listing the modes
    keys = {o.key for e in SHARING.entries().values() for o in e.options}
    unknown = [k for k in options if k not in keys]
    if unknown:
        raise ValueError(f"unknown sharing option {', '.join(map(repr, unknown))}; options: {', '.join(sorted(keys))}")
    own = {o.key for o in entry.options}
    picked = {k: v for k, v in options.items() if k in own and v is not None}
    return SHARING_CLASSES[mode](**entry.validate_options(picked, values=False))


def sharing_from_config(mode: str, config: Optional[dict] = None) -> Sharing:
    """Rebuild a `Sharing` from its ``name`` and `Sharing.get_config` (as ``run.json`` records them)."""
    SHARING.get(mode)  # ValueError listing the modes
    return SHARING_CLASSES[mode](**(config or {}))


def apply_sharing(sharing: Sharing, backbone, inputs: dict, num_tasks: int) -> dict:
    """Prepare ``backbone`` for ``sharing`` and run it on the model's symbolic ``inputs``.

    ``inputs`` holds ``token_ids``, ``segment_ids``, ``padding_mask`` and, for modes that
    route by task (``sharing.routes_by_task``), ``task_id``. Returns the backbone's outputs
    (``sequence_output``, ``pooled_output``).
    """
    if sharing.routes_by_task and TASK_ID not in inputs:
        raise ValueError(f"sharing mode {sharing.name!r} routes examples by task: inputs need {TASK_ID!r}")
    sharing.prepare(backbone, num_tasks)
    return sharing.encode(backbone, inputs)


def uses_task_id(model) -> bool:
    """Whether ``model`` reads the ``task_id`` input (per-task adapters)."""
    names = getattr(model, "input_names", None)
    if names is None:
        structure = getattr(model, "input", None)
        names = list(structure) if isinstance(structure, dict) else []
    return TASK_ID in names


__all__ = [
    "AdaptedTransformerLayer", "Adapters", "BERT_TARGETS", "DEFAULT_TARGETS", "FrozenBackbone",
    "FullFineTuning", "INPUT_NAMES", "LoRA", "PARTS", "SHARING_CLASSES", "SHARING_MODES", "Sharing",
    "TASK_ID", "TaskAdapters", "apply_sharing", "format_parameter_counts", "make_sharing",
    "sharing_from_config", "trainable_parameter_counts", "uses_task_id",
]
