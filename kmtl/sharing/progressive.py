"""Progressive networks: a frozen encoder as the first column, a new narrow column per new task
(Rusu et al., "Progressive Neural Networks", arXiv:1606.04671, 2016).

Two pieces:

* `ProgressiveColumns`: one narrow column per new task, each layer of which reads the frozen
  encoder's hidden state of the same depth through a lateral adapter; each example goes
  through its own task's column (routing by ``task_id``), and an example of a task without a
  column gets the frozen encoder's output exactly;
* `ProgressiveNetworks`: the sharing mode (``progressive``) that freezes the backbone and the
  heads of the tasks without a column, taps the backbone's hidden states and adds the columns.
"""

from __future__ import annotations

from typing import Annotated, Dict, List, Optional, Sequence, Tuple

import keras
from keras import ops
from pydantic import Field

from kmtl.sharing.base import TASK_ID, Sharing, hidden_states, transformer_layers
from kmtl.sharing.counts import layers_feeding

DEFAULT_SIZE = 64


@keras.saving.register_keras_serializable(package="kmtl")
class ProgressiveColumns(keras.layers.Layer):
    """New columns beside a frozen one: Rusu et al. 2016, eq. 2 with the paper's non-linear
    lateral adapters (its Sec. 2, "Adapters").

    The frozen column is the encoder: its hidden states ``a_0`` (the embeddings' output) ...
    ``a_N`` (transformer layer ``N``'s output) are this layer's ``states``. Column ``k`` is an
    MLP of width ``m`` (``size``) with ``N + 1`` layers; its layer ``l`` reads its own layer
    ``l - 1`` and, laterally, ``a_l`` (the frozen column's layer below it, as in eq. 2: layer
    ``i`` of a new column reads layer ``i - 1`` of every earlier column)::

        c_0 = f(U_0 f(V_0 (alpha_0 a_0) + v_0) + b_0)
        c_l = f(W_l c_{l-1} + U_l f(V_l (alpha_l a_l) + v_l) + b_l)        l = 1 .. N
        y   = a_N + c_N P + p                                                (the task's sequence output)

    ``V_l`` (``d x m``) is the paper's dimensionality-reducing projection, ``alpha_l`` its
    learned scalar on the lateral input, ``U_l`` and ``W_l`` ``m x m``, ``f`` the tanh GELU
    (BERT's; it converts to ONNX). The column's top state reaches the task through a residual
    up-projection ``P`` (``m x d``) onto the frozen output: a token task's head then reads
    vectors of the width it expects, and with ``P`` and ``p`` starting at zero a fresh column
    returns exactly the frozen encoder's output, so training starts from the frozen model (as
    zero-initialised adapters do). Columns are token-wise MLPs: mixing across tokens comes with
    the laterals, which are the frozen encoder's contextual states; a column of full
    transformer layers would add about 1.8 M parameters per MiniLM layer per task, a column of
    width 64 adds ``(N + 1) (d m + 2 m^2 + 2 m + 1) - m^2 + m d + d`` (251,143 on MiniLM-L6).

    Weights, each with a leading column axis ``K`` (slice ``k`` is column ``k``'s alone:
    routing multiplies a one-hot of the example's column with them, so a task's loss reaches
    no other column): ``lateral_scale`` ``[K, N+1]`` (ones: the frozen states are LayerNorm
    outputs of unit scale, so no rescaling is needed at the start; the paper starts it small
    and random), ``lateral_kernel`` ``[K, N+1, d, m]``, ``lateral_bias`` ``[K, N+1, m]``,
    ``lateral_up_kernel`` ``[K, N+1, m, m]`` (``U``), ``column_kernel`` ``[K, N, m, m]``
    (``W``), ``column_bias`` ``[K, N+1, m]``, ``output_kernel`` ``[K, m, d]`` and
    ``output_bias`` ``[K, d]`` (zeros). Kernels start from a truncated normal with standard
    deviation ``fan_in ** -0.5`` per column.

    Routing: ``column_tasks`` names the task of each column (``None``: every task has one,
    column ``t`` for task ``t``). The names are matched to the model's tasks when the model
    sets ``task_names`` (`kmtl.MultiTaskModel` does once its heads exist; an unknown name is a
    ``ValueError`` naming ``sharing.progressive_tasks``). An example whose task has no column
    (or whose id is outside ``[0, num_tasks)``) gets ``a_N`` itself, selected with
    ``where``: bit for bit what the frozen encoder gives.

    Setting ``task_names`` inside a model also freezes the heads of the tasks without a column
    (the layer named after the task and the ``<task>_...`` layers feeding it, found by walking
    the model's graph on from this layer: Keras 3.15 ``_outbound_nodes``): those tasks belong
    to the frozen column, and their answers must not move while the new tasks train.

    Call args:
        states: the frozen column's ``N + 1`` hidden states, each ``[batch, length, d]``.
        task_id: int ``[batch]``.

    Returns:
        ``(sequence, has_column)``: ``[batch, length, d]`` and bool ``[batch]`` (whether the
        example's task has a column; `ProgressiveNetworks` selects the pooled vector with it).

    Args:
        num_tasks: the model's number of tasks.
        size: column width ``m``.
        column_tasks: the task name of each column, or ``None`` (a column per task).
        task_names: the model's task names (`kmtl.MultiTaskModel` sets them).

    Example:
        >>> columns = ProgressiveColumns(num_tasks=3, size=16, column_tasks=["wnut"],
        ...                              task_names=["sentiment", "ner", "wnut"])
        >>> sequence, has_column = columns([h0, h1, h2], task_id=tf.constant([0, 2]))  # h_l: [2, length, d]
        >>> has_column.numpy()
        array([False,  True])
    """

    parameter_part = "sharing"  # kmtl.sharing.trainable_parameter_counts
    task_specific = True  # per-task weights: left out of kmtl.sharing.counts.shared_variables

    def __init__(self, num_tasks: int, size: int = DEFAULT_SIZE, column_tasks: Optional[Sequence[str]] = None,
                 task_names: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.size = int(num_tasks), int(size)
        self.column_tasks = None if column_tasks is None else tuple(str(t) for t in column_tasks)
        self.num_columns = self.num_tasks if self.column_tasks is None else len(self.column_tasks)
        if self.num_columns < 1:
            raise ValueError(f"{self.name}: sharing.progressive_tasks lists no task; list the tasks that get a column")
        self._routing = None  # column of each task (-1: none), once the task names are known
        self.task_names = task_names

    # ----------------------------------------------------------------- routing
    @property
    def task_names(self) -> List[str]:
        """The model's task names; setting them routes the tasks to their columns (and, inside a
        model, freezes the heads of the tasks without one)."""
        return list(self._names)

    @task_names.setter
    def task_names(self, names):
        named = bool(names)
        names = tuple(str(n) for n in names) if named else tuple(f"task{t}" for t in range(self.num_tasks))
        if len(names) != self.num_tasks:
            raise ValueError(f"{self.name} has {self.num_tasks} tasks but got {len(names)} task names: {list(names)}")
        self._names = names
        if self.column_tasks is None:
            self._routing = tuple(range(self.num_tasks))
        elif named:
            self._routing = column_routing(self.column_tasks, names)
        if named and self._routing is not None:
            self._freeze_heads_without_column()

    def column_of_task(self) -> Tuple[int, ...]:
        """The column of each task (in the model's task order), ``-1`` for a task without one."""
        if self._routing is None:
            raise ValueError(f"{self.name}: the columns are named after tasks ({', '.join(self.column_tasks)}); set "
                             "task_names (a MultiTaskModel does) before calling the layer")
        return self._routing

    def tasks_without_column(self) -> List[str]:
        """The tasks that read the frozen column only (their heads frozen too)."""
        return [name for name, column in zip(self._names, self.column_of_task()) if column < 0]

    def _freeze_heads_without_column(self) -> None:
        old = set(self.tasks_without_column())
        if not old:
            return
        for layer in _downstream(self):
            if layer.name in old:
                for head_layer in layers_feeding(layer, layer.name):
                    head_layer.trainable = False

    # ----------------------------------------------------------------- weights
    def build(self, states_shape, task_id_shape=None):
        d, n, k, m = int(states_shape[-1][-1]), len(states_shape) - 1, self.num_columns, self.size
        if n < 1:
            raise ValueError(f"{self.name} needs the embeddings' output and at least one layer's, got {n + 1} states")

        def normal(fan_in):
            return keras.initializers.TruncatedNormal(stddev=fan_in ** -0.5)

        self.lateral_scale = self.add_weight(name="lateral_scale", shape=(k, n + 1), initializer="ones")
        self.lateral_kernel = self.add_weight(name="lateral_kernel", shape=(k, n + 1, d, m), initializer=normal(d))
        self.lateral_bias = self.add_weight(name="lateral_bias", shape=(k, n + 1, m), initializer="zeros")
        self.lateral_up_kernel = self.add_weight(name="lateral_up_kernel", shape=(k, n + 1, m, m), initializer=normal(m))
        self.column_kernel = self.add_weight(name="column_kernel", shape=(k, n, m, m), initializer=normal(m))
        self.column_bias = self.add_weight(name="column_bias", shape=(k, n + 1, m), initializer="zeros")
        self.output_kernel = self.add_weight(name="output_kernel", shape=(k, m, d), initializer="zeros")
        self.output_bias = self.add_weight(name="output_bias", shape=(k, d), initializer="zeros")

    def call(self, states, task_id):
        states = list(states)
        frozen = states[-1]
        dtype = frozen.dtype
        routing = ops.convert_to_tensor(self.column_of_task(), "int32")
        task_id = ops.cast(task_id, "int32")
        known = ops.logical_and(task_id >= 0, task_id < self.num_tasks)
        column = ops.where(known, ops.take(routing, ops.clip(task_id, 0, self.num_tasks - 1)), -1)
        has_column = column >= 0
        route = ops.one_hot(ops.maximum(column, 0), self.num_columns, dtype=dtype)  # [batch, K]
        route = route * ops.cast(has_column, dtype)[:, None]

        def mine(variable):  # each example's column's slice: [batch, ...]
            return ops.tensordot(route, ops.cast(variable, dtype), axes=1)

        def act(x):
            return keras.activations.gelu(x, approximate=True)

        scale, lateral_kernel, lateral_bias = mine(self.lateral_scale), mine(self.lateral_kernel), mine(self.lateral_bias)
        lateral_up, column_kernel, column_bias = mine(self.lateral_up_kernel), mine(self.column_kernel), mine(self.column_bias)
        hidden = None
        for layer, state in enumerate(states):
            lateral = ops.einsum("bld,bdm->blm", state * scale[:, layer, None, None], lateral_kernel[:, layer])
            lateral = act(lateral + lateral_bias[:, layer, None, :])
            x = ops.einsum("blm,bmn->bln", lateral, lateral_up[:, layer]) + column_bias[:, layer, None, :]
            if hidden is not None:
                x = x + ops.einsum("blm,bmn->bln", hidden, column_kernel[:, layer - 1])
            hidden = act(x)
        delta = ops.einsum("blm,bmd->bld", hidden, mine(self.output_kernel)) + mine(self.output_bias)[:, None, :]
        return ops.where(has_column[:, None, None], frozen + delta, frozen), has_column

    def compute_output_spec(self, states, task_id):
        frozen = states[-1]
        return (keras.KerasTensor(frozen.shape, dtype=frozen.dtype),
                keras.KerasTensor(tuple(task_id.shape), dtype="bool"))

    # ---------------------------------------------------------------- logging
    def logged_values(self) -> Dict:
        """``<task>_lateral_scale``: the mean ``alpha`` of the task's column over its layers (how
        strongly it reads the frozen column), for the training logs (`kmtl.MultiTaskModel.train_step`)."""
        names = self.column_tasks if self.column_tasks is not None else self._names
        return {f"{task}_lateral_scale": ops.mean(self.lateral_scale[k]) for k, task in enumerate(names)}

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "size": self.size,
                       "column_tasks": None if self.column_tasks is None else list(self.column_tasks),
                       "task_names": list(self.task_names)})
        return config


