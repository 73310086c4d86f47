"""`Sharing`: the base of the ways tasks share the backbone (one subclass per mode, one file each)."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
TASK_ID = "task_id"
"""The extra model input of modes that route examples by task: int32 ``[batch]``, the index of
each example's task in ``model.tasks``."""


class Sharing:
    """How the tasks of a `kmtl.MultiTaskModel` share its backbone.

    A mode does two things, both while the model is built (`apply_sharing` calls them):

    * `prepare` sets what trains: freezes weights, adds low-rank or adapter weights;
    * `encode` runs the backbone on the model's symbolic inputs and returns its outputs
      (``sequence_output``, ``pooled_output``); modes that change the encoder's forward pass
      (per-task adapters) re-wire it here.

    Modes with ``routes_by_task = True`` need the `TASK_ID` input (each example's task index);
    the model then has it as a fourth input, and kmtl's data pipelines and serving graph fill
    it in.

    Subclasses set ``name`` (the YAML ``sharing.mode``) and implement `get_config` so that a
    saved run or ``.keras`` file rebuilds the same mode (`kmtl.sharing.sharing_from_config`);
    kmtl's own modes are also registered with ``keras.saving.register_keras_serializable``.
    """

    name: str = ""
    routes_by_task: bool = False

    def prepare(self, backbone, num_tasks: int) -> None:
        """Set which backbone weights train (and add new ones); the default trains all."""
        backbone.trainable = True

    def encode(self, backbone, inputs: dict) -> dict:
        """The backbone's outputs for the model's symbolic ``inputs``."""
        return backbone({name: inputs[name] for name in INPUT_NAMES})

    def frozen_tasks(self, task_names: Sequence[str]) -> List[str]:
        """The tasks this mode trains nothing for (their loss reaches no trainable weight): a
        training mixture leaves them out, evaluation keeps them. Default: none."""
        return []

    def for_one_task(self, task: str) -> Tuple[str, Dict]:
        """The mode and the option changes (YAML keys) of a single-task baseline of ``task``
        (`kmtl.compare.baselines.baseline_config`): options about other tasks have no meaning
        with one task. Default: this mode, unchanged."""
        return self.name, {}

    @classmethod
    def for_export(cls, model):
        """The model exports serve for a model built with this mode: ``model`` itself, or a
        copy in its serving form (prefix tuning folds its reparameterisation MLP away)."""
        return model

    def get_config(self) -> Dict:
        """Constructor arguments, JSON-serialisable (recorded in ``run.json`` and in a ``.keras``
        model's config)."""
        return {}

    @classmethod
    def from_config(cls, config: Dict) -> "Sharing":
        """The mode `get_config` describes (`keras.saving.deserialize_keras_object` calls this:
        kmtl's modes are registered Keras serializables, package ``kmtl``)."""
        return cls(**(config or {}))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


def transformer_layers(backbone, mode: str) -> list:
    """The backbone's keras-hub ``TransformerEncoder`` layers, bottom first: the layers that a
    mode re-wiring the encoder (`run_backbone_graph`) replaces or taps. ``ValueError`` naming
    ``mode`` for a backbone without them (not a keras-hub functional BERT-like model)."""
    from keras_hub.layers import TransformerEncoder

    layers = [layer for layer in getattr(backbone, "layers", []) if isinstance(layer, TransformerEncoder)]
    if not layers or not hasattr(backbone, "_run_through_graph"):
        raise ValueError(
            f"sharing mode {mode!r} needs a keras-hub functional backbone built from keras_hub.layers.TransformerEncoder "
            f"layers (BERT and its relatives); {type(backbone).__name__} has none: use sharing 'full'")
    return layers


def run_backbone_graph(backbone, inputs: dict, operation_fn):
    """Run the backbone's own functional graph on the model's symbolic ``inputs``, each layer
    passed through ``operation_fn(layer) -> callable`` (return the layer itself to keep it): how
    adapters, prefixes, per-task copies and experts take a transformer layer's place, or how a
    mode taps the hidden states. Keras 3.15 ``Function._run_through_graph`` (private: no public
    way to re-run a functional model with some operations swapped)."""
    flat = backbone._standardize_inputs({name: inputs[name] for name in INPUT_NAMES})
    return backbone._run_through_graph(flat, operation_fn=operation_fn)



def hidden_states(backbone, inputs: dict, mode: str):
    """Run the backbone once (`run_backbone_graph`) and tap its hidden states: ``(outputs,
    states)``, ``outputs`` the backbone's own (``sequence_output``, ``pooled_output``), ``states``
    the embeddings' output (the first transformer layer's input) and every transformer layer's
    output, bottom first (``layers + 1`` tensors): what the scalar mix weighs and progressive
    columns read."""
    layers = transformer_layers(backbone, mode)
    position = {id(layer): i for i, layer in enumerate(layers)}
    states = [None] * (len(layers) + 1)

    def operation_fn(operation):
        i = position.get(id(operation))
        if i is None:
            return operation

        def run(x, *args, **kwargs):  # keep each transformer layer's input (layer 0's: the embeddings) and output
            states[i] = states[i] if states[i] is not None else x
            states[i + 1] = operation(x, *args, **kwargs)
            return states[i + 1]

        return run

    return run_backbone_graph(backbone, inputs, operation_fn), states
