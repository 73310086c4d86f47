"""`TaskAffinity`: do the tasks help or hurt each other on the shared encoder? Measured during `fit`.

Every ``every`` training steps, on a fixed *probe* batch per task (drawn once from each task's
training data, so the figures compare over time; the training step itself is untouched), the
callback computes two figures per pair of tasks:

* **gradient cosine** ``cos(g_a, g_b)``: the cosine between task ``a``'s and task ``b``'s loss
  gradients on the *shared* parameters (negative: the tasks pull the encoder apart, the
  situation PCGrad, Yu et al. 2020, projects away);
* **lookahead affinity** ``Z(i→j) = 1 - L_j(θ_s - η ∇_s L_i, θ_j) / L_j(θ_s, θ_j)``, Fifty et
  al., "Efficiently Identifying Task Groupings in Multi-Task Learning" (NeurIPS 2021, eq. 3):
  how much one plain SGD step of the shared parameters ``θ_s`` on task ``i``'s loss, at the
  optimizer's current learning rate ``η``, lowers task ``j``'s loss (positive: ``i`` helps
  ``j``). The step is taken inside a `keras.StatelessScope`: no variable is ever assigned, so
  weights and optimizer state stay bit-identical.

Both are averaged over the probes (TAG averages ``Z`` over training); `kmtl.compare.grouping`
turns the averaged affinities into suggested task groupings, and ``kmtl affinity CONFIG``
writes the whole report (`kmtl.compare.affinity`).

**Shared parameters** are found from the probe gradients, not from layer names: a trainable
variable outside the task heads is shared when every task's loss reaches it (a nonzero
gradient) *at a common element*. So per-task adapters, per-task layer copies, per-task gates
and mixing weights (stacked ``[tasks, ...]`` and routed by ``task_id``: each task's gradient
lies in its own slice) are left out, while the embeddings, the transformer layers, LoRA
factors and MMoE experts count. The set is decided at each probe (LoRA's ``A`` factors get
gradients only once ``B`` has left zero) and reported as ``shared_parameters``.

Losses are computed with ``training=False`` (no dropout: the figures of two probes differ
only because the model changed) over the examples (tokens) each task owns, unweighted by the
loss weights, without the model's regularization losses.

Under a `tf.distribute` strategy the probes run outside the replicated step, in
cross-replica context, on the whole probe batch (one device computes them, as for
``model.predict`` on one batch); nothing is all-reduced, since nothing is applied.

Logged at the end of each epoch in which a probe ran (so in ``History`` and, through
`kmtl.training.tensorboard.TaskTensorBoard`, in TensorBoard's ``run`` section), the means of
that epoch's probes: ``grad_cosine/<a>__<b>`` for each pair ``a < b`` (in task order) and
``affinity/<a>_to_<b>`` for each ordered pair. The whole series is in `TaskAffinity.series`.

Example:
    >>> affinity = TaskAffinity(train_examples, every=50)          # {task: [Example, ...]}
    >>> model.fit(train, epochs=3, callbacks=[affinity, kmtl.callbacks.TaskTensorBoard("logs")])
    >>> affinity.cosine, affinity.affinity                          # [tasks, tasks] means
    >>> history.history["grad_cosine/sentiment__ner"]
"""

from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

PROBE_SIZE = 32
"""Examples per task in a probe batch, by default."""


def cosine_key(a: str, b: str) -> str:
    """The log name of the gradient cosine of tasks ``a`` and ``b``: ``grad_cosine/<a>__<b>``."""
    return f"grad_cosine/{a}__{b}"


def affinity_key(source: str, target: str) -> str:
    """The log name of the lookahead affinity of ``source`` onto ``target``: ``affinity/<source>_to_<target>``."""
    return f"affinity/{source}_to_{target}"


