"""`MultiTaskModel`: a functional Keras model, shared encoder in, one named output per task."""

from __future__ import annotations

import inspect
import json
import warnings
from typing import Dict, NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras.src.utils.tracking import DotNotTrackScope  # private: see compile

from kmtl.activations import fast_activations
from kmtl.attention import fast_attention
from kmtl.dense import fast_dense
from kmtl.dropout import fast_dropout
from kmtl.layer_norm import fast_layer_norm
from kmtl.metrics import TaskLossTrackers, TaskMetrics
from kmtl.model.multi_worker_fit import is_multi_worker, local_batch, rank1_logs
from kmtl.model.per_task import run_tasks
from kmtl.model.pooling import MaskedMeanPooling
from kmtl.model.precision import float32_layers, is_loss_scaled
from kmtl.model.raw_text import is_raw_text, text_inputs
from kmtl.model.step_hook import StepHook, hooked_train_step
from kmtl.model.weighting_state import WeightingState
from kmtl.sharing import (
    INPUT_NAMES,
    SHARING_CLASSES,
    SHARING_OPTION_KEYS,
    TASK_ID,
    apply_sharing,
    make_sharing,
    sharing_from_config,
)


class TaskLoss(NamedTuple):
    """One task's loss on one replica's part of a batch.

    Attributes:
        share: the replica's sum of the task's per-example losses divided by ``count``.
        count: examples (tokens, for token tasks) the task owns in the *global* batch.
    """

    share: tf.Tensor
    count: tf.Tensor

POOLINGS = ("mean", "cls")


def _serialize_backbone(backbone):
    """``keras.saving.serialize_keras_object(backbone)`` as a JSON string, or ``None`` if it
    cannot be serialized (the model then builds and trains; only `MultiTaskModel.get_config`
    refuses). A string, not a dict: Keras tracks a layer's dict attributes, and a copy of
    such a dict would copy the model's tracker with it."""
    try:
        return json.dumps(keras.saving.serialize_keras_object(backbone))
    except Exception:
        return None


