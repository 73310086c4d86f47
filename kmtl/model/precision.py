"""Mixed precision: build a model under a Keras dtype policy, and scale the losses of a hooked step.

Keras' mixed precision (Micikevicius et al., "Mixed Precision Training", ICLR 2018) computes
in float16 or bfloat16 and keeps the variables in float32. kmtl's choices:

* the policy applies while the model is *built*: `precision_scope` sets Keras' global dtype
  policy for the ``with`` block and restores the previous one on exit, so nothing leaks into
  the rest of a notebook (a layer keeps the policy it was built with);
* the sentence pooling and the task heads always compute in float32 (`MultiTaskModel` builds
  them under `float32_layers`): outputs (logits, scores) are float32 and so are the per-task
  losses, whatever the encoder's precision;
* ``mixed_float16`` needs loss scaling. Keras wraps the optimizer in a
  `keras.optimizers.LossScaleOptimizer` at ``compile`` when the model's policy is
  ``mixed_float16``. With such an optimizer `MultiTaskModel` always trains with kmtl's step
  (`kmtl.model.step_hook.hooked_train_step`, with the running weighting strategy's hook or a
  plain one): the gradients are read through `ScaledTape` (loss-scaled backward pass,
  unscaled gradients for the strategy: keras issue 19479), their finiteness is agreed over
  the replicas (`all_finite`), and they go back scaled to the LossScaleOptimizer, which skips
  the step (and halves the scale) when they are not finite; the strategy's state keeps its
  values from before such a step. Keras' own step checks finiteness on each replica alone: under
  `MirroredStrategy` (checked on 2 logical CPUs, Keras 3.15) the first overflow turns the
  weights NaN. Global-norm clipping (`kmtl.optimizer.AllReducedClipping`) runs in the inner
  optimizer, on unscaled gradients.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Optional

import keras
import tensorflow as tf

from kmtl.errors import KmtlError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
AUTO = "auto"
ENV_PRECISION = "KMTL_PRECISION"
"""Environment variable naming what ``auto`` resolves to (``float32`` to keep every run in
float32 on a bfloat16 CPU; the test suite sets it so that its tolerances hold on any machine)."""
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of x86 CPUs with native bfloat16 matmuls (Intel Sapphire Rapids and
later: AMX-BF16; Cooper Lake, AMD Zen 4 and later: AVX512-BF16), which oneDNN uses."""


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """``/proc/cpuinfo``, read once a process (hundreds of KB on many-core machines, and asked
    for at every run and baseline key); ``""`` where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: Optional[str] = None) -> set:
    """The instruction-set flags this CPU reports (``avx2``, ``avx512f``, ...); empty where there
    is no ``/proc/cpuinfo`` (macOS, Windows).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (default: read it).
    """
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def cpu_bf16_flags(cpuinfo: Optional[str] = None) -> list:
    """The native-bfloat16 flags this CPU reports (`BF16_CPU_FLAGS`, best first); ``[]`` where
    there are none or no ``/proc/cpuinfo`` (macOS, Windows: kmtl then assumes none).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (default: read it).
    """
    flags = cpu_flags(cpuinfo)
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def resolve_precision(precision: str = AUTO, *, cpuinfo: Optional[str] = None, gpus: Optional[int] = None):
    """``(precision, reason)``: the Keras policy a run uses for ``training.precision``.

    ``auto`` (the default of ``training.precision`` and ``kmtl bench train --precision``) is
    ``mixed_bfloat16`` on a CPU-only machine whose CPU has native bfloat16 matmuls
    (AMX-BF16 or AVX512-BF16, used by oneDNN) and ``float32`` elsewhere: on CPUs without them
    bfloat16 is emulated and slower than float32, and on GPUs (not measured by this project
    yet) float32 stays until it is. The ``KMTL_PRECISION`` environment variable overrides what
    ``auto`` resolves to. Measured on AMD EPYC with AVX512-BF16 (README "Performance"):
    training 1.4x faster than float32, dev metrics within the seeds' spread of float32's.
    Any other value is returned as given.

    Args:
        precision: ``auto`` or one of `PRECISIONS`.
        cpuinfo: the text of ``/proc/cpuinfo`` (default: read it; for tests).
        gpus: the number of visible GPUs (default: ask TensorFlow; for tests).

    Example:
        >>> resolve_precision("float32")
        ('float32', 'as configured')
        >>> resolve_precision("auto", cpuinfo="flags : fpu avx2", gpus=0)
        ('float32', 'auto: this CPU has no native bfloat16 (AMX-BF16 / AVX512-BF16)')
    """
    if precision != AUTO:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose auto or one of: {', '.join(PRECISIONS)} "
                             "(the YAML key is training.precision)")
        return precision, "as configured"
    forced = os.environ.get(ENV_PRECISION, "").strip()
    if forced:
        if forced not in PRECISIONS:
            raise KmtlError(f"{ENV_PRECISION}={forced!r} is not a precision; set it to one of: "
                             f"{', '.join(PRECISIONS)} (or unset it)")
        return forced, f"auto: {ENV_PRECISION}={forced}"
    if gpus is None:
        gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus:
        return "float32", "auto: float32 on GPUs (bfloat16 on GPUs is not measured by kmtl yet)"
    flags = cpu_bf16_flags(cpuinfo)
    if not flags:
        return "float32", "auto: this CPU has no native bfloat16 (AMX-BF16 / AVX512-BF16)"
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") == "0":
        return "float32", "auto: TF_ENABLE_ONEDNN_OPTS=0 turns off the oneDNN bfloat16 kernels"
    return "mixed_bfloat16", f"auto: the CPU has {flags[0].upper().replace('_', '-')}"


@contextlib.contextmanager
def precision_scope(precision: str = "float32"):
    """Build the encoder and the model inside this block to train them in ``precision``.

    Sets Keras' global dtype policy (`keras.config.set_dtype_policy`) for the block and
    restores the previous policy on exit (also on an error), so later code in the process
    builds float32 layers again. A model keeps the policy it was built with: ``compile`` and
    ``fit`` may run outside the block. `kmtl.training.train` does this with the YAML's
    ``training.precision``. The heads and the sentence pooling compute in float32 whatever the
    policy (`float32_layers`). Implements the mixed-precision recipe of Micikevicius et al.,
    "Mixed Precision Training" (ICLR 2018): float32 master weights, half-precision compute, loss
    scaling for float16 (Keras adds a `keras.optimizers.LossScaleOptimizer` at ``compile``).

    Args:
        precision: ``auto`` (`resolve_precision`: ``mixed_bfloat16`` on CPUs with native
            bfloat16, ``float32`` elsewhere), ``float32`` (Keras' default; the block changes
            nothing), ``mixed_bfloat16``
            (GPUs since Ampere, CPUs with AVX512-BF16 or AMX, TPUs; no loss scaling needed) or
            ``mixed_float16`` (GPUs; loss scaling).

    Yields:
        the `keras.DTypePolicy` in force inside the block.

    Example:
        >>> from kmtl.model.precision import precision_scope
        >>> with precision_scope("mixed_bfloat16"):
        ...     encoder = kmtl.load_backbone("minilm-l6")
        ...     model = kmtl.build_model(encoder, tasks)
        >>> model.compile(optimizer=kmtl.training.make_optimizer(5e-5, total_steps=1000))
        >>> model.fit(train, epochs=2)
    """
    precision, _ = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_dtype_policy(previous)


def float32_layers():
    """A block whose new layers compute in float32 (the task heads, the pooling).

    Such a layer casts its floating inputs to float32 (Keras' autocast), so a head on a
    bfloat16 encoder returns float32 logits and its loss is computed in float32.

    Example:
        >>> with float32_layers():
        ...     logits = keras.layers.Dense(2, name="sentiment")(pooled)   # float32
    """
    return precision_scope("float32")


def is_loss_scaled(optimizer) -> bool:
    """Whether ``optimizer`` expects loss-scaled gradients (a `keras.optimizers.LossScaleOptimizer`,
    or any optimizer with a ``loss_scale_factor``), i.e. whether a train step must scale its loss."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or \
        getattr(optimizer, "loss_scale_factor", None) is not None


def loss_scale(optimizer):
    """The optimizer's current loss scale as a float32 tensor (``optimizer.scale_loss(1.0)``)."""
    return tf.cast(optimizer.scale_loss(tf.constant(1.0, tf.float32)), tf.float32)


def _divide(gradient, scale):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):  # embedding lookups
        return tf.IndexedSlices(gradient.values / tf.cast(scale, gradient.values.dtype), gradient.indices,
                                gradient.dense_shape)
    return gradient / tf.cast(scale, gradient.dtype)