def probe_batches(tasks, examples_by_task: Mapping[str, Sequence], preprocessor, size: int = PROBE_SIZE,
                  seed: int = 0) -> Dict[str, tuple]:
    """One fixed batch ``(x, y, sample_weight)`` per task, as kmtl's pipelines make them.

    ``size`` examples of each task are drawn at random (``seed``) from ``examples_by_task``
    (all of them when fewer) and encoded as `kmtl.data.pipeline.task_dataset` encodes them
    (`kmtl.data.pipeline.encode_batch`): ``x`` holds ``task_id``; ``y`` and ``sample_weight``
    hold every task's entry, weight 0 for the others. Each batch is trimmed to its longest
    sequence. A masked-LM task is probed with its evaluation masking (drawn once, seeded), so
    the probe takes no pass of the training stream's dynamic masking; another task with an
    ``augment`` gets it applied once.

    Args:
        tasks: the model's tasks, in the model's order (``model.tasks``).
        examples_by_task: ``{task name: [Example, ...]}``, the training examples.
        preprocessor: the model's `kmtl.data.Preprocessor` (``model.preprocessor``).

    Example:
        >>> probe = probe_batches(model.tasks, train_examples, model.preprocessor, size=16)
        >>> x, y, w = probe["sentiment"]
    """
    from kmtl.data.pipeline import encode_batch, raw_tensors, trim_batch

    rng = np.random.default_rng(seed)
    batches = {}
    for task in tasks:
        examples = list(examples_by_task.get(task.name) or [])
        if not examples:
            raise ValueError(f"task {task.name!r} has no training examples to draw its probe batch from")
        pick = sorted(rng.choice(len(examples), size=min(size, len(examples)), replace=False).tolist())
        raw, labels = raw_tensors(task, [examples[i] for i in pick])
        x, y, w = encode_batch(task, tasks, preprocessor, raw, labels)  # eager: no tf.data function to trace
        if task.augment is not None:
            masked, aux = encode_batch(task, tasks, preprocessor, raw)
            if "masked_labels" in aux:  # masked LM: its evaluation masking, seeded, leaves training's passes alone
                x, y, w = masked, {**y, task.name: aux["masked_labels"]}, {**w, task.name: aux["masked_weights"]}
            else:  # per example, as in the training pipeline
                x, y, w = next(iter(tf.data.Dataset.from_tensor_slices((x, y, w)).map(task.augment).batch(len(pick))))
        batches[task.name] = trim_batch(tasks, x, y, w)
    return batches


def pair_names(names: Sequence[str]) -> List[tuple]:
    """The unordered pairs ``(a, b)``, ``a`` before ``b`` in ``names``."""
    return [(a, b) for k, a in enumerate(names) for b in names[k + 1:]]


