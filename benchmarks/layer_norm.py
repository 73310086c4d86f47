"""Micro-benchmark: forward + backward of one layer normalization, Keras' against `kmtl.layer_norm` (and XLA).

    python benchmarks/layer_norm.py                      # [32, 64, 384], float32 and bfloat16
    python benchmarks/layer_norm.py --shape 32 128 384 --iters 400 --rounds 8
    python benchmarks/layer_norm.py --forward --shape 32 22 384 --dtypes float32   # inference (serving)

Inputs in the given dtype, gamma and beta in float32 (as in a ``mixed_bfloat16`` model), the
output cast back (as ``keras.layers.LayerNormalization`` does); gradients with respect to all
three. ``xla``: the same float32 formula as one XLA-compiled function forward and another backward
(measured and dropped: slower than ``kmtl``, XLA's CPU row reductions lose to oneDNN's GEMVs).
Each candidate is a `tf.function`; rounds alternate between candidates so that load from other
jobs hits each alike; the median over rounds is printed with the load average.

``--forward``: inference, the forward pass alone, as a SavedModel runs it (stock TensorFlow ops
only: TF Serving has no kmtl kernel): Keras' ``layer_normalization`` against the same function
with one op fewer, ``(x - mean) · (rsqrt(var + ε) · γ) + β`` (``centred``), and ``identity``, a
function doing one multiply, for the cost of a call itself (measured and not adopted: 0.17 ms a
normalization of [32, 22, 384], 3 % of a serving call; README "Performance").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401
from kmtl.bench.clock import interleaved_ms, times_lines  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs="+", default=[32, 64, 384])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--epsilon", type=float, default=1e-12)
    p.add_argument("--iters", type=int, default=300, help="calls per candidate, over all rounds")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--forward", action="store_true", help="the forward pass alone, stock ops (inference)")
    args = p.parse_args(argv)
    import keras
    import tensorflow as tf

    from kmtl.kernels import for_dtype
    from kmtl.layer_norm import layer_norm

    def keras_ln(x, g, b):
        return tf.cast(keras.ops.layer_normalization(x, g, b, axis=-1, epsilon=args.epsilon), x.dtype)

    def in_float32(x, g, b):
        x32 = tf.cast(x, tf.float32)
        centred = x32 - tf.reduce_mean(x32, -1, keepdims=True)
        variance = tf.reduce_mean(centred * centred, -1, keepdims=True)
        return tf.cast(centred * tf.math.rsqrt(variance + args.epsilon) * g + b, x.dtype)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def xla_forward(x, g, b):
        return in_float32(x, g, b)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def xla_backward(x, g, b, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, g, b])
            y = tf.cast(in_float32(x, g, b), tf.float32)
        dx, dg, db = tape.gradient(y, [x, g, b], output_gradients=tf.cast(dy, tf.float32))
        return tf.cast(dx, x.dtype), dg, db

    def xla(x, g, b):  # forward and backward each one XLA-compiled function (as kmtl.activations does the GELU)
        @tf.custom_gradient
        def fused(x, g, b):
            return xla_forward(x, g, b), lambda dy: xla_backward(x, g, b, dy)

        return fused(x, g, b)

    candidates = {"keras": keras_ln, "kmtl-ops": lambda x, g, b: layer_norm(x, g, b, args.epsilon, kernel=False),
                  "xla": xla}
    if for_dtype("layer_norm", tf.float32) is not None:  # kmtl's default where its kernel builds (a CPU, no GPU)
        candidates["kmtl-kernel"] = lambda x, g, b: layer_norm(x, g, b, args.epsilon)

    def centred(x, g, b):  # Keras' function with one op fewer (no Neg / AddN): the scale folded once
        mean = tf.reduce_mean(x, -1, keepdims=True)
        c = x - mean
        variance = tf.reduce_mean(tf.square(c), -1, keepdims=True)
        return c * (tf.math.rsqrt(variance + args.epsilon) * tf.cast(g, x.dtype)) + tf.cast(b, x.dtype)

    if args.forward:
        candidates = {"identity": lambda x, g, b: x * 1.0, "keras": keras_ln, "centred": centred}

    def step_of(fn):
        if args.forward:
            return tf.function(fn)

        @tf.function
        def step(x, g, b, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, g, b])
                loss = tf.reduce_sum(tf.cast(fn(x, g, b), tf.float32) * dy)
            return tape.gradient(loss, [x, g, b])
        return step

    d = args.shape[-1]
    g, b = tf.random.normal([d], 1.0, 0.1, seed=1), tf.random.normal([d], 0.0, 0.1, seed=2)
    dy = tf.random.normal(args.shape, seed=3)
    inputs = (lambda x: (x, g, b)) if args.forward else (lambda x: (x, g, b, dy))
    per_round = max(1, args.iters // args.rounds)
    for dtype in args.dtypes:
        x = tf.cast(tf.random.normal(args.shape, 1.0, 3.0, seed=0), dtype)
        steps = {name: step_of(fn) for name, fn in candidates.items()}
        times, (load0, load1) = interleaved_ms(steps, inputs(x), args.rounds, per_round, warmup=10)
        print(f"{dtype} {args.shape}: median of {args.rounds} rounds x {per_round} calls, "
              f"{'forward' if args.forward else 'forward + backward'}; "
              f"load {load0:.2f} -> {load1:.2f}")
        print("\n".join(times_lines(times)))


if __name__ == "__main__":
    main()
