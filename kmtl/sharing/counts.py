"""Parameter counts of a multi-task model, total and trainable, per part."""

from __future__ import annotations

from typing import Dict

PARTS = ("backbone", "adapters", "lora", "sharing", "heads", "other")


def _size(variable) -> int:
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size


def _part_of(model):
    """``{id(variable): part}`` for every weight of ``model``."""
    part = {}
    for layer in model._flatten_layers(include_self=False):
        named = getattr(layer, "parameter_part", None)  # a sharing mode's own layers say where they count
        if named in PARTS:
            part.update({id(v): named for v in layer.weights if id(v) not in part})
    for task in getattr(model, "tasks", []):
        for layer in head_layers(model, task.name):
            part.update({id(v): "heads" for v in layer.weights if id(v) not in part})
    for layer in model.layers:  # what is left in the graph's layers is the backbone
        for v in layer.weights:
            if id(v) not in part:
                part[id(v)] = "lora" if v.name.startswith("lora_kernel") else "backbone"
    return part


def head_layers(model, name: str) -> list:
    """The layers of task ``name``'s head in ``model``: the layer named ``name`` and the
    ``<name>_...`` layers that feed it (`layers_feeding`); ``[]`` when there is no such layer.

    Example:
        >>> [layer.name for layer in head_layers(model, "rel")]   # a relation head
        ['rel', 'rel_dropout', 'rel_hidden', 'rel_entity_starts']
    """
    try:
        head = model.get_layer(name)
    except ValueError:
        return []
    return layers_feeding(head, name)


def task_specific_variables(model, heads: bool = True) -> list:
    """The variables of ``model`` that are not shared by every task: the task heads
    (`head_layers`) and the sharing modes' per-task weights — every weight of a layer with
    ``task_specific = True`` (adapters, soft-sharing copies, scalar mixes, prefixes, progressive
    columns, a task-relation matrix), and what a layer's ``task_specific_weights()`` names
    (MMoE: the gates, not the experts). Per-task weights are stacked ``[tasks, ...]`` and
    routed by ``task_id``, so each task's gradient reaches only its own slice.
    ``heads=False`` leaves the heads out (only the sharing modes' weights).
    """
    found = {}
    for task in getattr(model, "tasks", []) if heads else []:
        for layer in head_layers(model, task.name):
            found.update((id(v), v) for v in layer.weights)
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "task_specific", False):
            found.update((id(v), v) for v in layer.weights)
        elif hasattr(layer, "task_specific_weights"):
            found.update((id(v), v) for v in layer.task_specific_weights())
    return list(found.values())


def task_rows(model) -> list:
    """The trainable per-task weights of ``model`` stacked ``[tasks, ...]`` in ``model.tasks``' order:
    those of layers with ``rows_by_task = True`` (their ``task_specific_weights()`` where they
    name some). Row ``t`` is task ``t``'s own (per-task early stopping holds a stopped task's
    rows still, `kmtl.training.early_stopping.TaskEarlyStopping`). Progressive columns are
    stacked by column, not by task, and are not among them.
    """
    found = {}
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "rows_by_task", False):
            weights = layer.task_specific_weights() if hasattr(layer, "task_specific_weights") else layer.weights
            found.update((id(v), v) for v in weights if v.trainable)
    return list(found.values())


def shared_variables(model) -> list:
    """The trainable variables every task's loss reaches: what gradient surgery (PCGrad) and
    GradNorm's measured layer work on. Everything trainable except `task_specific_variables`.

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="progressive")   # every task its own column
        >>> shared_variables(model)                                          # the encoder is frozen
        []
    """
    own = {id(v) for v in task_specific_variables(model)}
    return [v for v in model.trainable_weights if id(v) not in own]


def layers_feeding(head, name: str) -> list:
    """``head`` and the ``<name>_...`` layers that feed it (a relation head's hidden dense),
    found by walking the graph back from ``head`` (Keras' ``_inbound_nodes``), so a backbone
    layer whose name happens to start with the task's is never taken."""
    found, todo = [head], [head]
    while todo:
        for node in getattr(todo.pop(), "_inbound_nodes", []):
            for tensor in node.input_tensors:
                history = getattr(tensor, "_keras_history", None)
                layer = getattr(history, "operation", None)
                if layer is not None and layer not in found and layer.name.startswith(f"{name}_"):
                    found.append(layer)
                    todo.append(layer)
    return found


def trainable_parameter_counts(model) -> Dict:
    """Parameters of ``model``: total, trainable, and both per part.

    Parts: ``backbone`` (the shared encoder's own weights: embeddings, transformer layers,
    LayerNorms, pooler), ``adapters`` (per-task adapters, `kmtl.sharing.Adapters`), ``lora``
    (the ``A``/``B`` factors of `kmtl.sharing.LoRA`), ``sharing`` (the weights of other
    modes' own layers: any layer with ``parameter_part = "sharing"``), ``heads`` (the task heads, the layers
    named after the tasks and their ``<task>_...`` layers) and ``other`` (state outside the layers: loss weights and the
    variables of weighting strategies).

    Returns:
        ``{"total": n, "trainable": n, "parts": {part: {"total": n, "trainable": n}}}``.

    Example:
        >>> counts = trainable_parameter_counts(kmtl.build_model(encoder, tasks, sharing="frozen"))
        >>> counts["trainable"] == counts["parts"]["heads"]["trainable"]
        True
    """
    part = _part_of(model)
    trainable = {id(v) for v in model.trainable_weights}
    parts = {name: {"total": 0, "trainable": 0} for name in PARTS}
    seen = set()
    for v in model.weights:
        if id(v) in seen:
            continue
        seen.add(id(v))
        row = parts[part.get(id(v), "other")]
        row["total"] += _size(v)
        if id(v) in trainable:
            row["trainable"] += _size(v)
    return {"total": sum(r["total"] for r in parts.values()),
            "trainable": sum(r["trainable"] for r in parts.values()),
            "parts": parts}


def format_parameter_counts(counts: Dict) -> str:
    """One line for logs: ``"22,740,229 parameters, 170,501 trainable (adapters 148,224, heads 22,277)"``.

    Parts that train nothing are left out of the parentheses.
    """
    shown = [f"{name} {row['trainable']:,}" for name, row in counts["parts"].items() if row["trainable"]]
    detail = f" ({', '.join(shown)})" if shown else ""
    return f"{counts['total']:,} parameters, {counts['trainable']:,} trainable{detail}"