class TaskAffinity(keras.callbacks.Callback):
    """Log the gradient cosine and TAG's lookahead affinity of every pair of tasks during ``fit``.

    See the module docstring for the figures and what counts as shared.

    Args:
        probe: the probe data: ``{task: [Example, ...]}`` (the training examples; a batch of
            ``probe_size`` per task is drawn from them with `probe_batches` when training
            starts, with ``model.tasks`` and ``model.preprocessor``) or ``{task: (x, y,
            sample_weight)}`` batches made beforehand. Every task of the model needs one.
        every: probe after every ``every`` optimizer steps.
        learning_rate: the lookahead step size ``η``; ``None`` (default): the optimizer's
            current learning rate, as in TAG (with a schedule, the larger of the rates of the
            step just taken and of the next one). While it is 0 the lookahead is skipped and
            only the cosines are recorded.
        lookahead: compute the lookahead affinity (``n`` forward passes per task and probe:
            ``n²`` in all); ``False``: the cosines alone.
        probe_size: examples per task in a probe batch drawn from examples.
        seed: the draw of the probe examples.

    Attributes:
        task_names: the tasks, in the model's order (the matrices' order).
        series: one dict per probe: ``step``, ``learning_rate``, ``cosine`` and ``affinity``
            (``[tasks][tasks]`` lists; ``affinity`` ``None`` when skipped), ``losses`` (each
            task's probe loss), ``shared_parameters``.
        seconds: the time spent probing.

    Example:
        >>> affinity = TaskAffinity(train_examples, every=20)
        >>> model.fit(train, epochs=2, steps_per_epoch=100, callbacks=[affinity])
        >>> dict(zip(affinity.task_names, affinity.affinity[0]))   # how the first task helps each task
    """

    def __init__(self, probe: Mapping, every: int = 10, learning_rate: Optional[float] = None, lookahead: bool = True,
                 probe_size: int = PROBE_SIZE, seed: int = 0):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        self.probe = dict(probe)
        self.every = int(every)
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.lookahead = bool(lookahead)
        self.probe_size = int(probe_size)
        self.seed = int(seed)
        self.task_names: List[str] = []
        self.series: List[dict] = []
        self.seconds = 0.0
        self._batches = None
        self._built_for = None
        self._last_step = None
        self._epoch_rows: List[dict] = []

    # ------------------------------------------------------------------ results
    @property
    def cosine(self) -> np.ndarray:
        """``[tasks, tasks]`` mean gradient cosine over the probes (NaN before any probe)."""
        return _mean([row["cosine"] for row in self.series], len(self.task_names))

    @property
    def affinity(self) -> np.ndarray:
        """``[tasks, tasks]`` mean lookahead affinity ``Z[i, j] = Z(i→j)`` over the probes that took a step."""
        return _mean([row["affinity"] for row in self.series if row["affinity"] is not None], len(self.task_names))

    @property
    def lookahead_probes(self) -> int:
        """How many probes computed the lookahead affinity."""
        return sum(row["affinity"] is not None for row in self.series)

    # ----------------------------------------------------------------- callback
    def set_model(self, model):
        super().set_model(model)
        if self._built_for is not model:
            if not hasattr(model, "tasks"):
                raise ValueError("TaskAffinity needs a kmtl MultiTaskModel (kmtl.build_model): it reads model.tasks")
            self.task_names = [t.name for t in model.tasks]
            missing = [n for n in self.task_names if n not in self.probe]
            if missing:
                raise ValueError(f"TaskAffinity has no probe data for tasks {missing}; give one for every task "
                                 f"of the model ({', '.join(self.task_names)})")
            self._batches, self._built_for = None, model

    def on_train_begin(self, logs=None):
        if self._batches is None:
            self._batches = self._make_batches()
        self._last_step = self._step()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_rows = []

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step // self.every > self._last_step // self.every:
            self.probe_now(step)
        self._last_step = step

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._epoch_rows:
            return
        logs.update(self.epoch_logs(self._epoch_rows))

    # ------------------------------------------------------------------ probing
    def probe_now(self, step: Optional[int] = None) -> dict:
        """Probe the model as it is now; the row is added to `series` (and to the epoch's logs).

        Callable outside ``fit`` too (after `set_model`), e.g. on a trained model.
        """
        if self._batches is None:
            self._batches = self._make_batches()
        start = time.perf_counter()
        row = self.measure(step if step is not None else self._step())
        self.seconds += time.perf_counter() - start
        self.series.append(row)
        self._epoch_rows.append(row)
        return row

    def measure(self, step: int = 0) -> dict:
        """One probe: per-task gradients on the shared parameters, their cosines, and the lookahead."""
        model = self.model
        names = self.task_names
        candidates = _candidate_variables(model)
        losses, grads = {}, {}
        for name in names:
            with tf.GradientTape() as tape:
                loss = self._loss(name)
            losses[name] = loss
            grads[name] = tape.gradient(loss, candidates)
        shared = shared_indices(candidates, [grads[n] for n in names])
        gram = np.zeros((len(names), len(names)), dtype=np.float64)
        for k in shared:
            stacked = tf.stack([tf.reshape(tf.cast(_dense(grads[n][k]), tf.float32), [-1]) for n in names])
            gram += tf.matmul(stacked, stacked, transpose_b=True).numpy().astype(np.float64)
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = np.clip(gram / np.outer(norms, norms), -1.0, 1.0)
        cosine[np.outer(norms, norms) == 0] = np.nan

        rate = self._rate()
        affinity = None
        if self.lookahead and rate > 0 and shared:
            base = np.array([float(losses[n]) for n in names])
            affinity = np.zeros((len(names), len(names)))
            for i, source in enumerate(names):
                mapping = [(candidates[k], candidates[k].value - tf.cast(rate * _dense(grads[source][k]),
                                                                           candidates[k].dtype))
                           for k in shared]
                with keras.StatelessScope(state_mapping=mapping):
                    after = np.array([float(self._loss(target)) for target in names])
                with np.errstate(divide="ignore", invalid="ignore"):
                    affinity[i] = 1.0 - after / base
        return {"step": int(step), "learning_rate": rate, "cosine": cosine.tolist(),
                "affinity": None if affinity is None else affinity.tolist(),
                "losses": {n: float(losses[n]) for n in names},
                "shared_parameters": int(sum(int(np.prod(candidates[k].shape)) for k in shared))}

    def epoch_logs(self, rows: Sequence[dict]) -> Dict[str, float]:
        """``grad_cosine/<a>__<b>`` and ``affinity/<a>_to_<b>`` means over ``rows`` (probe results)."""
        names, n = self.task_names, len(self.task_names)
        index = {name: k for k, name in enumerate(names)}
        cosine = _mean([r["cosine"] for r in rows], n)
        logs = {cosine_key(a, b): float(cosine[index[a], index[b]]) for a, b in pair_names(names)}
        steps = [r["affinity"] for r in rows if r["affinity"] is not None]
        if steps:
            z = _mean(steps, n)
            logs.update({affinity_key(a, b): float(z[index[a], index[b]]) for a in names for b in names if a != b})
        return logs

    # ---------------------------------------------------------------- internals
    def _make_batches(self) -> Dict[str, tuple]:
        model = self.model
        given = {name: self.probe[name] for name in self.task_names}
        if all(isinstance(v, (tuple, list)) and len(v) == 3 and isinstance(v[0], Mapping) for v in given.values()):
            return given
        preprocessor = getattr(model, "preprocessor", None)
        if preprocessor is None:
            raise ValueError("TaskAffinity draws its probe batches from examples with model.preprocessor, which this "
                             "model lacks: build it with kmtl.build_model, or pass {task: (x, y, sample_weight)} batches")
        return probe_batches(model.tasks, given, preprocessor, self.probe_size, self.seed)

    def _loss(self, name: str) -> tf.Tensor:
        """Task ``name``'s mean loss over the examples (tokens) it owns in its probe batch."""
        model = self.model
        task = next(t for t in model.tasks if t.name == name)
        x, y, w = self._batches[name]
        head = model.outputs_model([name]) if hasattr(model, "outputs_model") else model
        inputs = head.input
        if isinstance(inputs, dict):
            x = {k: v for k, v in x.items() if k in inputs}
        pred = head(x, training=False)[name]
        target = y[name]
        if isinstance(target, dict):  # teacher annealing's {"gold", "teacher"}: the gold labels
            target = target["gold"]
        per_example = tf.cast(task.per_example_loss(task.conform_label(target, pred), pred), tf.float32)
        weight = tf.cast(w[name], tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(per_example * weight), tf.reduce_sum(weight))

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        return int(iterations.numpy()) if iterations is not None else 0

    def _rate(self) -> float:
        """``learning_rate``, else the optimizer's: the larger of the rates of the step just taken
        and of the next one (a warm-up schedule's first step and a linear decay's last are 0)."""
        if self.learning_rate is not None:
            return self.learning_rate
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return 0.0
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
        schedule = getattr(optimizer, "_learning_rate", None)  # Keras keeps a schedule there (3.x)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            step = self._step()
            return max(float(keras.ops.convert_to_numpy(schedule(s))) for s in {max(step - 1, 0), step})
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _candidate_variables(model) -> list:
    """The model's trainable variables outside its task heads (`kmtl.sharing.counts.head_layers`)."""
    from kmtl.sharing.counts import head_layers

    heads = {id(v) for task in model.tasks for layer in head_layers(model, task.name) for v in layer.weights}
    return [v for v in model.trainable_variables if id(v) not in heads]


