"""How tasks share the backbone: one file per mode, all `Sharing` subclasses (`kmtl.registry.SHARING`).

| mode | class | what trains |
|---|---|---|
| ``full`` | `FullFineTuning` | everything (hard parameter sharing) |
| ``frozen`` | `FrozenBackbone` | the heads |
| ``lora`` | `LoRA` (Hu et al., ICLR 2022) | low-rank updates shared by all tasks, and the heads |
| ``adapters`` | `Adapters` (Houlsby et al., ICML 2019) | per-task bottleneck adapters in every transformer layer, the backbone's LayerNorms, and the heads |
| ``prefix`` | `Prefix` (Li & Liang, ACL 2021) | per-task prefix keys/values in every attention layer (through a reparameterisation MLP), and the heads |
| ``scalar_mix`` | `ScalarMix` (Peters et al., NAACL 2018; Kondratyuk & Straka, EMNLP 2019) | a per-task softmax mix over the encoder's layers, the encoder (unless frozen), and the heads |
| ``soft`` | `SoftSharing` (Duong et al., ACL 2015) | per-task copies of the top layers pulled together by an L2 penalty, the shared layers, and the heads |
| ``mmoe`` | `MMoE` (Ma et al., KDD 2018) | expert copies of the top layers with a softmax gate per task, the encoder, and the heads |
| ``progressive`` | `ProgressiveNetworks` (Rusu et al., arXiv:1606.04671, 2016) | a narrow column per new task with lateral connections from the frozen encoder, and the new tasks' heads (the encoder and the old tasks' heads stay frozen) |

`kmtl.build_model` takes a mode name (with its options, keyed as in the YAML ``sharing``
section) or one of these objects; `trainable_parameter_counts` reports what trains.

Example:
    >>> model = kmtl.build_model(encoder, tasks, sharing="adapters", adapter_size=32)
    >>> print(kmtl.sharing.format_parameter_counts(kmtl.sharing.trainable_parameter_counts(model)))
"""

from __future__ import annotations

from typing import Optional, Union

from kmtl.keras_registration import register_pending
from kmtl.registry import SHARING
from kmtl.sharing.adapters import AdaptedTransformerLayer, Adapters, TaskAdapters
from kmtl.sharing.base import INPUT_NAMES, TASK_ID, Sharing
from kmtl.sharing.counts import PARTS, format_parameter_counts, trainable_parameter_counts
from kmtl.sharing.full import FrozenBackbone, FullFineTuning
from kmtl.sharing.lora import BERT_TARGETS, DEFAULT_TARGETS, LoRA
from kmtl.sharing.mmoe import MMoE, MultiGateExperts
from kmtl.sharing.prefix import Prefix, PrefixedTransformerLayer, TaskPrefixes, fold_prefixes
from kmtl.sharing.progressive import ProgressiveColumns, ProgressiveNetworks
from kmtl.sharing.scalar_mix import ScalarMix, TaskScalarMix
from kmtl.sharing.soft import SoftSharing, TaskLayerCopies, TaskTransformerLayer
from kmtl.sharing.task_relation import TaskRelation

SHARING_CLASSES = {name: entry.load() for name, entry in SHARING.entries().items()}
"""``{mode: class}``: every `Sharing` subclass in kmtl/sharing/ that sets ``name``
(`kmtl.registry.SHARING`, which the config schema reads too); a new file there is a new mode."""
SHARING_MODES = tuple(SHARING_CLASSES)
"""The mode names: ``full``, ``frozen``, ``lora``, ``adapters``, ``prefix``, ``scalar_mix``, ``soft``, ``mmoe``,
``progressive``."""
SHARING_OPTION_KEYS = tuple(dict.fromkeys(o.key for e in SHARING.entries().values() for o in e.options))
"""Every option key a mode reads (``lora_rank``, ``adapter_size``...), as `make_sharing` takes them."""


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
    unknown = [k for k in options if k not in SHARING_OPTION_KEYS]
    if unknown:
        raise ValueError(f"unknown sharing option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(sorted(SHARING_OPTION_KEYS))}")
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


def served_model(model):
    """``model`` in the form exports serve (`Sharing.for_export` of its mode; the model itself
    for most modes, a folded copy for ``prefix``)."""
    cls = SHARING_CLASSES.get(getattr(model, "sharing", None))
    return cls.for_export(model) if cls is not None else model


def uses_task_id(model) -> bool:
    """Whether ``model`` reads the ``task_id`` input (per-task adapters)."""
    names = getattr(model, "input_names", None)
    if names is None:
        structure = getattr(model, "input", None)
        names = list(structure) if isinstance(structure, dict) else []
    return TASK_ID in names


__all__ = [
    "AdaptedTransformerLayer", "Adapters", "BERT_TARGETS", "DEFAULT_TARGETS", "FrozenBackbone",
    "FullFineTuning", "INPUT_NAMES", "LoRA", "PARTS", "SHARING_CLASSES", "SHARING_MODES", "SHARING_OPTION_KEYS",
    "Sharing",
    "MMoE", "MultiGateExperts", "ScalarMix", "TaskScalarMix",
    "Prefix", "PrefixedTransformerLayer", "TaskPrefixes", "fold_prefixes",
    "ProgressiveColumns", "ProgressiveNetworks",
    "SoftSharing", "TaskLayerCopies", "TaskRelation", "TaskTransformerLayer",
    "TASK_ID", "TaskAdapters", "apply_sharing", "format_parameter_counts", "make_sharing",
    "served_model", "sharing_from_config", "trainable_parameter_counts", "uses_task_id",
]

register_pending(__name__)  # kmtl.keras_registration: Keras may have arrived while this package was importing
