"""AdamW with linear warm-up and linear decay, the usual BERT fine-tuning optimizer."""

from __future__ import annotations

from typing import Dict, Optional

import keras
import tensorflow as tf
from keras import ops

from kmtl import defaults


@keras.saving.register_keras_serializable(package="kmtl")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then linear decay to 0.

    Args:
        peak: the learning rate reached at the end of warm-up.
        total_steps: steps of the whole run (the rate reaches 0 there).
        warmup_steps: steps of the warm-up.

    Example:
        >>> schedule = WarmupLinearDecay(5e-5, total_steps=1000, warmup_steps=100)
        >>> float(schedule(100))
        5e-05
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        factor = ops.where(step < self.warmup_steps, warm, decay)
        return self.peak * ops.clip(factor, 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def clip_by_global_norm(gradients, clip_norm, merge_rows: bool = True):
    """``gradients`` scaled by ``clip_norm / max(norm, clip_norm)``, ``norm`` their global L2 norm.

    As `tf.clip_by_global_norm` (BERT's recipe): the direction of the whole gradient is kept.
    `tf.IndexedSlices` (embedding lookups) come back dense (the AdamW update densifies them
    anyway), rows repeated in a batch counted once. With ``merge_rows`` (the default) their norm
    and scaling are computed on the rows present only, once each, before the rows are scattered
    into the dense table: for a BERT token embedding ([30522, 384], 47 MB in float32, of which a
    batch of 32 × 64 touches at most 2,048 rows) that is two passes over the table fewer per step
    (the norm's and the scaling's); the figures are the same to float rounding (the norm sums
    in another order). ``merge_rows=False`` makes the table dense first (for an A/B:
    ``python benchmarks/levers.py rowclip``). ``None`` entries stay ``None``. A non-finite norm
    makes every gradient NaN, as `tf.clip_by_global_norm` does.

    Example:
        >>> clip_by_global_norm([tf.constant([3.0]), tf.constant([4.0])], 1.0)  # norm 5
        [<tf.Tensor: ... [0.6]>, <tf.Tensor: ... [0.8]>]
    """
    gradients, scale = _clip_scale(gradients, clip_norm, merge_rows)
    if scale is None:
        return gradients
    return [None if g is None else _scaled(g, scale) for g in gradients]


def _clip_scale(gradients, clip_norm, merge_rows: bool = True):
    """``(gradients, scale)``: the gradients as `clip_by_global_norm` scales them (`tf.IndexedSlices`
    rows merged, or made dense without ``merge_rows``), not scaled yet, and the float32 scalar
    ``clip_norm / max(norm, clip_norm)`` (NaN where the norm is not finite); ``scale`` is None
    where every gradient is None."""
    gradients = [(_merged(g) if merge_rows else tf.convert_to_tensor(g)) if isinstance(g, tf.IndexedSlices) else g
                 for g in gradients]
    present = [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients if g is not None]
    if not present:
        return gradients, None
    # one L2Loss per tensor and one AddN, instead of Keras' per-variable clip (~8 ops each);
    # squares summed in float32 (a float16 sum of squares overflows at 65504)
    norm = tf.sqrt(2.0 * tf.add_n([tf.nn.l2_loss(g if g.dtype == tf.float32 else tf.cast(g, tf.float32))
                                   for g in present]))
    return gradients, clip_norm / tf.maximum(norm, clip_norm) + (norm - norm)  # + (norm - norm): NaN if not finite


def _scaled(gradient, scale):
    """``gradient * scale`` in the gradient's dtype (`clip_by_global_norm`'s multiply); merged
    `tf.IndexedSlices` rows are scaled, then scattered into the dense table."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(tf.IndexedSlices(gradient.values * tf.cast(scale, gradient.dtype),
                                                     gradient.indices, gradient.dense_shape))
    return gradient * tf.cast(scale, gradient.dtype)


def _merged(rows: tf.IndexedSlices) -> tf.IndexedSlices:
    """``rows`` with each index once, the values of repeated indices summed (in the order
    `tf.convert_to_tensor` sums them)."""
    if rows.dense_shape is None:  # no table shape to scatter into later: dense now, as before
        return tf.convert_to_tensor(rows)
    unique, position = tf.unique(rows.indices)
    values = tf.math.unsorted_segment_sum(rows.values, position, tf.shape(unique)[0])
    return tf.IndexedSlices(values, unique, rows.dense_shape)


class AllReducedClipping:
    """Mixin for Keras optimizers: ``global_clipnorm`` clips the *all-reduced* gradient.

    Keras 3.15 clips inside `apply` (``BaseOptimizer._backend_apply_gradients`` calls
    ``_clip_gradients``) *before* the TensorFlow backend sums the replicas' gradients
    (``TFOptimizer._backend_update_step`` → ``_all_reduce_sum_gradients``). Under a
    `tf.distribute` strategy each replica then clips its own partial gradient, so N replicas
    stop giving one replica's update as soon as clipping binds. tf.keras disabled clipping
    under strategies for this reason (tensorflow/tensorflow#33929); Keras 3 clips before the
    all-reduce (it moved the all-reduce into the optimizer, keras-team/keras#19308). With this
    mixin ``global_clipnorm`` clips the global norm of the summed gradient, after the
    all-reduce, as BERT does (``tf.clip_by_global_norm``). Gradient accumulation, EMA, weight
    decay and `keras.optimizers.LossScaleOptimizer` (which unscales before calling `apply`)
    are unchanged. ``clipnorm`` and ``clipvalue`` keep Keras' per-replica behaviour.

    The clip's multiply (``gradient * scale``, `clip_by_global_norm`'s) is done before the
    update, except for the gradients whose ``update_step`` takes the scale itself
    (``_takes_grad_scale``: `FusedAdamUpdate` with kmtl's AdamW kernel, which multiplies each
    element as it reads it, one pass over the gradient fewer, the same figures to the bit).

    Keras private methods overridden (TensorFlow backend, keras 3.15): ``_clip_gradients``
    (skips ``global_clipnorm`` there) and ``_backend_update_step`` (the TF backend's: all-reduce
    with ``_all_reduce_sum_gradients``, clip, then ``_distributed_clipped_update_step``, the TF
    backend's ``_distributed_tf_update_step`` handing the clip's scale to ``update_step`` where
    it takes it).
    """

    merge_rows = True  # clip_by_global_norm's merge_rows (an A/B lever: benchmarks/levers.py rowclip)
    fold_clip = True  # False: every gradient scaled before its update (an A/B lever: benchmarks/levers.py clipfold)

    def _clip_gradients(self, grads):
        if self.global_clipnorm:
            return grads  # clipped after the all-reduce, in _backend_update_step
        return super()._clip_gradients(grads)

    def _takes_grad_scale(self, gradient, variable) -> bool:
        """Whether ``update_step(gradient, variable, lr, grad_scale=scale)`` applies the clip's
        ``scale`` itself, to the same figures as the clip's multiply: never here (`FusedAdamUpdate`
        overrides it)."""
        return False

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self.global_clipnorm:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # keras/src/backend/tensorflow/optimizer.py::_backend_update_step, with the clip
        # between the all-reduce and the update (that method clips nothing itself)
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        reduced = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        gradients, scale = _clip_scale([g for g, _ in reduced], self.global_clipnorm, merge_rows=self.merge_rows)
        updates = []  # (gradient, variable, the scale update_step applies, or None: scaled here)
        for gradient, variable in zip(gradients, variables):
            if gradient is None or scale is None:
                updates.append((gradient, variable, None))
            elif self.fold_clip and self._takes_grad_scale(gradient, variable):
                updates.append((gradient, variable, scale))
            else:
                updates.append((_scaled(gradient, scale), variable, None))
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_clipped_update_step, self._distribution_strategy, updates, learning_rate,
        )

    def _distributed_clipped_update_step(self, distribution, updates, learning_rate):
        """keras/src/backend/tensorflow/optimizer.py::_distributed_tf_update_step for
        ``(gradient, variable, grad_scale)`` triples: ``update_step`` on each variable's devices,
        given ``grad_scale`` where it is not None."""

        def apply(variable, gradient, learning_rate):
            return self.update_step(gradient, variable, learning_rate)

        def apply_scaled(variable, gradient, learning_rate, grad_scale):
            return self.update_step(gradient, variable, learning_rate, grad_scale=grad_scale)

        for gradient, variable, grad_scale in updates:
            if grad_scale is None:
                distribution.extended.update(variable, apply, args=(gradient, learning_rate), group=False)
            else:
                distribution.extended.update(variable, apply_scaled, args=(gradient, learning_rate, grad_scale),
                                             group=False)


class FusedAdamUpdate:
    """Mixin for `keras.optimizers.Adam` / ``AdamW``: each variable's update as TF's one fused
    ``ResourceApplyAdam`` kernel instead of Keras' dozen element-wise ops (two moment updates,
    square, sqrt, divide, three assigns...), each a separate pass over the variable.

    The arithmetic is Keras' (``keras/src/optimizers/adam.py::update_step``):
    ``m += (g - m)(1 - b1)``, ``v += (g² - v)(1 - b2)``,
    ``var -= lr·sqrt(1 - b2^t)/(1 - b1^t) · m / (sqrt(v) + eps)``, so the two agree to float
    rounding (tests/test_optimizer.py). AdamW's decoupled weight decay, applied before, is Keras'
    with ``lr · wd`` multiplied first (one pass over each variable instead of two). Sparse
    gradients (but for kmtl's kernel, below), ``amsgrad`` and non-float32 variables take Keras' path.

    Measured and dropped (2026-12-03, Intel(R) Xeon(R) Processor, 2 vCPUs, idle, MiniLM-L6
    32 x 64, 4 interleaved rounds): the whole update (global-norm clip, decay, ``ResourceApplyAdam``
    of every variable) as one XLA-compiled function was 4 % slower in bfloat16 (87.4 vs 91.0
    examples/s) and 5 % in float32 (52.4 vs 55.1): XLA reads each resource variable into a
    buffer of its own and writes the result back, two more passes than the in-place kernels.

    With kmtl's AdamW kernel (`kmtl.kernels.adamw`, built on first use with the machine's C++
    compiler) the decay and the Adam update of each variable are one pass instead of three: the
    same figures to the bit, 14 against 30 ms for MiniLM-L6's weights (2026-12-03, Intel(R) Xeon(R)
    Processor, 2 vCPUs; ``python benchmarks/optimizer_update.py``). Where the kernel cannot be
    built, the decay and ``ResourceApplyAdam`` run as TensorFlow ops. The kernel also takes the
    global-norm clip's scale (`AllReducedClipping`, ``global_clipnorm``) and uses
    ``g = grad · scale`` in the formulas above (a float32 multiply, the clip's own: the same figures
    to the bit), so the clip makes no pass of its own over the float32 gradients of the variables
    the kernel updates; ``scale`` is 1 without the clip. With the clip, an embedding table's
    gradient (a `tf.IndexedSlices`) goes to the kernel as its merged rows (``KmtlApplyAdamWRows``: each row
    the batch touched multiplied by the scale, the other rows a gradient of exactly 0, which
    still decay and move with their moments): the same figures to the bit as the rows scaled,
    scattered into a dense gradient and updated, without the dense [vocabulary, hidden] gradient
    (47 MB for MiniLM's token table: written, then read, every step). The other gradients are
    scaled before their update, as `clip_by_global_norm` does: non-float32 gradients, and those
    of variables off the CPU or not updated by the kernel.

    Args:
        fused: False: Keras' own ``update_step`` everywhere (for an A/B).
        adamw_kernel: False: TensorFlow's ops even where kmtl's kernel can be built (for an A/B).
    """

    def __init__(self, *args, fused: bool = True, adamw_kernel: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)
        self.adamw_kernel = bool(adamw_kernel)

    def _kernel(self):
        """`kmtl.kernels.adamw`'s op where this optimizer uses it (then the decay is applied in
        `update_step`, not in `_apply_weight_decay`), else None."""
        if not (self.fused and self.adamw_kernel):
            return None
        from kmtl import kernels

        return kernels.adamw()  # None inside an XLA-compiled step too

    def _base_decay_rate(self):
        """``lr · wd``: the schedule's base rate, not a layer's multiplied one."""
        return tf.cast(self.learning_rate, tf.float32) * tf.cast(self.weight_decay, tf.float32)

    def _decay_rate(self, variable):
        """`_base_decay_rate` for a decayed variable, else None."""
        if self.weight_decay is None or not self._use_weight_decay(variable):
            return None
        return self._base_decay_rate()

    def _decay_here(self, variable, rate=None):
        """``variable -= variable · rate`` if it is decayed (``rate``: `_base_decay_rate`'s, computed
        here unless given). With the kernel, `_apply_weight_decay` skipped the decay: variables
        updated without the kernel are decayed here, before their update."""
        if self.weight_decay is not None and self._use_weight_decay(variable):
            rate = self._base_decay_rate() if rate is None else rate
            variable.assign_sub(variable * tf.cast(rate, variable.dtype))

    def _fused_for(self, gradient, variable) -> bool:
        """Whether `update_step` updates ``variable`` with one fused op (kmtl's kernel or
        ``ResourceApplyAdam``), not Keras' ``update_step``."""
        return not (not self.fused or self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                    or variable.dtype != "float32" or not isinstance(_tf_variable(variable), tf.Variable))

    def _kernel_for(self, gradient, variable):
        """kmtl's kernel where it updates ``variable`` (fused, on a CPU), else None."""
        kernel = self._kernel()
        if kernel is None or not self._fused_for(gradient, variable) or not on_cpu(_tf_variable(variable)):
            return None
        return kernel

    def _rows_kernel_for(self, gradient, variable):
        """kmtl's rows kernel where it updates ``variable`` (a float32 table on a CPU) from
        ``gradient``'s rows (a float32 `tf.IndexedSlices` with its table's shape), else None."""
        if (not isinstance(gradient, tf.IndexedSlices) or gradient.dense_shape is None or self._kernel() is None
                or self.amsgrad or gradient.dtype != tf.float32 or variable.dtype != "float32"
                or not isinstance(_tf_variable(variable), tf.Variable) or not on_cpu(_tf_variable(variable))):
            return None
        from kmtl import kernels

        return kernels.adamw_rows()

    def _takes_grad_scale(self, gradient, variable) -> bool:
        # kmtl's kernel updates the variable and the gradient is float32: the kernel's multiply
        # (float32, no fused multiply-add) is the clip's `gradient * scale`, to the bit
        return gradient.dtype == tf.float32 and (self._kernel_for(gradient, variable) is not None
                                                 or self._rows_kernel_for(gradient, variable) is not None)

    def update_step(self, gradient, variable, learning_rate, grad_scale=None):
        """Keras' ``update_step``; ``grad_scale`` (the global-norm clip's scale, from
        `AllReducedClipping`) multiplies the gradient: in kmtl's kernel, or first as
        `clip_by_global_norm` does where the kernel does not update ``variable``."""
        if grad_scale is not None and not self._takes_grad_scale(gradient, variable):
            gradient, grad_scale = _scaled(gradient, grad_scale), None
        # the rows kernel for an embedding's rows that AllReducedClipping merged and hands over with
        # the clip's scale; without the clip a sparse gradient keeps Keras' own update (whose moments
        # move on the touched rows only: not the dense update this kernel makes)
        rows_kernel = self._rows_kernel_for(gradient, variable) if grad_scale is not None else None
        kernel = rows_kernel or self._kernel_for(gradient, variable)
        if kernel is None and self._kernel() is not None:
            self._decay_here(variable)  # `_apply_weight_decay` left it to the kernel, which does not run here
        if kernel is None and not self._fused_for(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.cast(self.beta_1, tf.float32), tf.cast(self.beta_2, tf.float32)
        handles = (_tf_variable(variable).handle, _tf_variable(self._momentums[index]).handle,
                   _tf_variable(self._velocities[index]).handle)
        powers = (tf.pow(beta_1, step), tf.pow(beta_2, step))
        lr, epsilon = tf.cast(learning_rate, tf.float32), tf.constant(self.epsilon, tf.float32)
        if kernel is not None:
            rate = self._decay_rate(variable)
            scale = tf.ones([]) if grad_scale is None else tf.cast(grad_scale, tf.float32)  # x * 1 is x
            settings = (*handles, *powers, lr, beta_1, beta_2, epsilon, tf.zeros([]) if rate is None else rate)
            if rows_kernel is not None:  # merged rows: each index once (the kernel checks)
                rows_kernel(*settings, gradient.values, gradient.indices, scale)
            else:
                kernel(*settings, tf.cast(gradient, tf.float32), scale)
            return
        grad = tf.cast(gradient, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=handles[0], m=handles[1], v=handles[2], beta1_power=powers[0], beta2_power=powers[1],
            lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon, grad=grad, use_locking=False)

    def _apply_weight_decay(self, variables):
        # keras/src/backend/tensorflow/optimizer.py::_apply_weight_decay computes
        # ``variable * wd * lr``: two full passes over each variable (and the schedule once per
        # variable); here the scalar ``lr * wd`` first, then one pass. Same figures to rounding.
        # With kmtl's kernel the decay is part of each variable's update (update_step).
        if self.weight_decay is None or not self.fused:
            return super()._apply_weight_decay(variables)
        if self._kernel() is not None:
            return

        def apply(distribution, variables):
            rate = self._base_decay_rate()  # once for all variables
            for variable in variables:
                distribution.extended.update(_tf_variable(variable), self._decay_here, args=(rate,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(apply, self._distribution_strategy, variables)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused, "adamw_kernel": self.adamw_kernel}


def on_cpu(variable) -> bool:
    """Whether ``variable`` lives on a CPU (or has no device yet): where `kmtl.kernels.adamw` runs.

    Example:
        >>> on_cpu(tf.Variable(1.0))   # on a machine without GPU
        True
    """
    device = tf.DeviceSpec.from_string(getattr(variable, "device", "") or "")
    return device.device_type in (None, "CPU")


def _tf_variable(variable):
    """The `tf.Variable` behind a Keras variable (itself when it is one)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="kmtl")
class AdamW(FusedAdamUpdate, AllReducedClipping, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose ``global_clipnorm`` clips the all-reduced gradient.

    Under a `tf.distribute` strategy, 1 and N replicas give the same update with clipping
    (`AllReducedClipping`); without a strategy it is Keras' AdamW with ``global_clipnorm``.
    Each variable's Adam update is one fused kernel (`FusedAdamUpdate`).

    Args:
        fused: one ``ResourceApplyAdam`` kernel per variable (default) or Keras' ops.
        **kwargs: the arguments of `keras.optimizers.AdamW`; ``global_clipnorm`` is the
            largest global L2 norm of the gradient summed over replicas (BERT: 1.0).

    Example:
        >>> optimizer = AdamW(learning_rate=5e-5, weight_decay=0.01, global_clipnorm=1.0)
        >>> model.compile(optimizer=optimizer, ...)
    """


@keras.saving.register_keras_serializable(package="kmtl")
class LayerRateAdamW(AdamW):
    """AdamW whose learning rate is multiplied, for the weights of some layers, by a factor.

    The usual use is a larger rate for freshly initialised task heads than for the pretrained
    encoder (short fine-tuning runs otherwise leave the heads under-trained). Every variable
    keeps the schedule's shape (warm-up, decay); only its peak changes. Weight decay stays
    at the base rate.

    Args:
        rate_multipliers: ``{layer name: factor}``; a variable belongs to a layer when its
            path starts with ``"<layer name>/"``.
        **kwargs: the arguments of `AdamW` (``global_clipnorm`` clips the all-reduced gradient).

    Example:
        >>> optimizer = LayerRateAdamW({"sentiment": 20.0}, learning_rate=5e-5, global_clipnorm=1.0)
        >>> model.compile(optimizer=optimizer, ...)  # the "sentiment" head trains at 1e-3
    """

    def __init__(self, rate_multipliers: Optional[Dict[str, float]] = None, **kwargs):
        super().__init__(**kwargs)
        self.rate_multipliers = {str(k): float(v) for k, v in (rate_multipliers or {}).items()}
        self._factors = []

    def multiplier_of(self, variable) -> float:
        """The factor on ``variable``'s learning rate (1.0 outside the named layers)."""
        path = getattr(variable, "path", variable.name)
        for layer, factor in self.rate_multipliers.items():
            if path.startswith(layer + "/"):
                return factor
        return 1.0

    def build(self, variables):
        super().build(variables)
        self._factors = [self.multiplier_of(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate, grad_scale=None):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        return super().update_step(gradient, variable, learning_rate, grad_scale=grad_scale)

    def get_config(self):
        return {**super().get_config(), "rate_multipliers": dict(self.rate_multipliers)}


def head_rate_multipliers(model, learning_rate: float, head_learning_rate: Optional[float] = None,
                          per_task: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """``{layer name: factor}`` for `LayerRateAdamW`: every layer of each task's head
    (`kmtl.sharing.counts.head_layers`: the output layer and the ``<task>_...`` layers feeding it,
    such as a relation head's hidden dense) at ``per_task[task]``, else ``head_learning_rate``,
    else `kmtl.defaults.head_rate`, divided by the encoder's ``learning_rate``.

    Example:
        >>> head_rate_multipliers(model, 5e-5, per_task={"rel": 2e-4})
        {'sst2': 20.0, 'rel': 4.0, 'rel_hidden': 4.0, ...}
    """
    from kmtl.sharing.counts import head_layers  # a model-level helper; the optimizer itself needs no model

    found = {}
    for task in model.tasks:
        rate = (per_task or {}).get(task.name) or defaults.head_rate(learning_rate, head_learning_rate)
        found.update({layer.name: rate / learning_rate for layer in head_layers(model, task.name) if layer.weights})
    return found


def make_optimizer(learning_rate: float = defaults.LEARNING_RATE, total_steps: int = 1000, warmup_ratio: float = 0.1,
                   weight_decay: float = 0.01, clipnorm: Optional[float] = 1.0,
                   rate_multipliers: Optional[Dict[str, float]] = None, *, model=None,
                   head_learning_rate: Optional[float] = None) -> AdamW:
    """`AdamW` with `WarmupLinearDecay`; no weight decay on biases and LayerNorm parameters.

    ``clipnorm`` (None: off) bounds the *global* L2 norm of the gradient summed over replicas
    (BERT's ``clip_by_global_norm``), not each variable's norm as Keras' ``clipnorm`` does.
    Given the ``model``, its task heads train at ``head_learning_rate`` (default
    `kmtl.defaults.head_rate`: 1e-3, the recipe `kmtl train` uses) and the rest at
    ``learning_rate``. ``rate_multipliers`` (``{layer name: factor}``) sets any layer's
    weights to a peak rate of ``factor * learning_rate`` (`LayerRateAdamW`), over the heads'.

    Example:
        >>> model.compile(optimizer=make_optimizer(5e-5, total_steps=steps * epochs, model=model))
    """
    if model is not None:
        rate_multipliers = {**head_rate_multipliers(model, learning_rate, head_learning_rate), **(rate_multipliers or {})}
    elif head_learning_rate is not None:
        raise ValueError("head_learning_rate needs the model whose heads it sets: make_optimizer(..., model=model)")
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(warmup_ratio * total_steps)))
    options = dict(learning_rate=schedule, weight_decay=weight_decay, global_clipnorm=clipnorm, epsilon=1e-6)
    if rate_multipliers and any(f != 1.0 for f in rate_multipliers.values()):
        optimizer = LayerRateAdamW(rate_multipliers, **options)
    else:
        optimizer = AdamW(**options)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