def _multiply(gradient, scale):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * tf.cast(scale, gradient.values.dtype), gradient.indices,
                                gradient.dense_shape)
    return gradient * tf.cast(scale, gradient.dtype)


class ScaledTape:
    """A `tf.GradientTape` whose ``gradient`` runs a loss-scaled backward pass and returns the
    true (unscaled) gradients: the loss scaling of Micikevicius et al., "Mixed Precision
    Training" (ICLR 2018), for train steps that take several gradients.

    The backward pass starts from ``scale`` instead of 1 (``output_gradients``), which is the
    same as differentiating ``scale * target`` (keras issue 19479: a custom step must scale the
    loss of every gradient it takes): small float16 gradients inside the encoder do not flush to
    zero. The results are divided by ``scale``, so a weighting strategy sees the gradients it
    would see in float32 (GradNorm's norms, PCGrad's projections). A gradient that overflowed
    stays non-finite. Other tape methods (``watch``, ``jacobian``...) are the tape's own, unscaled.

    Args:
        tape: the step's `tf.GradientTape` (persistent if several gradients are taken).
        scale: the loss scale (`loss_scale`).

    Example:
        >>> grads = ScaledTape(tape, loss_scale(optimizer)).gradient(loss, variables)
    """

    def __init__(self, tape, scale):
        self.tape = tape
        self.scale = scale

    def gradient(self, target, sources, output_gradients=None, **kwargs):
        """``tape.gradient(target, sources)`` computed with the loss scale and unscaled."""
        if output_gradients is None:
            seeds = tf.nest.map_structure(lambda t: tf.ones_like(t) * tf.cast(self.scale, t.dtype), target)
        else:
            seeds = tf.nest.map_structure(lambda g: g * tf.cast(self.scale, g.dtype), output_gradients)
        grads = self.tape.gradient(target, sources, output_gradients=seeds, **kwargs)
        return tf.nest.map_structure(lambda g: _divide(g, self.scale), grads)  # IndexedSlices, None: leaves

    def __getattr__(self, name):
        return getattr(self.tape, name)


