"""Micro-benchmark: the attention softmax + dropout, TensorFlow's ops against one XLA-compiled loop each way.

    python benchmarks/softmax_dropout.py                  # [32, 12, 64, 64], float32 and bfloat16
    python benchmarks/softmax_dropout.py --shape 32 12 128 128 --rounds 8

Forward + backward of ``dropout(softmax(scores))`` as `kmtl.attention` computes it in training:
``plain`` is TensorFlow's softmax and `kmtl.dropout.dropout` (the step's ops today: ``_MklSoftmax``,
the mask's ``StatelessRandomUniformFullIntV2``, a ``Mul`` and a ``SelectV2`` each way, and the
softmax gradient's ``Mul``, ``Sum``, ``Sub``, ``Mul``); ``xla`` draws the same mask
(`kmtl.dropout.keep_mask`) and computes the softmax, the drop and the scale in one compiled
function, the backward (the dropped gradient and the softmax gradient from the saved
probabilities) in another, in float32 inside (half-precision inputs cast in and out). Rounds
alternate between the candidates so that load from other jobs hits each alike; the median over
rounds is printed with the load, and the largest gradient difference from ``plain``. ``kernel``
is what `kmtl.attention` runs where kmtl's kernels build: `kmtl.attention.softmax` (its gradient
by kmtl's one-pass kernel, `kmtl.kernels.softmax`) and `kmtl.dropout.dropout` (also a kernel; so
is ``plain``'s dropout there: ``plain`` and ``kernel`` differ by the softmax gradient alone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401
from kmtl.bench.clock import interleaved_ms, times_lines  # noqa: E402


def candidates(rate: float):
    """``{"plain": fn, "xla": fn, "kernel": fn}``, each ``fn(scores, seed)``: the dropped probabilities."""
    import tensorflow as tf

    from kmtl.attention import softmax
    from kmtl.dropout import LEVELS, dropout, keep_mask, threshold

    scale = LEVELS / (LEVELS - threshold(rate))

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(scores, keep):
        probs = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)
        return tf.cast(tf.where(keep, probs * scale, 0.0), scores.dtype), tf.cast(probs, scores.dtype)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def backward(probs, keep, dy):
        kept = tf.where(keep, tf.cast(dy, tf.float32) * scale, 0.0)
        p = tf.cast(probs, tf.float32)
        return tf.cast((kept - tf.reduce_sum(kept * p, -1, keepdims=True)) * p, dy.dtype)

    def xla(scores, seed):
        keep = keep_mask(tf.shape(scores), rate, seed)

        @tf.custom_gradient
        def fused(scores):
            dropped, probs = forward(scores, keep)
            return dropped, lambda dy: backward(probs, keep, dy)

        return fused(scores)

    def plain(scores, seed):
        return dropout(tf.nn.softmax(scores, axis=-1), rate, seed)

    def kernel(scores, seed):  # what kmtl.attention runs in training where kmtl's kernels build
        return dropout(softmax(scores), rate, seed)

    return {"plain": plain, "xla": xla, "kernel": kernel}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=4, default=[32, 12, 64, 64], metavar=("B", "HEADS", "T", "S"))
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--iters", type=int, default=240, help="calls per candidate, over all rounds")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    import tensorflow as tf

    def step_of(fn):
        @tf.function
        def step(scores, dy, seed):
            with tf.GradientTape() as tape:
                tape.watch(scores)
                loss = tf.reduce_sum(tf.cast(fn(scores, seed), tf.float32) * dy)
            return tape.gradient(loss, scores)
        return step

    per_round = max(1, args.iters // args.rounds)
    dy = tf.random.normal(args.shape, seed=3)
    seed = tf.constant([1, 2])
    for dtype in args.dtypes:
        scores = tf.cast(tf.random.normal(args.shape, 0.0, 2.0, seed=0), dtype)
        steps = {name: step_of(fn) for name, fn in candidates(args.rate).items()}
        grads = [tf.cast(step(scores, dy, seed), tf.float32) for step in steps.values()]
        gap = max(float(tf.reduce_max(tf.abs(grads[0] - other))) for other in grads[1:])
        times, (load0, load1) = interleaved_ms(steps, (scores, dy, seed), args.rounds, per_round, warmup=5)
        print(f"{dtype} {args.shape} dropout {args.rate}: median of {args.rounds} rounds x {per_round} calls, "
              f"forward + backward; load {load0:.2f} -> {load1:.2f}; max |grad difference| from plain {gap:.1e}")
        print("\n".join(times_lines(times)))


if __name__ == "__main__":
    main()