@keras.saving.register_keras_serializable(package="kmtl")
class ProgressiveNetworks(Sharing):
    """Progressive networks: Rusu et al., "Progressive Neural Networks", arXiv:1606.04671, 2016.

    For adding tasks to a trained model without touching what it does. The first column is
    the backbone, entirely frozen, and so are the heads of the tasks that are not in
    ``tasks`` (the *old* tasks): an old task's answers are bit for bit those of the model it
    came from, during and after training. Each task in ``tasks`` (a *new* task) gets a column
    of its own, ``size`` wide, whose every layer reads the frozen layer of the same depth
    through a lateral adapter (`ProgressiveColumns`); its head reads the frozen encoder's output
    plus an up-projection of its column's top state. Only the new columns and the new heads
    train. Each example goes through its own task's column, so joint and alternating batches
    work: the model gets a fourth input ``task_id`` that `kmtl.data` pipelines and the exported
    serving graph fill in (the serving graph tiles a batch once per task, as for adapters).

    Start from a finished run with ``init_from`` (or `kmtl.training.warm_start`): the frozen
    column gets the run's encoder and the old tasks their heads; new columns and new heads
    start fresh, and a fresh column adds exactly nothing (zero up-projection). Without a
    warm start the backbone is the pretrained encoder and the old tasks' heads stay at their
    random start: list every task then (or leave ``tasks`` out: every task gets a column).

    Sentence vector: with ``pooling="mean"`` the masked mean of the task's sequence output; with
    ``pooling="cls"`` the backbone's ``[CLS]`` pooler (``pooled_dense``, frozen) on the
    column-corrected ``[CLS]`` vector for new tasks, the backbone's own pooled output for old
    ones. The training logs carry ``<task>_lateral_scale`` per column.

    The old tasks' rows still pass through the columns (their result is discarded), and the
    serving graph runs the encoder once per task it serves; the old tasks' features could be
    computed once, which this mode leaves for later. A run trained with ``progressive`` is
    itself a good ``init_from`` for more tasks only if they list its columns' tasks again (its
    columns then train on: the frozen column is always the plain encoder).

    Needs a keras-hub backbone built from ``keras_hub.layers.TransformerEncoder`` layers
    (BERT and its relatives).

    Args:
        tasks: the new tasks (YAML ``progressive_tasks``), each of which gets a column;
            ``None``: every task gets one (the pretrained encoder as the first column).
        size: column width (YAML ``column_size``).

    Example:
        >>> model = kmtl.build_model(encoder, old_tasks + [wnut], sharing="progressive",
        ...                          progressive_tasks=["wnut"], column_size=64)
        >>> kmtl.training.warm_start(model, old_model)          # the trained model as column 1
        >>> model.fit(kmtl.data.mixture(old_tasks + [wnut], train, pre, granularity="joint"), epochs=3)
    """

    name = "progressive"
    choice_order = 8  # position in lists of choices (`kmtl.registry`)
    config_keys = {"tasks": "progressive_tasks", "size": "column_size"}  # YAML keys
    routes_by_task = True

    def __init__(self, tasks: Optional[Annotated[List[str], Field(min_length=1)]] = None,
                 size: Annotated[int, Field(ge=1)] = DEFAULT_SIZE):
        if isinstance(tasks, str):
            tasks = [tasks]
        if tasks is not None:
            tasks = [str(t) for t in tasks]
            if not tasks:
                raise ValueError("sharing.progressive_tasks is empty; list the tasks that get a column "
                                 "(or leave it out: every task gets one)")
            repeated = sorted({t for t in tasks if tasks.count(t) > 1})
            if repeated:
                raise ValueError(f"sharing.progressive_tasks lists {', '.join(map(repr, repeated))} more than once")
        if isinstance(size, bool) or int(size) != size or int(size) < 1:
            raise ValueError(f"column_size must be a positive integer, got {size!r}")
        self.tasks = tasks
        self.size = int(size)
        self._num_tasks = None

    def frozen_tasks(self, task_names: Sequence[str]) -> List[str]:
        """The tasks without a column: encoder and heads frozen, nothing of theirs trains (their
        batches would cost steps and teach nothing, so the training mixture leaves them out)."""
        return [] if self.tasks is None else [t for t in task_names if t not in self.tasks]

    def for_one_task(self, task: str):
        """A listed task's baseline: a column of its own on the frozen encoder; an unlisted one's
        (the multi-task run leaves it as ``init_from`` trained it): plain fine-tuning, ``full``."""
        if self.tasks is None:
            return self.name, {}
        return (self.name, {"progressive_tasks": [task]}) if task in self.tasks else ("full", {})

    def prepare(self, backbone, num_tasks: int) -> None:
        transformer_layers(backbone, self.name)  # fail early on backbones without keras-hub transformer layers
        if self.tasks is not None and len(self.tasks) > num_tasks:
            raise ValueError(f"sharing.progressive_tasks lists {len(self.tasks)} tasks but the model has {num_tasks}")
        backbone.trainable = False
        self._num_tasks = int(num_tasks)

    def encode(self, backbone, inputs: dict) -> dict:
        if self._num_tasks is None:
            raise RuntimeError("call prepare(backbone, num_tasks) before encode")
        # the frozen column: one pass through the backbone's own functional graph, its hidden
        # states tapped for the laterals
        frozen, states = hidden_states(backbone, inputs, self.name)
        policy = transformer_layers(backbone, self.name)[-1].dtype_policy  # mixed precision: the encoder's
        columns = ProgressiveColumns(self._num_tasks, self.size, self.tasks, dtype=policy,
                                     name="progressive_columns")
        sequence, has_column = columns(states, task_id=inputs[TASK_ID])
        encoded = {"sequence_output": sequence}
        if "pooled_output" in frozen:
            try:
                pooler = backbone.get_layer("pooled_dense")
            except ValueError:
                pooler = None
            pooled = frozen["pooled_output"]
            if pooler is not None:  # BERT's [CLS] pooler on the new tasks' [CLS] vectors; old ones keep the backbone's
                pooled = ops.where(ops.expand_dims(has_column, -1), pooler(sequence[:, 0, :]), pooled)
            encoded["pooled_output"] = pooled
        return encoded

    def get_config(self):
        return {"tasks": None if self.tasks is None else list(self.tasks), "size": self.size}