def _json_able(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


KERAS_MODEL_ARGUMENTS = {"name", "trainable", "dtype"}
"""`keras.Model` keywords a `MultiTaskModel` passes on (other keywords are sharing options or errors)."""

@keras.saving.register_keras_serializable(package="kmtl")
class MultiTaskModel(keras.Model):
    """A shared keras-hub encoder behind one named output per task.

    A functional `keras.Model` (inputs ``token_ids``, ``segment_ids``, ``padding_mask``, plus
    ``task_id`` with per-task adapters; outputs ``{task.name: logits/score}``) that also
    computes the multi-task loss correctly:

    * each task's loss is the mean over the examples (tokens, for tagging) it *owns* in the
      batch, normalised by the owned count summed over all replicas, so 1 and N replicas give
      the same update and a task is not diluted by other tasks' examples;
    * the total is ``sum_t loss_weights[t] * loss_t``, where ``loss_weights`` are
      non-trainable variables that weighting callbacks assign between steps (no retrace);
    * ``<task>_loss`` in the logs is the mean over owned examples of the epoch;
    * built under a mixed precision policy (`kmtl.model.precision.precision_scope`), the
      encoder computes in float16/bfloat16 while the pooling and the heads compute in float32:
      outputs and per-task losses are float32.

    Build it with `kmtl.build_model`. `compile` fills in each task's metrics (weighted by
    ownership) and accepts ``loss_weights`` as floats.

    Args:
        encoder: a `kmtl.backbone.Encoder` (or a keras-hub backbone).
        tasks: the `kmtl.tasks.Task` list; names become output names.
        pooling: sentence vector for sentence-level heads: ``mean`` (masked mean of token
            vectors, default) or ``cls`` (the backbone's pooled ``[CLS]`` output).
        sharing: how tasks share the backbone (`kmtl.sharing`): ``full`` (fine-tune
            everything), ``frozen`` (train heads only), ``lora`` (shared low-rank updates, Hu
            et al. 2022), ``adapters`` (per-task bottleneck adapters, Houlsby et al. 2019;
            adds the ``task_id`` input), or a `kmtl.sharing.Sharing` object.
        **kwargs: the chosen mode's options, keyed as in the YAML ``sharing`` section
            (``lora_rank``, ``adapter_size``...: `kmtl.sharing.make_sharing`; those of other
            modes are ignored), and `keras.Model`'s own (``name``, ``trainable``).
        weighting_state: ``{"strategy", "shapes"}`` of a `WeightingState` to make at once (what
            `from_config` passes, so a saved strategy state loads); weighting callbacks
            otherwise make it when ``fit`` starts.

    Inputs given as a dict may carry keys the model does not read: kmtl's pipelines always
    add ``task_id`` (the example's task index in ``tasks``), which only ``adapters`` uses.

    Example:
        >>> model = kmtl.build_model(kmtl.load_backbone("tiny"), [kmtl.tasks.Classification("s", ["a", "b"])])
        >>> model.compile(optimizer="adam")
        >>> model.fit(train_dataset, epochs=1)
    """

    def __init__(self, encoder, tasks: Sequence, pooling: str = "mean", sharing="full",
                 weighting_state=None, **kwargs):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        options = {key: kwargs.pop(key) for key in SHARING_OPTION_KEYS if key in kwargs}
        unknown = sorted(set(kwargs) - KERAS_MODEL_ARGUMENTS)  # keras' Functional drops unknown keywords silently
        if unknown:
            raise TypeError(f"unknown argument {', '.join(map(repr, unknown))}: sharing options are "
                            f"{', '.join(sorted(SHARING_OPTION_KEYS))} (keyed as in the YAML sharing section)")
        strategy = make_sharing(sharing, **options)
        names = [t.name for t in tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks must be non-empty with unique names, got {names}")
        backbone = getattr(encoder, "backbone", encoder)
        backbone_config = _serialize_backbone(backbone)  # before sharing changes it (see get_config)
        fast_activations(backbone)  # GELU in float32, fused by XLA in training (kmtl.activations)
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
        if strategy.routes_by_task:
            inputs[TASK_ID] = keras.Input(shape=(), dtype="int32", name=TASK_ID)
        encoded = apply_sharing(strategy, backbone, inputs, len(names))
        if pooling == "mean" and hasattr(backbone, "get_layer"):
            try:  # the [CLS] pooler is unused with mean pooling: keep it out of the optimizer
                backbone.get_layer("pooled_dense").trainable = False
            except ValueError:
                pass
        sequence = encoded["sequence_output"]
        with float32_layers():  # under a mixed precision policy too: float32 logits and losses
            pooled = (MaskedMeanPooling(name="mean_pooling")(sequence, inputs["padding_mask"])
                      if pooling == "mean" else encoded["pooled_output"])
            # heads read the sentence vector, the token vectors and, for kinds that need them (entity
            # markers, answer spans), the model's symbolic inputs themselves
            features = {"sequence": sequence, "pooled": pooled, "inputs": inputs,
                        "tokenizer": getattr(encoder, "tokenizer", None)}  # relation heads: marker ids
            outputs = {task.name: task.build_head(features) for task in tasks}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        fast_dropout(self)  # 16 random bits per element instead of a uniform float (kmtl.dropout)
        fast_layer_norm(self)  # LayerNormalization with a hand-written float32 backward (kmtl.layer_norm)
        fast_attention(self)  # self-attention in plain matmuls instead of Keras' einsums (kmtl.attention)
        fast_dense(self)  # inference: feed-forward matmul + bias + GELU as one oneDNN op (kmtl.dense)

        self.tasks = list(tasks)
        self.encoder_spec = getattr(encoder, "spec", None)
        self._backbone_config = backbone_config
        self.pooling, self.sharing = pooling, strategy.name
        self.sharing_options = strategy.get_config()  # rebuilds it: kmtl.sharing.sharing_from_config
        self.routes_by_task = strategy.routes_by_task
        self.task_weights = {
            t.name: keras.Variable(1.0, trainable=False, dtype="float32", name=f"loss_weight_{t.name}",
                                   aggregation="only_first_replica")
            for t in tasks
        }
        # λ of teacher annealing (Clark et al. 2019): the gold labels' share of a distilled task's
        # target, 1.0 (gold only) until a `kmtl.distill.TeacherAnnealing` callback moves it
        self.teacher_lambda = keras.Variable(1.0, trainable=False, dtype="float32", name="teacher_lambda",
                                             aggregation="only_first_replica")
        # a WeightingState, made by the first weighting strategy that needs one; ``weighting_state``
        # (its {"strategy", "shapes"}) remakes it, at zero, for a saved model's weights to fill
        self.weighting_state = None if weighting_state is None else WeightingState(
            weighting_state["strategy"], weighting_state["shapes"])
        # raw text -> inputs for `predict` on strings (kmtl.data.Preprocessor); build_model attaches one
        self.preprocessor = None
        self._fit_hook = None  # the StepHook of the running `fit` (see kmtl.model.step_hook)
        self._fit_logs_lambda = False
        self.task_loss_trackers = TaskLossTrackers([t.name for t in tasks])
        # layers with figures worth watching (a sharing mode's gates or mixing weights): their
        # `logged_values()` ({log name: scalar tensor}) join every training step's logs
        self._value_loggers = [layer for layer in self.layers if callable(getattr(layer, "logged_values", None))]
        for layer in self._value_loggers:  # they name their figures after the tasks: `<task>_<figure>`
            if hasattr(layer, "task_names"):
                layer.task_names = tuple(names)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        """What `from_config` needs to build this model again (``model.save("m.keras")``).

        Keras' default for a functional model (every layer's config and the graph) cannot
        rebuild this one: ``__init__`` builds the graph itself and keeps the tasks, the
        sharing mode and the loss-weight variables beside it. So the config holds the
        arguments of ``__init__`` and `from_config` runs it again; the rebuilt model has the
        same layers in the same order, and Keras then loads ``model.weights.h5`` into it.

        Keys: ``backbone`` (the keras-hub backbone, `keras.saving.serialize_keras_object`,
        taken before the sharing mode froze it or added LoRA, which ``__init__`` does again),
        ``tasks`` (each `kmtl.tasks.Task.get_config`), ``pooling``, ``sharing`` and
        ``sharing_options`` (`kmtl.sharing.sharing_from_config`),
        ``encoder_spec`` (what `kmtl.load_backbone` was given, e.g. to get the tokenizer
        back; ``None`` when unknown), ``name``, ``trainable``. Weights (LoRA factors,
        adapters, loss weights) are not config: they travel in the weights file.
        """
        if self._backbone_config is None:
            raise ValueError(
                "this model's backbone cannot be serialized by keras.saving.serialize_keras_object, so "
                "the model cannot be saved as .keras; use model.save_weights(...) and rebuild it with "
                "kmtl.build_model before model.load_weights(...)")
        if self.sharing not in SHARING_CLASSES:
            raise ValueError(
                f"sharing mode {self.sharing!r} is not one of kmtl's ({', '.join(SHARING_CLASSES)}), so "
                "from_config could not rebuild it; use model.save_weights(...) and rebuild the model with "
                "kmtl.build_model before model.load_weights(...)")
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": json.loads(self._backbone_config),
            "encoder_spec": self.encoder_spec if _json_able(self.encoder_spec) else None,
            "tasks": [task.get_config() for task in self.tasks],
            "pooling": self.pooling,
            "sharing": self.sharing,
            "sharing_options": json.loads(json.dumps(self.sharing_options)),  # a plain copy
            "weighting_state": None if self.weighting_state is None else {
                "strategy": self.weighting_state.strategy, "shapes": self.weighting_state.shapes},
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Build the model `get_config` describes (``keras.saving.load_model`` calls this).

        Needs nothing outside the config: the backbone is rebuilt from its serialized config
        (random weights, which the weights file then replaces), without network or files.
        Keys that ``__init__`` names as parameters pass through to it (so a config key
        added together with an ``__init__`` argument needs no change here); other unknown
        keys are left out with a warning.
        """
        import keras_hub  # noqa: F401  (registers the keras-hub backbone classes)

        from kmtl import tasks as task_kinds

        config = dict(config)
        if "backbone" not in config or "tasks" not in config:
            raise ValueError(
                f"not a kmtl MultiTaskModel config (keys: {sorted(config)}): it needs 'backbone' and 'tasks'; "
                "was it written by MultiTaskModel.get_config?")
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"), custom_objects=custom_objects)
        tasks = [task_kinds.from_config(task) for task in config.pop("tasks")]
        spec = config.pop("encoder_spec", None)
        sharing = sharing_from_config(config.pop("sharing", "full"), config.pop("sharing_options", None))
        named = {name for name, p in inspect.signature(cls.__init__).parameters.items()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self", "encoder", "tasks", "sharing"}
        # keras.Model's own keyword arguments; sharing options of files written before
        # sharing_options existed (``lora_rank``: the rebuilt `sharing` object wins)
        accepted = named | KERAS_MODEL_ARGUMENTS | set(SHARING_OPTION_KEYS)
        unknown = sorted(set(config) - accepted)
        if unknown:
            warnings.warn(f"{cls.__name__}.from_config: ignoring config keys {unknown} that this kmtl version's "
                          f"{cls.__name__}.__init__ does not take (written by a newer kmtl?)", stacklevel=2)
        model = cls(backbone, tasks, sharing=sharing, **{k: v for k, v in config.items() if k in accepted})
        model.encoder_spec = spec
        return model

    def compile_from_config(self, config):
        """Compile a loaded model as it was when saved: its optimizer (whose state the weights
        file then restores), metrics, ``jit_compile``, ``steps_per_execution``.

        Keras does not compile a loaded model whose ``compile`` is overridden (it warns; see
        ``keras/src/trainers/trainer.py``, ``Trainer.compile_from_config``), so this passes
        what ``keras.Model.compile`` recorded to this model's `compile`. Loss weights are
        variables, restored with the weights. If the optimizer cannot be rebuilt the model is
        left uncompiled, with a warning (it still predicts).
        """
        import kmtl.optimizer  # noqa: F401  (registers kmtl's optimizer and schedule)

        try:
            config = keras.saving.deserialize_keras_object(config)
            keep = ("weighted_metrics", "run_eagerly", "steps_per_execution", "jit_compile")
            self.compile(optimizer=config["optimizer"], **{k: config[k] for k in keep if config.get(k) is not None})
            if self.built:
                self.optimizer.build(self.trainable_variables)  # so its saved variables load
        except Exception as err:
            warnings.warn(f"the loaded model could not be compiled as it was saved ({type(err).__name__}: {err}); "
                          "call model.compile(...) before training it", stacklevel=2)

    def __call__(self, inputs, *args, **kwargs):
        if getattr(self, "routes_by_task", False) and isinstance(inputs, dict) and TASK_ID not in inputs:
            if kwargs.get("training", args[0] if args else None):
                raise ValueError(
                    f"this model routes each example through its task's own weights (sharing={self.sharing!r}): "
                    f"training inputs need {TASK_ID!r}, int32 [batch], the index of each example's task in "
                    f"model.tasks {[t.name for t in self.tasks]}; kmtl.data pipelines add it")
            # inference without task ids: every task's output through its own route (serving's answer)
            return run_tasks(self, inputs, self.tasks)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # kmtl's pipelines always put task_id in x; a model without adapters ignores it (Keras
        # would warn that the input structure does not match).
        if isinstance(inputs, dict):
            wanted = set(INPUT_NAMES) | ({TASK_ID} if getattr(self, "routes_by_task", False) else set())
            inputs = {name: value for name, value in inputs.items() if name in wanted}
        return super().call(inputs, training=training, mask=mask, **kwargs)

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer="adamw", loss_weights=None, weighted_metrics=None, **kwargs):
        """Compile with each task's loss and metrics.

        Args:
            optimizer: any Keras optimizer (see `kmtl.training.make_optimizer` for AdamW with
                warm-up and linear decay).
            loss_weights: ``{task: float}`` initial loss weights (default 1.0 each); stored in
                the non-trainable ``task_weights`` variables that callbacks may change.
            weighted_metrics: ``{task: [metrics]}``; default: each task's `Task.metrics`.
            **kwargs: passed to `keras.Model.compile` (``jit_compile``, ``steps_per_execution``...).
        """
        if kwargs.pop("loss", None) is not None:
            raise ValueError("MultiTaskModel computes each task's loss itself; do not pass `loss`")
        for name, value in (loss_weights or {}).items():
            if name not in self.task_weights:
                raise ValueError(f"loss_weights names unknown task {name!r}; tasks: {sorted(self.task_weights)}")
            self.task_weights[name].assign(float(value))
        if weighted_metrics is None:
            weighted_metrics = {t.name: t.metrics() for t in self.tasks}
        super().compile(optimizer=optimizer, weighted_metrics=weighted_metrics, **kwargs)
        # Keras logs a task's metric `accuracy` as `<task>_accuracy` under its bare name, so
        # EarlyStopping/ModelCheckpoint without `mode` cannot find its direction: TaskMetrics
        # names each metric by its log key. Untracked, like the container Keras' compile makes.
        with DotNotTrackScope():
            self._compile_metrics = TaskMetrics(kwargs.get("metrics"), weighted_metrics,
                                                output_names=getattr(self, "output_names", None))

    def fit(self, *args, shuffle=False, callbacks=None, **kwargs):
        """`keras.Model.fit`; ``shuffle`` defaults to False since kmtl datasets shuffle themselves.

        A loss-weighting callback among ``callbacks`` that acts inside each step (a
        `kmtl.model.step_hook.StepHook`: uncertainty, GradNorm, PCGrad, RLW) is used by
        this ``fit`` only: it is dropped when ``fit`` returns or raises. Two weighting
        strategies in one ``fit`` are a `ValueError`.
        """
        hooks = [c for c in (callbacks or []) if isinstance(c, StepHook)]
        if len(hooks) > 1:
            raise ValueError(
                f"fit got {len(hooks)} loss-weighting strategies ({', '.join(type(h).__name__ for h in hooks)}); "
                "they would overwrite each other's loss weights: pass one")
        hook = hooks[0] if hooks and hooks[0].acts_in_step else None
        logs_lambda = any(getattr(c, "anneals_teacher_lambda", False) for c in (callbacks or []))
        # a step traced with a hook (or with λ in its logs) serves this fit only: trace it anew
        # at the start and drop it at the end; a plain fit keeps Keras' cached step
        traced_for_this_fit = hook is not None or logs_lambda
        self._fit_hook, self._fit_logs_lambda = hook, logs_lambda
        if traced_for_this_fit:
            self.train_function = None
        try:
            return super().fit(*args, shuffle=shuffle, callbacks=callbacks, **kwargs)
        finally:
            if traced_for_this_fit:
                self.train_function = None
            self._fit_hook, self._fit_logs_lambda = None, False

    def evaluate(self, *args, return_dict=False, **kwargs):
        """`keras.Model.evaluate`; with ``return_dict=True`` (what ``fit`` asks for its
        ``val_`` figures) a task that owned no example of the data is left out of the logs,
        rather than reported as ``<task>_accuracy: 0.0`` (a metric over nothing)."""
        logs = super().evaluate(*args, return_dict=return_dict, **kwargs)
        if not return_dict:
            return logs
        absent = {name for name, tracker in self.task_loss_trackers.items() if float(tracker.count.numpy()) == 0}
        if not absent:
            return logs
        keys = {f"{name}_loss" for name in absent} | self._compile_metrics.log_names(absent)
        return {k: v for k, v in logs.items() if k not in keys}

    def weighting_state_for(self, strategy: str, initial: Dict[str, "np.ndarray"]) -> WeightingState:
        """The model's `WeightingState` for ``strategy``, made with ``initial`` values if the
        model holds none of that strategy and shapes (a loaded or resumed model keeps its own).

        Called by weighting strategies when they are set on the model (`kmtl.weighting`).
        """
        if self.weighting_state is not None and self.weighting_state.matches(strategy, initial):
            return self.weighting_state
        with self.distribute_strategy.scope():
            state = WeightingState(strategy, {name: np.shape(value) for name, value in initial.items()})
            for name, value in initial.items():
                state[name].assign(np.asarray(value, dtype="float32"))
        self.weighting_state = state
        self.train_function = None  # a traced step would hold the old state's variables
        return state

    def outputs_model(self, names) -> keras.Model:
        """A Keras model with this model's inputs, layers and weights and only the outputs
        ``names`` (task names): the graph of the other heads is left out, so predicting one task
        does not compute the others (a masked-LM head's vocabulary-wide logits, say). Cached.

        Example:
            >>> model.outputs_model(["sentiment"]).predict_on_batch(x)["sentiment"]
        """
        names = tuple(names)
        unknown = [n for n in names if n not in self.output]
        if unknown:
            raise ValueError(f"no outputs {unknown}; the model's tasks are {list(self.output)}")
        cache = self.__dict__.setdefault("_outputs_models", {})
        if names not in cache:
            cache[names] = keras.Model(self.input, {n: self.output[n] for n in names}, name=f"{self.name}_outputs")
        return cache[names]

    @property
    def loss_weights_now(self) -> Dict[str, float]:
        """The current loss weights as Python floats."""
        return {name: float(v.numpy()) for name, v in self.task_weights.items()}

    # ----------------------------------------------------------- raw text
    def predict(self, x, batch_size=None, **kwargs):
        """`keras.Model.predict`, which also takes raw text, as keras-hub task models do.

        ``x`` may be a string, a list of strings, or ``{"text": [...], "text_pair": [...]}``
        for pair tasks; they are tokenized by ``model.preprocessor`` inside the predict step
        (the code the SavedModel signatures run) and the result is ``{task: raw output}``
        (logits or scores). `kmtl.export.decode` turns it into labels, probabilities, scores
        and entity spans with character offsets, equal to TF Serving's answers. Token-id
        inputs work as for any Keras model.

        Example:
            >>> texts = ["a fine film", "Angela Merkel visited Paris ."]
            >>> kmtl.export.decode(model, model.predict(texts), texts)[0]["sentiment_label"]
        """
        raw = _raw_text_batches(x, batch_size or 32)
        if raw is not None:
            if self.preprocessor is None:
                raise ValueError("predict on raw text needs a tokenizer: build the model with kmtl.build_model "
                                 "(which attaches one) or set model.preprocessor = encoder.preprocessor(max_length)")
            x, batch_size = raw, None
        return super().predict(x, batch_size=batch_size, **kwargs)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not is_raw_text(x):
            return super().predict_step(data)
        text, pair = (x["text"], x.get("text_pair")) if isinstance(x, dict) else (x, None)
        tasks = [t for t in self.tasks  # not kinds with inputs of their own (span QA: SpanQA.answer)
                 if ("text_pair" in t.input_fields) == (pair is not None) and not t.serving_inputs]
        inputs, _ = text_inputs(tasks, self.preprocessor, text, pair)
        outputs = run_tasks(self, inputs, tasks)
        return {t.name: outputs[t.name] for t in tasks}

    # ------------------------------------------------------------------- loss
    def task_losses(self, y, y_pred, sample_weight) -> Dict[str, TaskLoss]:
        """Each task's `TaskLoss` for a batch on this replica; updates the ``<task>_loss`` trackers.

        ``share`` is the sum of the task's per-example (per-token) losses on this replica
        divided by the number it owns on *all* replicas, so shares summed over replicas give
        the task's mean loss over the global batch, and 1 or N replicas give one update.
        """
        replica = tf.distribute.get_replica_context()
        losses = {}
        for task in self.tasks:
            weight = tf.cast(sample_weight[task.name], tf.float32)
            target = y[task.name]
            if isinstance(target, dict):  # {"gold", "teacher"}: kmtl.distill.with_teachers
                per_example = task.distillation_loss(target, y_pred[task.name], self.teacher_lambda)
            else:
                per_example = task.per_example_loss(target, y_pred[task.name])
            per_example = tf.cast(per_example, tf.float32)
            local_sum = tf.reduce_sum(per_example * weight)
            local_count = tf.reduce_sum(weight)
            count = local_count
            if replica is not None and replica.num_replicas_in_sync > 1:
                count = replica.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
            self.task_loss_trackers[task.name].update_state(
                tf.math.divide_no_nan(local_sum, local_count), sample_weight=local_count
            )
            losses[task.name] = TaskLoss(tf.math.divide_no_nan(local_sum, count), count)
        return losses

    def regularization_loss(self):
        """This replica's share of the layers' added losses (``self.losses``), or 0."""
        if not self.losses:
            return tf.constant(0.0, tf.float32)
        replica = tf.distribute.get_replica_context()
        replicas = replica.num_replicas_in_sync if replica is not None else 1
        return tf.add_n([tf.cast(l, tf.float32) for l in self.losses]) / replicas

    def complete_targets(self, x, y, y_pred, sample_weight):
        """``(y, sample_weight)`` as dicts with an entry for every task, from what a Keras user gives.

        kmtl's pipelines already give full dicts. Otherwise: a one-task model takes a plain
        ``y`` (and ``sample_weight``); ``y`` may name any subset of the tasks — a task it does
        not name gets a placeholder label and weight 0; a task without a sample weight gets
        weight 1 for each example (token tasks: for each token of ``padding_mask`` when ``x``
        has it, else each position).
        """
        names = [t.name for t in self.tasks]
        if not isinstance(y, dict):
            if len(names) != 1:
                raise ValueError(f"this model has {len(names)} outputs {names}: give y as a dict keyed by task "
                                 "name (any subset of them)")
            y = {names[0]: y}
            if sample_weight is not None and not isinstance(sample_weight, dict):
                sample_weight = {names[0]: sample_weight}
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise ValueError(f"y names unknown tasks {unknown}; the model's tasks are {names}")
        if sample_weight is not None and not isinstance(sample_weight, dict):
            raise ValueError(f"give sample_weight as a dict keyed by task name, like y (tasks: {names})")
        sample_weight = dict(sample_weight or {})
        mask = x.get("padding_mask") if isinstance(x, dict) else None
        full_y, full_w = {}, {}
        for task in self.tasks:
            pred = y_pred[task.name]
            if y.get(task.name) is None:
                full_y[task.name] = task.placeholder_label(pred)
                full_w[task.name] = tf.zeros(tf.shape(pred)[:2] if task.sequence_labels else tf.shape(pred)[:1])
                continue
            target = y[task.name]
            full_y[task.name] = target if isinstance(target, dict) else task.conform_label(target, pred)
            weight = sample_weight.get(task.name)
            if weight is None:
                if task.sequence_labels:
                    weight = (tf.cast(mask, tf.float32) if mask is not None
                              else tf.ones(tf.shape(pred)[:2], tf.float32))
                else:
                    weight = tf.ones(tf.shape(pred)[:1], tf.float32)
            full_w[task.name] = weight
        return full_y, full_w

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y, sample_weight = self.complete_targets(x, y, y_pred, sample_weight)
        losses = self.task_losses(y, y_pred, sample_weight)
        total = tf.add_n([tf.cast(self.task_weights[name], tf.float32) * loss.share
                          for name, loss in losses.items()])
        return total + self.regularization_loss()

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y, sample_weight = self.complete_targets(x, y, y_pred, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def train_step(self, data):
        """Keras' train step, or `kmtl.model.step_hook.hooked_train_step` while a `fit` runs with
        a weighting strategy that acts inside the step, or with a loss-scaling optimizer
        (``mixed_float16``: see `kmtl.model.precision`). The logs also carry every task's
        current ``loss_weight_<task>`` (and the strategy's own figures, ``teacher_lambda``
        while teacher annealing runs, and the ``logged_values()`` of any layer of the model
        that has that method: a sharing mode's per-task gates, say; name them
        ``<task>_<figure>`` for TensorBoard's per-task sections), so History and TensorBoard
        see them whatever the callbacks' order."""
        hook = self._fit_hook
        if hook is None and is_loss_scaled(self.optimizer):
            # float16 loss scaling: kmtl's step, whose replicas agree on skipping a step with
            # non-finite gradients (Keras' own step lets each replica decide, and under
            # MirroredStrategy its weights turn NaN at the first overflow: kmtl.model.precision)
            hook = StepHook()
        logs = dict(hooked_train_step(self, hook, data) if hook is not None else super().train_step(data))
        for name, variable in self.task_weights.items():
            logs[f"loss_weight_{name}"] = tf.identity(variable)
        if hook is not None:
            logs.update(hook.step_logs())
        if self._fit_logs_lambda:
            logs["teacher_lambda"] = tf.identity(self.teacher_lambda)
        for layer in self._value_loggers:
            logs.update(layer.logged_values())
        return self._for_multi_worker_reduce(logs)

    def test_step(self, data):
        """Keras' test step (its logs shaped for the multi-worker reduce: `_for_multi_worker_reduce`)."""
        return self._for_multi_worker_reduce(super().test_step(data))

    # Workarounds for Keras 3.15's fit under MultiWorkerMirroredStrategy (keras-team/keras#20329,
    # #20585): kmtl.model.multi_worker_fit says why, and how to remove them once Keras is fixed.
    def _for_multi_worker_reduce(self, logs):
        """The step's ``logs``, scalars reshaped to ``[1]`` under a multi-worker strategy (Keras
        reduces them with ``axis=0``); unchanged otherwise."""
        return rank1_logs(logs) if is_multi_worker(self.distribute_strategy) else logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # private Keras hook (TensorFlowTrainer, keras 3.15): under a multi-worker strategy it
        # would reduce the first batch across workers, which fails for dict inputs; build from
        # this worker's part of it instead
        if iterator is not None and self._distribute_strategy is not None and is_multi_worker(self._distribute_strategy):
            for _, _, batches in iterator:
                data_batch = local_batch(self._distribute_strategy, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _raw_text_batches(x, batch_size: int):
    """A batched `tf.data.Dataset` of raw text from a string, a list of strings or a
    ``{"text": [...], "text_pair": [...]}`` dict; ``None`` for any other input."""
    if isinstance(x, str):
        x = [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, str) for v in x):
        return tf.data.Dataset.from_tensor_slices(tf.constant(list(x))).batch(batch_size)
    if isinstance(x, dict) and "text" in x and set(x) <= {"text", "text_pair"}:
        columns = {k: [v] if isinstance(v, str) else list(v) for k, v in x.items()}
        if all(isinstance(v, str) for col in columns.values() for v in col):
            if len({len(col) for col in columns.values()}) != 1:
                raise ValueError("text and text_pair must have the same length")
            return tf.data.Dataset.from_tensor_slices({k: tf.constant(v) for k, v in columns.items()}).batch(batch_size)
    return None
