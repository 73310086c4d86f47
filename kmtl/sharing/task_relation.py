"""`TaskRelation`: a penalty that pulls related tasks' representations together.

A layer that a sharing mode with per-task private parameters attaches (`kmtl.sharing.soft`
and `kmtl.sharing.adapters` do): the mode runs the batch through every task's private path,
pools each, and calls the layer on the stacked features (`related_outputs`); the layer adds
``weight * sum_ij R_ij |f_i - f_j|^2`` with ``add_loss`` and reports ``R`` through
``logged_values()``. `check_relation_options` checks a mode's three relation options.
"""

from __future__ import annotations

import json
from typing import Dict, List, Mapping, Optional, Sequence, Union

import keras
import numpy as np
from keras import ops

RELATION_MOMENTUM = 0.99
"""How slowly a learned relation follows the batches: the running mean of the pair distances
keeps this share of its value at each training step (about a 100-step window)."""
RELATION_CHOICES = ("none", "given", "learned")
DEFAULT_RELATION_WEIGHT = 1e-2
Given = Union[Mapping[str, Mapping[str, float]], Sequence[Sequence[float]]]
"""A given relation: ``{task: {task: weight}}`` or a list of lists in the tasks' order."""


@keras.saving.register_keras_serializable(package="kmtl")
class TaskRelation(keras.layers.Layer):
    """The task-relation regulariser ``L_R = weight * sum_ij R_ij mean_b |f_i,b - f_j,b|^2``.

    ``f_i`` is task ``i``'s representation of the batch: its examples run through task
    ``i``'s private parameters and pooled (``[batch, d]``); the sum runs over ordered pairs
    ``i != j`` and the squared distance sums over the ``d`` features and averages over the
    batch. With private parameters (soft sharing, adapters) the ``f_i`` differ; under hard
    sharing they are equal and the penalty is zero, so the modes that do not route by task
    do not take it.

    ``R`` is

    * **given** (``matrix``): ``R_ij >= 0``, read as it is (``R_ij`` and ``R_ji`` both count;
      the diagonal has no effect). The given matrix carries the scale together with ``weight``.
    * **learned** (``matrix=None``), as in Zhang & Yeung, "A Convex Formulation for Learning
      Task Relationships in Multi-Task Learning", UAI 2010, by alternating minimisation:
      with the features fixed, ``R`` is the closed-form minimiser over the simplex of
      ``sum_ij R_ij D_ij - tau * H(R)``, i.e. ``R = softmax over the pairs i != j of
      (-D_ij / tau)``, where ``D`` is a running mean of the batches' pair distances
      (`RELATION_MOMENTUM`) and ``tau`` their mean (so ``R`` does not depend on the
      features' scale); with the relation fixed, the features take a gradient step. The
      normalisation (``sum_ij R_ij = 1``, ``R >= 0``) keeps ``R`` from collapsing to zero and
      the entropy term ``H`` keeps it from collapsing onto the one closest pair. ``R`` starts
      uniform and is not a trainable weight (no gradient reaches it); tasks whose features
      stay close get more weight, which pulls them closer still.

    ``logged_values()`` returns every ``R_ij`` (``i != j``) as ``<task_i>_relation_<task_j>``.

    Args:
        num_tasks: number of tasks (at least two).
        matrix: ``R`` given: a ``num_tasks x num_tasks`` list of lists in the tasks' order, or
            a ``{task: {task: weight}}`` mapping (pairs left out weigh 0; read once
            ``task_names`` are known: `kmtl.MultiTaskModel` sets them); ``None`` to learn ``R``.
        weight: the penalty's factor.
        task_names: the task names, for the log names (default ``task0``, ``task1``...) and a
            mapping ``matrix``.

    Example:
        >>> relation = TaskRelation(num_tasks=3, weight=1e-2, task_names=["a", "b", "c"])
        >>> loss = relation(features, training=True)   # features: [3, batch, d]
        >>> sorted(relation.logged_values())[:2]
        ['a_relation_b', 'a_relation_c']
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts
    task_specific = True  # no task's loss reaches R: left out of kmtl.sharing.counts.shared_variables

    def __init__(self, num_tasks: int, matrix: Optional[Given] = None, weight: float = 1e-2,
                 task_names: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        if self.num_tasks < 2:
            raise ValueError(f"TaskRelation relates tasks to each other: it needs at least two tasks, got {num_tasks}")
        if not float(weight) >= 0:
            raise ValueError(f"TaskRelation weight must be >= 0, got {weight!r}")
        self.weight = float(weight)
        self._given = None if matrix is None else json.dumps(_plain(matrix))  # a string: Keras leaves it alone
        self._matrix = None  # the given R as an array, once the task names are known
        self.task_names = task_names
        self.distance = None
        if self.learned:
            self.distance = self.add_weight(name="pair_distance", shape=(self.num_tasks, self.num_tasks),
                                            initializer="zeros", trainable=False, aggregation="mean")
        self.built = True

    @property
    def task_names(self) -> List[str]:
        """The task names of the log figures; setting them resolves a ``{task: {task: weight}}`` matrix."""
        return list(self._names)

    @task_names.setter
    def task_names(self, names):
        named = bool(names)
        names = [str(n) for n in names] if named else [f"task{i}" for i in range(self.num_tasks)]
        if len(names) != self.num_tasks:
            raise ValueError(f"TaskRelation has {self.num_tasks} tasks but {len(names)} task names: {names}")
        self._names = tuple(names)
        given = None if self._given is None else json.loads(self._given)
        if isinstance(given, list) or (given is not None and named):
            self._matrix = np.asarray(relation_matrix(given, names, key="sharing.relation_matrix"), "float32")

    @property
    def learned(self) -> bool:
        """Whether ``R`` is learned (no matrix given)."""
        return self._given is None

    def relation(self):
        """``R`` now, ``[tasks, tasks]`` float32 (a learned one has a zero diagonal)."""
        if not self.learned:
            if self._matrix is None:
                raise ValueError(f"{self.name}: the relation matrix names tasks; set task_names (a MultiTaskModel "
                                 "does) before calling the layer")
            return ops.convert_to_tensor(self._matrix, dtype="float32")
        off = 1.0 - ops.eye(self.num_tasks, dtype="float32")
        distance = ops.convert_to_tensor(self.distance)
        tau = ops.sum(distance * off) / float(self.num_tasks * (self.num_tasks - 1)) + 1e-12
        logits = ops.where(off > 0, -distance / tau, -1e9)
        return ops.reshape(ops.softmax(ops.reshape(logits, (-1,))), (self.num_tasks, self.num_tasks)) * off

    def call(self, features, training=None):
        """Add (and return) the penalty for ``features`` ``[tasks, batch, d]``; a learned ``R``
        first takes in this batch's distances (in training)."""
        features = ops.cast(features, "float32")
        difference = ops.expand_dims(features, 1) - ops.expand_dims(features, 0)  # [T, T, batch, d]
        distance = ops.mean(ops.sum(ops.square(difference), axis=-1), axis=-1)  # [T, T]
        if self.learned and training:
            self.distance.assign(RELATION_MOMENTUM * self.distance
                                 + (1.0 - RELATION_MOMENTUM) * ops.stop_gradient(distance))
        loss = self.weight * ops.sum(ops.stop_gradient(self.relation()) * distance)
        self.add_loss(loss)
        return loss

    def logged_values(self) -> Dict[str, object]:
        """``{<task_i>_relation_<task_j>: R_ij}`` for ``i != j``."""
        relation = self.relation()
        return {f"{a}_relation_{b}": relation[i, j] for i, a in enumerate(self.task_names)
                for j, b in enumerate(self.task_names) if i != j}

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "matrix": None if self._given is None else json.loads(self._given),
                       "weight": self.weight,
                       "task_names": list(self.task_names)})
        return config