def column_routing(column_tasks: Sequence[str], task_names: Sequence[str]) -> Tuple[int, ...]:
    """The column of each of ``task_names`` (``-1``: none) for columns named ``column_tasks``;
    ``ValueError`` naming ``sharing.progressive_tasks`` for a name that is not a task.

    Example:
        >>> column_routing(["wnut"], ["sentiment", "ner", "wnut"])
        (-1, -1, 0)
    """
    names = list(task_names)
    unknown = [t for t in column_tasks if t not in names]
    if unknown:
        raise ValueError(f"sharing.progressive_tasks: no task called {unknown[0]!r}; the tasks are: {', '.join(names)}")
    return tuple(list(column_tasks).index(n) if n in column_tasks else -1 for n in names)


def progressive_columns(model) -> Optional[ProgressiveColumns]:
    """The `ProgressiveColumns` layer of a model built with ``sharing="progressive"``, or ``None``."""
    return next((layer for layer in getattr(model, "layers", []) if isinstance(layer, ProgressiveColumns)), None)


def _downstream(layer) -> list:
    """Every operation that reads ``layer``'s outputs, directly or not (Keras 3.15 ``_outbound_nodes``)."""
    found, todo, seen = [], [layer], {id(layer)}
    while todo:
        for node in getattr(todo.pop(), "_outbound_nodes", []):
            operation = node.operation
            if operation is not None and id(operation) not in seen:
                seen.add(id(operation))
                found.append(operation)
                todo.append(operation)
    return found
