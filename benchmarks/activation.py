"""Micro-benchmark: forward + backward of the feed-forward GELU, plain ops against `kmtl.activations`' fused loops.

    python benchmarks/activation.py                      # [32, 64, 1536], float32 and bfloat16
    python benchmarks/activation.py --shape 32 128 1536 --activation gelu --iters 400 --rounds 8

Candidates, each a `tf.function` taking an input in the given dtype: ``plain`` is the activation
in that dtype (Keras' own); ``float32`` the plain ops in float32 (cast in and back, what
`kmtl.activations.Float32Activation` does outside training); ``fused`` the XLA-compiled
forward and backward loops (`kmtl.activations.fused_activation`, what it does in training).
Rounds alternate between candidates so that load from other jobs hits each alike; the median
over rounds is printed with the load average, and each candidate's largest gradient difference
from ``float32``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401
from kmtl.bench.clock import interleaved_ms  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs="+", default=[32, 64, 1536])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--activation", default="gelu_approximate",
                   help="gelu_approximate (BERT's, the default) or a Keras activation name")
    p.add_argument("--iters", type=int, default=300, help="calls per candidate, over all rounds")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    import keras
    import tensorflow as tf

    from kmtl.activations import fused_activation

    if args.activation == "gelu_approximate":
        from keras_hub.src.utils.keras_utils import gelu_approximate as activation
    else:
        activation = keras.activations.get(args.activation)

    def in_float32(x):
        return tf.cast(activation(tf.cast(x, tf.float32)), x.dtype)

    candidates = {"plain": activation, "float32": in_float32, "fused": lambda x: fused_activation(activation, x)}

    def step_of(fn):
        @tf.function
        def step(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.cast(fn(x), tf.float32) * dy)
            return tape.gradient(loss, x)
        return step

    dy = tf.random.normal(args.shape, seed=3)
    per_round = max(1, args.iters // args.rounds)
    for dtype in args.dtypes:
        x = tf.cast(tf.random.normal(args.shape, 0.0, 2.0, seed=0), dtype)
        steps = {name: step_of(fn) for name, fn in candidates.items()}
        reference = tf.cast(steps["float32"](x, dy), tf.float32)
        gaps = {name: float(tf.reduce_max(tf.abs(tf.cast(step(x, dy), tf.float32) - reference)))
                for name, step in steps.items()}
        times, (load0, load1) = interleaved_ms(steps, (x, dy), args.rounds, per_round, warmup=10)
        print(f"{dtype} {args.shape} {args.activation}: median of {args.rounds} rounds x {per_round} calls, "
              f"forward + backward; load {load0:.2f} -> {load1:.2f}")
        for name, t in times.items():
            print(f"  {name:<8} {statistics.median(t):7.3f} ms   max |grad - float32's| {gaps[name]:.2e}   "
                  f"rounds {' '.join(f'{v:.2f}' for v in t)}")


if __name__ == "__main__":
    main()