def check_relation_options(relation: str, matrix, weight: float) -> None:
    """The checks of a sharing mode's ``task_relation`` / ``relation_matrix`` / ``relation_weight``
    (YAML keys), with messages naming them."""
    if relation not in RELATION_CHOICES:
        raise ValueError(f"task_relation must be one of: {', '.join(RELATION_CHOICES)}; got {relation!r}")
    if not float(weight) >= 0:
        raise ValueError(f"relation_weight must be >= 0, got {weight!r}")
    if relation == "given" and matrix is None:
        raise ValueError("task_relation: given needs relation_matrix ({task: {task: weight}} or a list of lists)")
    if relation != "given" and matrix is not None:
        raise ValueError(f"relation_matrix is only read with task_relation: given (task_relation is "
                         f"{relation}); remove it or set task_relation: given")


ONE_TASK = {"task_relation": "none", "relation_matrix": None}
"""The relation options (YAML keys) of a single-task baseline: one task relates to nothing
(`kmtl.sharing.Sharing.for_one_task` of the modes that have them)."""


def related_outputs(run, num_tasks: int, padding_mask, task_id, relation, training=None):
    """Each example's output of its own task's path, with the relation penalty on the way.

    ``run(t)`` gives the whole batch's output ``[batch, length, d]`` through task ``t``'s
    private parameters; every task's is computed, mean-pooled over the tokens of
    ``padding_mask`` into ``f_t`` ``[batch, d]`` and handed to ``relation`` (`TaskRelation`,
    which adds its loss); the result picks row ``b`` of task ``task_id[b]``'s output, which
    is what the routed path gives. Costs ``num_tasks`` runs: call it in training only.
    """
    outputs = ops.stack([run(t) for t in range(num_tasks)])  # [T, B, L, d]
    mask = ops.cast(ops.expand_dims(padding_mask, -1), outputs.dtype)  # [B, L, 1]
    pooled = ops.sum(outputs * mask, axis=2) / ops.maximum(ops.sum(mask, axis=1), 1.0)  # [T, B, d]
    relation(pooled, training=training)
    route = ops.one_hot(ops.cast(task_id, "int32"), num_tasks, dtype=outputs.dtype)  # [B, T]
    return ops.einsum("tbld,bt->bld", outputs, route)