def rescale(gradients, scale) -> list:
    """``gradients`` multiplied by ``scale`` again: the form a loss-scaling optimizer's
    ``apply_gradients`` expects (it checks that they are finite, divides and applies, or skips)."""
    return [_multiply(g, scale) for g in gradients]


def all_finite(gradients):
    """A boolean scalar: whether every gradient (``None`` skipped) is finite on *every* replica.

    Under a `tf.distribute` strategy with several replicas the answer is all-reduced: a
    replica's own gradients (a task head's, before the optimizer's all-reduce) may overflow
    where another's do not, and all must take the same branch of the LossScaleOptimizer
    (`agree_on_finite`), whose update all-reduces.
    """
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients if g is not None]
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in values])) if values \
        else tf.constant(True)
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        failed = replica.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))  # replicas
        finite = tf.equal(failed, 0.0)
    return finite


def agree_on_finite(gradients, finite) -> list:
    """``gradients``, made NaN where ``finite`` (`all_finite`, over all replicas) is False, so that
    every replica's LossScaleOptimizer skips the step together."""
    nan = float("nan")

    def poisoned(g):
        if g is None:
            return None
        if isinstance(g, tf.IndexedSlices):
            return tf.IndexedSlices(tf.where(finite, g.values, tf.cast(nan, g.values.dtype)), g.indices, g.dense_shape)
        return tf.where(finite, g, tf.cast(nan, g.dtype))

    return [poisoned(g) for g in gradients]


def computes_in_float32(model) -> bool:
    """Whether every layer of ``model`` computes in float32 (no mixed precision policy)."""
    return all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in [model, *model.layers]
               if not isinstance(layer, keras.layers.InputLayer))


