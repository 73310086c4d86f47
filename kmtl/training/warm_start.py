"""Starting a run from a finished one: adding a task to a trained multi-task model."""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from kmtl.errors import KmtlError


def reusable_heads(old_tasks, new_tasks) -> List[str]:
    """Names of the tasks whose head carries over: same name, kind and label list."""
    old = {t.name: t for t in old_tasks}
    return [t.name for t in new_tasks
            if t.name in old and old[t.name].kind == t.kind and old[t.name].labels == t.labels]


def warm_start(model, old_model) -> Dict[str, list]:
    """Copy ``old_model``'s weights into ``model``: the backbone (and LoRA/adapters) and the
    head of every task both have with the same kind and labels. New tasks' heads keep their
    fresh initialisation; per-task adapters are copied task by task (new tasks' adapters stay
    the identity); soft sharing's copies too, a new task's copy starting from the mean of the
    run's copies.

    Into a ``progressive`` model (`kmtl.sharing.ProgressiveNetworks`): the frozen first column
    gets the run's encoder (a LoRA run's kernels with their low-rank updates merged in), the
    tasks without a column their heads; new columns stay fresh (they add nothing until they
    train), and the columns of a ``progressive`` run are copied task by task. Refused
    (`KmtlError`) when the old tasks' answers could not be kept: a run whose mode changes the
    encoder per task (adapters, prefix, scalar_mix, soft, mmoe), a task without a column that
    the run has no head for (same name, kind and labels), or a task that had a column in the
    run and has none here.

    Args:
        model: the new `kmtl.MultiTaskModel` (same backbone and sharing mode as the old one).
        old_model: the trained model, e.g. from `kmtl.training.load_run`.

    Returns:
        ``{"copied": [variable paths], "fresh": [...], "heads": [task names carried over]}``.

    Raises:
        KmtlError: when the backbones differ (nothing of the encoder could be copied).

    Example:
        >>> old, _, _ = kmtl.training.load_run("runs/three_tasks")
        >>> warm_start(new_model_with_four_tasks, old)["heads"]
        ['sentiment', 'paraphrase', 'entities']
    """
    if getattr(old_model, "encoder_spec", None) != getattr(model, "encoder_spec", None):
        raise KmtlError(f"init_from: the run's backbone is {old_model.encoder_spec!r}, this config's is "
                        f"{model.encoder_spec!r}; use the same backbone")
    heads = set(reusable_heads(old_model.tasks, model.tasks))
    new_names = {t.name for t in model.tasks}
    old_index = {t.name: i for i, t in enumerate(old_model.tasks)}
    task_rows = [(i, old_index[t.name]) for i, t in enumerate(model.tasks) if t.name in old_index]
    old_vars = {v.path: v for v in old_model.weights}
    columns, values = _progressive_start(model, old_model, heads)
    values.update(_soft_values(model, old_model))
    column_vars = {id(w) for w in columns.weights} if columns is not None else set()
    rows = _row_variables(model)
    means = _mean_start_variables(model)
    added_rows = [i for i, t in enumerate(model.tasks) if t.name not in old_index]
    copied, fresh = [], []
    for v in model.weights:
        top = v.path.split("/")[0]
        if top.startswith(("loss_weight_", "teacher_lambda", "weighting_state")) or (
                top in new_names and top not in heads):
            fresh.append(v.path)
            continue
        if id(v) in column_vars:
            (copied if _copy_columns(v, columns, old_model) else fresh).append(v.path)
            continue
        src = old_vars.get(v.path)
        if src is None and v.path not in values:
            fresh.append(v.path)
            continue
        value = np.asarray(values[v.path] if v.path in values else src.numpy())
        per_task = id(v) in rows and v.path not in values
        if per_task and tuple(value.shape[1:]) == tuple(v.shape[1:]):
            new_value = np.asarray(v.numpy()).copy()  # adapters, soft copies...: one row per task, by name
            for new_row, old_row in task_rows:
                new_value[new_row] = value[old_row]
            if id(v) in means and added_rows:  # a new task's copy starts where the penalty pulls the copies: their mean
                new_value[added_rows] = value.mean(axis=0)
            v.assign(new_value)
        elif tuple(value.shape) == tuple(v.shape) and not per_task:
            v.assign(value)
        else:
            fresh.append(v.path)
            continue
        copied.append(v.path)
    encoder_copied = [p for p in copied if p.split("/")[0] not in new_names]
    if not encoder_copied:
        raise KmtlError("init_from: none of the run's encoder weights fit this model; use the same backbone "
                        "and sharing mode")
    return {"copied": copied, "fresh": fresh, "heads": [t.name for t in model.tasks if t.name in heads]}


def _progressive_start(model, old_model, heads):
    """For a ``progressive`` ``model``: its `ProgressiveColumns` and ``{path: value}`` to copy
    instead of the old variables' own (the effective kernels of LoRA layers); checks that the
    old tasks' answers can be kept. ``(None, {})`` for other models."""
    from kmtl.sharing.progressive import progressive_columns

    columns = progressive_columns(model)
    if columns is None:
        return None, {}
    mode = getattr(old_model, "sharing", "full")
    if mode not in ("full", "frozen", "lora", "progressive"):
        raise KmtlError(f"init_from: the run was trained with sharing {mode!r}, which changes the encoder per task; a "
                        "progressive model's frozen column is the plain encoder, so its old tasks' answers would "
                        "change. Start from a run trained with sharing full, frozen, lora or progressive")
    orphans = [t for t in columns.tasks_without_column() if t not in heads]
    if orphans:
        raise KmtlError(f"init_from: task(s) {', '.join(map(repr, orphans))} have no column (not in "
                        "sharing.progressive_tasks) but the run has no head for them with the same name, kind and "
                        "labels: their heads would stay frozen at random. List them in sharing.progressive_tasks")
    old_columns = progressive_columns(old_model)
    if old_columns is not None:
        had = set(_column_names(old_columns)) - set(_column_names(columns))
        if had:
            raise KmtlError(f"init_from: task(s) {', '.join(map(repr, sorted(had)))} had a column in the run; list "
                            "them in sharing.progressive_tasks (the frozen column is the plain encoder)")
    values = {}
    for layer in old_model._flatten_layers(include_self=False):
        kernel = getattr(layer, "_kernel", None)
        if getattr(layer, "lora_enabled", False) and kernel is not None:
            values[kernel.path] = np.asarray(layer.kernel)  # the kernel with the LoRA update merged in
    return columns, values


