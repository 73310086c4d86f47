"""Micro-benchmark: ways to run AdamW's passes over MiniLM-L6's weights: TensorFlow's kernels, XLA, kmtl's kernel.

    python benchmarks/optimizer_update.py                 # decay of the 38 kernels, Adam on the token table, the kernel
    python benchmarks/optimizer_update.py --rounds 8 --iters 160

Parts of `kmtl.optimizer.AdamW`'s update, each timed against its alternatives on the shapes of
MiniLM-L6's weights (float32, 2 threads as TensorFlow sets them), rounds interleaved so that load
from other jobs hits every candidate alike; the median over rounds is printed with the load:

- the decoupled weight decay ``var -= var · (lr · wd)`` of the decayed kernels (the embedding tables
  and every dense kernel, 22.5 M weights): ``Mul`` + ``AssignSubVariableOp`` (``mul_sub``, kmtl's fallback);
  one ``ResourceApplyGradientDescent`` with the variable as its own gradient (``apply_gd``, in
  place but copy-on-write: the read keeps the buffer shared); the same arithmetic compiled by XLA
  on the variable's value, the result handed to ``AssignVariableOp`` (``xla_assign``, which adopts
  the output buffer instead of copying). ``xla_assign`` is also checked against ``mul_sub``
  (its fused multiply-add rounds differently).
- Adam's update of the [30522, 384] token table: TensorFlow's ``ResourceApplyAdam`` kernel
  (``raw_adam``) against the same formula compiled by XLA on the values of the variable and its
  two slots, assigned back (``xla_adam``).
- the decay and Adam's update of every decayed kernel: TensorFlow's ops (``tf_ops``: the decay's
  ``Mul`` + ``AssignSubVariableOp``, then ``ResourceApplyAdam``) against kmtl's kernel
  (``kmtl_kernel``, `kmtl.kernels.adamw`, what `kmtl.optimizer.FusedAdamUpdate` runs where it
  builds), with a check that both give the same figures to the bit.
- the token table's update from a batch's merged rows: scaled, scattered into a dense gradient and
  given to kmtl's kernel (``scatter_kernel``, kmtl before 2026-12-03 15:30) against
  ``KmtlApplyAdamWRows`` on the rows (``rows_kernel``), with the same check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401
from kmtl.bench.clock import interleaved_ms, times_lines  # noqa: E402

TOKENS, POSITIONS, HIDDEN, INTERMEDIATE, LAYERS = 30522, 512, 384, 1536, 6


def kernel_shapes():
    """The decayed weights of MiniLM-L6: the token and position tables and every dense kernel."""
    shapes = [(TOKENS, HIDDEN), (POSITIONS, HIDDEN)]
    for _ in range(LAYERS):
        shapes += [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]
    return shapes


def report(title, times, load):
    print(f"{title}; load {load[0]:.2f} -> {load[1]:.2f}")
    print("\n".join(times_lines(times)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=120, help="calls per candidate, over all rounds")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--distinct-rows", type=int, default=1500,
                   help="rows of the token table a batch touches (default 1,500 of a 32 x 64 batch)")
    args = p.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    per_round = max(1, args.iters // args.rounds)
    rng = np.random.default_rng(0)
    rate = tf.constant(5e-7)  # lr 5e-5 x weight decay 0.01
    start = [rng.normal(0.0, 0.02, s).astype("float32") for s in kernel_shapes()]
    weights = [tf.Variable(w) for w in start]

    @tf.function(jit_compile=True, reduce_retracing=True)
    def decayed(x, r):
        return x - x * r

    # each returns a scalar: a tf.function returns once all its stateful ops have run
    def mul_sub():
        for v in weights:
            v.assign_sub(v * rate)
        return weights[0][0, 0]

    def apply_gd():
        for v in weights:
            tf.raw_ops.ResourceApplyGradientDescent(var=v.handle, alpha=rate, delta=v.read_value())
        return weights[0][0, 0]

    def xla_assign():
        for v in weights:
            v.assign(decayed(v.read_value(), rate))
        return weights[0][0, 0]

    decay = {name: tf.function(fn) for name, fn in
             (("mul_sub", mul_sub), ("apply_gd", apply_gd), ("xla_assign", xla_assign))}
    results = {}
    for name, fn in decay.items():
        for v, w in zip(weights, start):
            v.assign(w)
        fn()
        results[name] = [v.numpy() for v in weights]
    gaps = {name: max(float(np.abs(a - b).max()) for a, b in zip(results["mul_sub"], got))
            for name, got in results.items()}
    times, load = interleaved_ms(decay, (), args.rounds, per_round, warmup=3)
    report(f"weight decay of {len(start)} kernels ({sum(w.size for w in start) / 1e6:.1f} M weights), "
           f"median of {args.rounds} rounds x {per_round} calls", times, load)
    print("  largest difference from mul_sub after one call: "
          + ", ".join(f"{name} {gap:.1e}" for name, gap in gaps.items()))

    shape = (TOKENS, HIDDEN)
    var, m, v = (tf.Variable(rng.normal(0.0, 0.02, shape).astype("float32")) for _ in range(3))
    grad = tf.constant(rng.normal(0.0, 1e-3, shape).astype("float32"))
    b1, b2, eps, lr = 0.9, 0.999, 1e-6, 1e-5

    @tf.function(jit_compile=True)
    def adam_values(x, m_, v_, g):
        m_ = m_ + (g - m_) * (1 - b1)
        v_ = v_ + (g * g - v_) * (1 - b2)
        return x - lr * m_ / (tf.sqrt(v_) + eps), m_, v_

    @tf.function
    def raw_adam():
        tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=0.5, beta2_power=0.5,
                                     lr=lr, beta1=b1, beta2=b2, epsilon=eps, grad=grad)
        return var[0, 0]

    @tf.function
    def xla_adam():
        for target, value in zip((var, m, v), adam_values(var.read_value(), m.read_value(), v.read_value(), grad)):
            target.assign(value)
        return var[0, 0]

    times, load = interleaved_ms({"raw_adam": raw_adam, "xla_adam": xla_adam}, (), args.rounds, per_round, warmup=3)
    report(f"Adam update of the token table {list(shape)}, median of {args.rounds} rounds x {per_round} calls",
           times, load)

    from kmtl import kernels

    kernel = kernels.adamw()
    if kernel is None:
        print("kmtl's AdamW kernel: not built here (see the warning); its comparison is skipped")
        return
    states = {name: [[tf.Variable(w) for w in start], [tf.Variable(tf.zeros_like(w)) for w in start],
                     [tf.Variable(tf.zeros_like(w)) for w in start]] for name in ("tf_ops", "kmtl_kernel")}
    grads = [tf.constant(rng.normal(0.0, 1e-3, w.shape).astype("float32")) for w in start]

    @tf.function
    def tf_ops():
        weights, ms, vs = states["tf_ops"]
        for w in weights:
            w.assign_sub(w * rate)
        for w, m_, v_, g in zip(weights, ms, vs, grads):
            tf.raw_ops.ResourceApplyAdam(var=w.handle, m=m_.handle, v=v_.handle, beta1_power=0.5, beta2_power=0.5,
                                         lr=lr, beta1=b1, beta2=b2, epsilon=eps, grad=g)
        return weights[0][0, 0]

    @tf.function
    def kmtl_kernel():
        weights, ms, vs = states["kmtl_kernel"]
        for w, m_, v_, g in zip(weights, ms, vs, grads):
            kernel(w.handle, m_.handle, v_.handle, 0.5, 0.5, lr, b1, b2, eps, rate, g, 1.0)
        return weights[0][0, 0]

    tf_ops(), kmtl_kernel()
    same = all(np.array_equal(a.numpy(), b.numpy()) for part in range(3)
               for a, b in zip(states["tf_ops"][part], states["kmtl_kernel"][part]))
    times, load = interleaved_ms({"tf_ops": tf_ops, "kmtl_kernel": kmtl_kernel}, (), args.rounds, per_round, warmup=3)
    report(f"decay + Adam of the {len(start)} kernels: TensorFlow's ops (Mul, AssignSub, ResourceApplyAdam) against "
           f"kmtl.kernels.adamw, median of {args.rounds} rounds x {per_round} calls", times, load)
    print(f"  the same figures to the bit after one call each: {same}")

    # the token table's update from a batch's merged rows (32 x 64 tokens: up to 2,048 distinct rows):
    # the rows scaled by the clip and scattered into a dense gradient, then the kernel, against
    # KmtlApplyAdamWRows on the rows themselves (what kmtl.optimizer.FusedAdamUpdate runs)
    rows_kernel = kernels.adamw_rows()
    indices = tf.constant(np.sort(rng.choice(TOKENS, args.distinct_rows, replace=False)).astype("int32"))
    rows = tf.constant(rng.normal(0.0, 1e-3, (args.distinct_rows, HIDDEN)).astype("float32"))
    scale = tf.constant(0.5)
    tables = {name: [tf.Variable(np.abs(rng.normal(0.0, 0.02, shape)).astype("float32")) for _ in range(3)]
              for name in ("scatter_kernel", "rows_kernel")}  # (v >= 0: no NaN, which equals nothing)
    for target, source in zip(tables["rows_kernel"], tables["scatter_kernel"]):
        target.assign(source)

    @tf.function
    def scatter_kernel():
        table, m_, v_ = tables["scatter_kernel"]
        dense = tf.convert_to_tensor(tf.IndexedSlices(rows * scale, indices, tf.constant(shape)))
        kernel(table.handle, m_.handle, v_.handle, 0.5, 0.5, lr, b1, b2, eps, rate, dense, 1.0)
        return table[0, 0]

    @tf.function
    def rows_only():
        table, m_, v_ = tables["rows_kernel"]
        rows_kernel(table.handle, m_.handle, v_.handle, 0.5, 0.5, lr, b1, b2, eps, rate, rows, indices, scale)
        return table[0, 0]

    scatter_kernel(), rows_only()
    same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(tables["scatter_kernel"], tables["rows_kernel"]))
    times, load = interleaved_ms({"scatter_kernel": scatter_kernel, "rows_kernel": rows_only}, (), args.rounds,
                                 per_round, warmup=3)
    report(f"the token table {list(shape)} from {args.distinct_rows} merged rows: scaled, scattered into a dense "
           f"gradient + kmtl.kernels.adamw against kmtl.kernels.adamw_rows, median of {args.rounds} rounds x "
           f"{per_round} calls", times, load)
    print(f"  the same figures to the bit after one call each: {same}")


if __name__ == "__main__":
    main()