def relation_matrix(given: Given, task_names: Sequence[str], key: str = "relation_matrix") -> List[List[float]]:
    """A given relation as a ``len(task_names)``-square list of lists.

    ``given`` is a ``{task: {task: weight}}`` mapping (pairs left out weigh 0) or a list of
    lists in the order of ``task_names``; entries must be ``>= 0``. Errors name ``key``.

    Example:
        >>> relation_matrix({"a": {"b": 1.0}}, ["a", "b", "c"])
        [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    names = list(task_names)
    if isinstance(given, Mapping):
        matrix = [[0.0] * len(names) for _ in names]
        for a, row in given.items():
            if not isinstance(row, Mapping):
                raise ValueError(f"{key}: the row of {a!r} must map task names to weights, got {row!r}")
            for b, value in row.items():
                unknown = [n for n in (a, b) if n not in names]
                if unknown:
                    raise ValueError(f"{key}: no task called {unknown[0]!r}; the tasks are: {', '.join(names)}")
                matrix[names.index(a)][names.index(b)] = float(value)
        return _checked_matrix(matrix, len(names), key)
    return _checked_matrix(given, len(names), key)


def _plain(given):
    if isinstance(given, Mapping):
        return {str(a): {str(b): float(v) for b, v in dict(row).items()} if isinstance(row, Mapping) else row
                for a, row in given.items()}
    return [list(map(float, row)) for row in given]


def _checked_matrix(matrix, num_tasks: int, key: str = "matrix") -> List[List[float]]:
    rows = [list(map(float, row)) for row in matrix]
    if len(rows) != num_tasks or any(len(row) != num_tasks for row in rows):
        raise ValueError(f"{key} must be {num_tasks} x {num_tasks} (one row and column per task, in the tasks' "
                         f"order), got {[len(row) for row in rows]} columns per row")
    negative = [(i, j) for i, row in enumerate(rows) for j, v in enumerate(row) if v < 0 or v != v]
    if negative:
        raise ValueError(f"{key}: relation weights must be >= 0 (a negative one would push tasks apart without "
                         f"bound); entries {negative} are not")
    return rows
