"""Every task's outputs for one batch, each through its own route: what serving, raw-text
``predict`` and ``model(x)`` without ``task_id`` compute for models whose sharing mode routes
examples by task (soft sharing, adapters, prefixes, MMoE, progressive columns, scalar mix).

A routed model reads each example's task from the ``task_id`` input; a client asking for all
tasks at once has no such id. `run_tasks` runs the model's graph once per task with ``task_id``
filled with that task's index, and computes every operation that does not depend on it once for
all passes: with soft sharing of the top ``k`` layers the layers below run once and only the
copies run per task, so ``T`` tasks cost ``layers - k + T * k`` transformer layers instead of
``T * layers``. A layer with a ``for_task(index)`` method (`kmtl.sharing.TaskLayerCopies`) is run
through it in that task's pass: plain matrix products with the task's own weights instead of
per-example routing.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import tree

from kmtl.data.pipeline import INPUT_NAMES, TASK_ID


def run_tasks(model, x, tasks) -> dict:
    """``{task: raw output}`` of ``model`` (a `kmtl.MultiTaskModel`) on ``x`` for each of
    ``tasks``, in inference mode.

    A model that does not route by task answers them all in one call. A routed one
    (``model.routes_by_task``) answers each task through its own route (`per_task_outputs`).

    Example:
        >>> out = run_tasks(model, pre.encode_text(tf.constant(["a fine film"])), model.tasks)
        >>> sorted(out) == sorted(t.name for t in model.tasks)
        True
    """
    if not getattr(model, "routes_by_task", False):
        return model(x, training=False)
    return per_task_outputs(model, x, [t.name for t in tasks])


def per_task_outputs(model, x, names) -> dict:
    """``{name: output}`` of a routed ``model`` for the tasks ``names``: each computed as if every
    example of ``x`` belonged to that task (``task_id`` filled with its index), operations that do
    not read ``task_id`` computed once for all of them. ``x``'s own ``task_id`` is ignored.

    Keras 3.15 ``Function._run_through_graph`` runs the graph (private: no public way to re-run a
    functional model with some operations swapped or shared).
    """
    from keras.src.models.functional import operation_fn as keras_operation_fn

    index = {t.name: i for i, t in enumerate(model.tasks)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f"no tasks {unknown}; the model's tasks are {list(index)}")
    x = {k: v if tf.is_tensor(v) else tf.convert_to_tensor(v) for k, v in x.items() if k in INPUT_NAMES}
    batch = tf.shape(x["token_ids"])[0]
    memo = {}  # (operation, its inputs) -> (outputs, inputs): the inputs are kept so their ids stay unique

    def shared(operation, task):
        own = getattr(operation, "for_task", None)
        if callable(own):  # a routing layer's own one-task path
            return keras_operation_fn(_Named(operation, own(task)), training=False)
        call = keras_operation_fn(operation, training=False)

        def run(*args, **kwargs):
            leaves = tree.flatten((args, kwargs))
            key = (id(operation), tuple(id(v) if tf.is_tensor(v) else repr(v) for v in leaves))
            if key not in memo:
                memo[key] = (call(*args, **kwargs), leaves)
            return memo[key][0]

        return run

    outputs = {}
    for name in names:
        graph = model.outputs_model([name])  # only this task's head
        task = index[name]
        inputs = {**x, TASK_ID: tf.fill([batch], tf.constant(task, tf.int32))}
        flat = graph._standardize_inputs(inputs)
        result = graph._run_through_graph(flat, operation_fn=lambda op, task=task: shared(op, task))
        outputs[name] = result[name]
        memo[("fill", task)] = (None, [inputs[TASK_ID]])  # kept alive: its id must not be reused
    return outputs


class _Named:
    """``fn`` standing in for ``operation`` where Keras asks whether its call takes ``training``."""

    def __init__(self, operation, fn):
        self._call_context_args = getattr(operation, "_call_context_args", {})
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)


class PerTaskModel(keras.Model):
    """A routed `kmtl.MultiTaskModel` as a model without the ``task_id`` input: its call returns
    the outputs ``names`` (default: all tasks), each through its own route (`per_task_outputs`).
    What `kmtl.export.export_onnx` converts for a routed model, so ONNX clients feed token ids
    only. Shares the model's layers and weights.

    Args:
        model: a built `kmtl.MultiTaskModel` whose sharing mode routes by task.
        names: the task outputs to return.

    Example:
        >>> served = PerTaskModel(model, ["sentiment"])
        >>> served({k: x[k] for k in ("token_ids", "segment_ids", "padding_mask")})["sentiment"].shape
        TensorShape([2, 2])
    """

    def __init__(self, model, names=None, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_per_task"), **kwargs)
        self.routed = model
        self.names = [t.name for t in model.tasks] if names is None else list(names)
        self.tasks = [t for t in model.tasks if t.name in self.names]
        self.built = True

    def call(self, inputs):
        return per_task_outputs(self.routed, inputs, self.names)