def _dense(gradient):
    return tf.convert_to_tensor(gradient)  # tf.IndexedSlices (embedding lookups) made dense


def shared_indices(variables: Sequence, gradients: Sequence[Sequence]) -> List[int]:
    """Indices of the ``variables`` that every task's loss reaches at a common element.

    Args:
        variables: the candidate variables.
        gradients: one list per task, each task's gradients on ``variables`` (``None``: the
            loss does not depend on the variable).

    A variable is kept when no task's gradient is ``None`` and some element has a nonzero
    gradient for every task. Per-task slices of one stacked variable (adapters, gates routed
    by ``task_id``) have disjoint supports and are left out; so are a task's own copies
    (zero gradients for the other tasks).

    Example:
        >>> shared_indices([v], [[tf.constant([1.0, 0.0])], [tf.constant([0.0, 2.0])]])   # disjoint: per-task
        []
    """
    kept = []
    for k in range(len(variables)):
        per_task = [g[k] for g in gradients]
        if any(g is None for g in per_task):
            continue
        common = tf.reduce_all(tf.stack([tf.not_equal(_dense(g), 0) for g in per_task]), axis=0)
        if bool(tf.reduce_any(common)):
            kept.append(k)
    return kept


def _mean(matrices: Sequence, n: int) -> np.ndarray:
    """The elementwise mean of ``[n, n]`` matrices, ignoring NaN (NaN where nothing is left)."""
    if not matrices:
        return np.full((n, n), np.nan)
    stacked = np.array([np.asarray(m, dtype=np.float64) for m in matrices])
    finite = np.isfinite(stacked)
    counts = finite.sum(axis=0)
    sums = np.where(finite, stacked, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
