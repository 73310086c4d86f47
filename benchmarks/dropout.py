"""Micro-benchmark: `kmtl.dropout` by kmtl's one-pass kernel against the same dropout in TensorFlow ops.

    python benchmarks/dropout.py                       # [32, 12, 64, 64] and [32, 64, 384], float32 and bfloat16
    python benchmarks/dropout.py --shapes 32x12x128x128 --rounds 8
    python benchmarks/dropout.py --philox              # the kernel's forward: SIMD Philox loop vs portable

Forward + backward of ``dropout(x)`` at rate 0.1 (a MiniLM step runs six of each shape's
dropout: the attention probabilities' and, twice per layer, the hidden states'). ``kernel`` is
`kmtl.kernels.dropout` (the words, compare, scale and select in one pass; the gradient in one);
``ops`` the TensorFlow ops (``StatelessRandomUniformFullIntV2``, ``GreaterEqual``, ``Mul``,
``SelectV2``; ``SelectV2`` + ``Mul`` back). Rounds alternate between the two so that load from
other jobs hits each alike; the median over rounds is printed with the load, and whether the two
gave the same gradient to the bit.

``--philox`` times the kernel's forward alone with its Philox words from the SIMD loop this CPU
takes (AVX-512, else AVX2) against the portable loop (GCC's vectorization of plain C++), and says
whether the two masks are the same to the bit.
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
    p.add_argument("--shapes", nargs="+", default=["32x12x64x64", "32x64x384"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--iters", type=int, default=240, help="calls per candidate, over all rounds")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--philox", action="store_true",
                   help="the kernel's forward: the SIMD Philox loop against the portable one")
    args = p.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    from kmtl import kernels
    from kmtl.dropout import dropout, threshold

    ops = kernels.dropout()
    if ops is None:
        sys.exit("kmtl's dropout kernel does not build here (see the warning above): nothing to compare")

    def step_of(kernel):
        @tf.function
        def step(x, dy, seed):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = dropout(x, args.rate, seed, kernel=kernel)
            return tape.gradient(y, x, dy)
        return step

    def forward_of(philox):
        level = threshold(args.rate)

        @tf.function
        def forward(x, dy, seed):  # dy unused: the same arguments as step_of's steps
            _, keep = ops.kmtl_dropout(x, seed, tf.constant(1.0, x.dtype), threshold=level, philox=philox)
            return tf.cast(keep, x.dtype)
        return forward

    per_round = max(1, args.iters // args.rounds)
    seed = tf.constant([1, 2])
    for text in args.shapes:
        shape = [int(n) for n in text.split("x")]
        for dtype in args.dtypes:
            x = tf.cast(tf.random.normal(shape, seed=0), dtype)
            dy = tf.cast(tf.random.normal(shape, seed=3), dtype)
            if args.philox:
                steps = {"SIMD Philox": forward_of("auto"), "portable Philox": forward_of("portable")}
                what, compared = "kernel forward", "mask"
            else:
                steps = {"kernel": step_of(True), "ops": step_of(False)}
                what, compared = "forward + backward", "gradient"
            outs = [tf.cast(step(x, dy, seed), tf.float32).numpy() for step in steps.values()]
            same = np.array_equal(outs[0], outs[1])
            times, (load0, load1) = interleaved_ms(steps, (x, dy, seed), args.rounds, per_round, warmup=5)
            print(f"{dtype} {shape} dropout {args.rate}: median of {args.rounds} rounds x {per_round} calls, "
                  f"{what}; load {load0:.2f} -> {load1:.2f}; same {compared} to the bit: {same}")
            print("\n".join(times_lines(times)))


if __name__ == "__main__":
    main()