def _column_names(columns) -> list:
    return list(columns.column_tasks) if columns.column_tasks is not None else list(columns.task_names)


def _copy_columns(variable, columns, old_model) -> bool:
    """Copy into ``variable`` (a `ProgressiveColumns` weight, one slice per column) the slices
    of the old model's columns of the same tasks; whether any was copied."""
    from kmtl.sharing.progressive import progressive_columns

    old_columns = progressive_columns(old_model)
    if old_columns is None:
        return False
    source = next((w for w in old_columns.weights if w.name == variable.name), None)
    if source is None or tuple(source.shape[1:]) != tuple(variable.shape[1:]):
        return False
    old_at = {name: k for k, name in enumerate(_column_names(old_columns))}
    pairs = [(k, old_at[name]) for k, name in enumerate(_column_names(columns)) if name in old_at]
    if not pairs:
        return False
    value, old_value = np.asarray(variable.numpy()).copy(), np.asarray(source.numpy())
    for k, old_k in pairs:
        value[k] = old_value[old_k]
    variable.assign(value)
    return True


def _row_variables(model) -> set:
    """Ids of ``model``'s weights stacked one row per task in ``model.tasks``' order (layers with
    ``rows_by_task``: adapters, soft sharing's copies, prefixes...): copied row by row, by task name."""
    found = set()
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "rows_by_task", False):
            weights = layer.task_specific_weights() if hasattr(layer, "task_specific_weights") else layer.weights
            found.update(id(v) for v in weights)
    return found


def _mean_start_variables(model) -> set:
    """Ids of ``model``'s soft-sharing copies (`kmtl.sharing.soft.TaskTransformerLayer`): a task
    the run did not have starts from the mean of the run's copies, not the pretrained layer."""
    from kmtl.sharing.soft import TaskTransformerLayer

    return {id(v) for layer in model._flatten_layers(include_self=False) if isinstance(layer, TaskTransformerLayer)
            for v in layer.weights}


def _soft_values(model, old_model) -> dict:
    """``{path: value}`` for the transformer layers of ``model`` that ``old_model`` (soft sharing)
    replaced by per-task copies: the copy of ``model``'s task when it has one task the run knows
    (`kmtl compare`'s second stage, MT-DNN's fine-tuning), else the copies' mean (the point the
    soft-sharing penalty pulls them to). The other way (a soft ``model`` from a run without
    copies): every copy starts as the run's layer. Empty when both or neither have copies (soft
    to soft is copied row by row)."""
    from kmtl.sharing.soft import TaskTransformerLayer, encoder_values

    copies = {layer.name: layer for layer in old_model._flatten_layers(include_self=False)
              if isinstance(layer, TaskTransformerLayer)}
    if not copies:
        old_layers = {layer.name: layer for layer in old_model._flatten_layers(include_self=False)}
        values = {}
        for layer in model._flatten_layers(include_self=False):
            source = old_layers.get(layer.name[:-len("_copies")]) if isinstance(layer, TaskTransformerLayer) else None
            if source is not None and not isinstance(source, TaskTransformerLayer):
                for name, value in encoder_values(None, source).items():
                    variable = layer.copies[name]
                    values[variable.path] = np.broadcast_to(value, tuple(variable.shape)).copy()
        return values
    old_index = {t.name: i for i, t in enumerate(old_model.tasks)}
    known = [old_index[t.name] for t in model.tasks if t.name in old_index]
    row = known[0] if len(model.tasks) == 1 and known else None
    values = {}
    for layer in model._flatten_layers(include_self=False):
        twin = copies.get(f"{layer.name}_copies")
        if twin is not None and not isinstance(layer, TaskTransformerLayer):
            values.update(encoder_values(twin, layer, row))
    return values


def start_from_run(config, model, dev_examples, echo=print) -> dict:
    """``init_from``: evaluate the old run on this config's dev splits of the tasks it knows
    (the "before" of the retention report), then `warm_start` ``model`` from it.

    Returns:
        the old model's dev metrics, ``{task: metrics}``.
    """
    from kmtl.evaluation import evaluate_tasks
    from kmtl.run_files import load_run

    old, old_pre, _ = load_run(config.init_from)
    known = {t.name for t in old.tasks}
    before = evaluate_tasks(old, {n: exs for n, exs in dev_examples.items() if n in known and exs}, old_pre)
    done = warm_start(model, old)
    added = [t.name for t in model.tasks if t.name not in known]
    echo(f"init_from {config.init_from}: encoder and heads {', '.join(done['heads']) or '(none)'} carried over; "
         f"new: {', '.join(t for t in (t.name for t in model.tasks) if t not in done['heads']) or '(none)'}"
         + (f" (added tasks: {', '.join(added)})" if added else ""))
    del old
    return before