def _rebuilt(model, policy: str, what: str):
    """``model`` rebuilt from its config under the Keras dtype ``policy`` (the encoder's own
    policy in its config too), with ``model``'s weights; ValueError naming ``what`` if it cannot be."""
    try:
        config = model.get_config()
    except ValueError as err:
        raise ValueError(f"{what}: this mixed precision model cannot be rebuilt in {policy} ({err}); "
                         "build it in float32 (without precision_scope) to export it") from err
    backbone = config.get("backbone", {})
    if isinstance(backbone.get("config"), dict):
        backbone["config"]["dtype"] = policy  # the policy the encoder was built with is in its config
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # not precision_scope: "bfloat16" is no training precision
    try:
        twin = type(model).from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    weights = model.get_weights()
    shapes = [tuple(w.shape) for w in weights]
    if shapes != [tuple(v.shape) for v in twin.weights]:
        raise ValueError(f"{what}: the rebuilt {policy} model's weights do not match the original's; "
                         "build the model in float32 (without precision_scope) to export it")
    twin.set_weights(weights)
    twin.preprocessor = getattr(model, "preprocessor", None)
    return twin


def float32_copy(model):
    """A float32 twin of a `MultiTaskModel` built under a mixed precision policy: the same
    layers and the same (float32) weights, every layer computing in float32. ``model`` itself
    if it already computes in float32.

    What `kmtl.export.export_onnx` converts: tf2onnx turns a bfloat16 graph into an invalid
    ONNX file (its ``Add`` nodes mix float16 and bfloat16) and ONNX Runtime's CPU provider has
    few half-precision kernels; the float32 graph runs everywhere. Its outputs differ from the
    mixed model's by the half-precision rounding (~1e-2 for bfloat16).

    Example:
        >>> twin = float32_copy(model)   # model built in precision_scope("mixed_bfloat16")
        >>> twin(x)["sentiment"].dtype
        tf.float32
    """
    if computes_in_float32(model):
        return model
    return _rebuilt(model, "float32", "float32_copy")


SERVING_POLICIES = {"mixed_bfloat16": "bfloat16"}
"""Training policy -> the policy of its serving copy (`serving_copy`). Not ``mixed_float16``:
float16 variables overflow where float32 master weights do not."""


def serving_copy(model):
    """For inference: a twin of a `MultiTaskModel` built under ``mixed_bfloat16`` whose encoder
    *stores* its weights in bfloat16 (Keras policy ``bfloat16``; the heads stay float32,
    `float32_layers`), so a call does not cast every weight from float32 again. The weights are
    the float32 master weights rounded once, as the mixed model rounds its matmul weights at
    every call; but some operands the mixed model keeps in float32 (LayerNorm's scale and
    offset among them) are bfloat16 in the copy, so answers differ from the mixed model's by
    bfloat16 rounding (MiniLM-L6, batch 32 × 22: at most 0.05 on token logits of magnitude 2.3;
    the mixed model itself is 0.03 from the float32 model's; tests/test_precision.py).
    ``model`` itself for any other policy, or when it cannot be rebuilt from its config.

    What `kmtl.export.export_saved_model` serves. On MiniLM-L6, batch 32 × 22, the weight casts were
    12.5 of 53 ms of a bfloat16 forward pass (``python benchmarks/profile_inference.py --precision
    mixed_bfloat16 --detail Cast``); `kmtl bench serve --precision mixed_bfloat16` gave 633 ex/s
    at batch 32 and 7.7 ms at batch 1 with the copy, 585 ex/s and 12.4 ms without (2026-12-03,
    Intel(R) Xeon(R) Processor with AMX, 2 vCPUs, load 1-2).

    Example:
        >>> served = serving_copy(model)   # model built in precision_scope("mixed_bfloat16")
        >>> served.get_layer("bert_backbone").token_embedding.embeddings.dtype
        'bfloat16'
    """
    policy = SERVING_POLICIES.get(getattr(getattr(model, "dtype_policy", None), "name", None))
    if policy is None:
        return model
    try:
        return _rebuilt(model, policy, "serving_copy")
    except Exception:  # noqa: BLE001  (a speed-up only: a model that cannot be rebuilt serves as it is)
        return model


def float32_outputs(outputs: dict) -> dict:
    """``outputs`` with every floating tensor cast to float32 (what serving signatures return)."""
    return {name: tf.cast(value, tf.float32) if tf.as_dtype(value.dtype).is_floating else value
            for name, value in outputs.items()}
