"""Where a kmtl training step spends its time: per-op profile and matmul-only time vs step time.

    python benchmarks/profile_step.py                  # MiniLM, batch 32 x 64, XLA off (op-level view)
    python benchmarks/profile_step.py --jit            # XLA on: one cluster op, see the HLO-level lines
    python benchmarks/profile_step.py --precision mixed_bfloat16   # bf16 compute (matmuls alone in bf16 too)

1. Trains a few warm-up steps, then records ``--steps`` steps with the TensorFlow profiler
   (`tf.profiler.experimental`) and sums the host events of the resulting XSpace (the
   ``.xplane.pb`` file, parsed with TensorFlow's own protobuf) by op type: the ten most
   expensive op types with their share of the step.
2. Times the matmuls alone: the forward and backward GEMMs of the encoder at the step's
   shapes (``[B·S, H] × [H, H]`` ×4, ``[B·S, H] × [H, I]`` and back, per layer, each ×3 for
   forward + two backward products; the batched attention products), in one `tf.function`,
   and compares that with the step time: the difference is what is not matmul.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401


def op_table(logdir, top=12, detail=()):
    """``[(op type, seconds, calls)]`` summed over host events of the profile in ``logdir``, the
    total, and ``{op type: Counter(scope: seconds)}`` for the op types in ``detail`` (where a
    type's time goes: the op's name scope, digits dropped so that the layers add up)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    space.ParseFromString(open(files[0], "rb").read())
    totals, calls = collections.Counter(), collections.Counter()
    scopes = {kind: collections.Counter() for kind in detail}
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "?")
                # TF op events are named "scope/op_name:OpType" (oneDNN ops: "_MklNative...");
                # executor and runtime events ("ExecutorState::Process", ...) are left out
                if ":" not in name or "::" in name or name.startswith(("Iterator", "$")):
                    continue
                op_type = name.rsplit(":", 1)[1]
                if not op_type or not (op_type[0].isupper() or op_type[0] == "_") or " " in op_type:
                    continue
                totals[op_type] += ev.duration_ps * 1e-12
                calls[op_type] += 1
                if op_type in scopes:
                    scopes[op_type][re.sub(r"_?\d+", "", name.rsplit(":", 1)[0])] += ev.duration_ps * 1e-12
    return [(k, v, calls[k]) for k, v in totals.most_common(top)], sum(totals.values()), scopes


def matmul_only_seconds(batch, seq, layers, hidden, inter, heads, rounds=3, dtype="float32"):
    """Seconds of the step's matmuls alone (forward + backward), median of ``rounds``.

    Every product gets its own operands (Grappler would merge identical products and fold
    captured constants), and each result is fully reduced so that none is pruned.
    """
    import statistics

    import tensorflow as tf

    t, d = batch * seq, hidden // heads
    shapes = []
    for _ in range(layers):
        for _ in range(4):  # Q, K, V, output projections: forward, d_input, d_weight
            shapes += [([t, hidden], [hidden, hidden])] * 3
        for _ in range(2):  # feed-forward up and down: forward, d_input, d_weight
            shapes += [([t, hidden], [hidden, inter]), ([t, inter], [inter, hidden]), ([hidden, t], [t, inter])]
        # attention QK^T and PV: forward and two backward products each
        shapes += [([batch, heads, seq, d], [batch, heads, d, seq]), ([batch, heads, seq, seq], [batch, heads, seq, d])] * 3
    operands = [(tf.random.normal(a, dtype=dtype), tf.random.normal(b, dtype=dtype)) for a, b in shapes]

    @tf.function
    def gemms(pairs):
        return tf.add_n([tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)) for a, b in pairs])

    gemms(operands).numpy()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        gemms(operands).numpy()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_op_table(rows, total, scopes, runs, unit="step", top_scopes=15):
    """Print `op_table`'s figures per ``unit`` (``runs`` of them were profiled)."""
    for name, seconds, n in rows:
        print(f"  {name:<34} {seconds / runs * 1e3:8.2f} ms/{unit}  {100 * seconds / total:5.1f}%  "
              f"({n // runs} calls/{unit})")
    for kind, by_scope in scopes.items():
        print(f"{kind} by name scope (digits dropped):")
        for scope, seconds in by_scope.most_common(top_scopes):
            print(f"  {seconds / runs * 1e3:8.2f} ms/{unit}  {scope}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--jit", action="store_true")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    p.add_argument("--detail", nargs="*", default=(), metavar="OP_TYPE",
                   help="also list where these op types' time goes, by name scope (e.g. --detail Mul Cast)")
    p.add_argument("--top", type=int, default=12, help="how many op types to list (default 12)")
    args = p.parse_args(argv)
    import tensorflow as tf

    from kmtl.bench.train import TrainBench

    bench = TrainBench(args.backbone, batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps,
                       repeats=1, warmup=2, jit=args.jit, precision=args.precision)
    ds = bench.dataset()
    model = bench.model
    model.fit(ds.take(2), epochs=1, verbose=0)  # warm-up: tracing, oneDNN primitives
    with tempfile.TemporaryDirectory() as logdir:
        t0 = time.perf_counter()
        tf.profiler.experimental.start(logdir)
        model.fit(ds.take(args.steps), epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        profiled = (time.perf_counter() - t0) / args.steps
        rows, total, scopes = op_table(logdir, top=args.top, detail=args.detail)
    t0 = time.perf_counter()
    model.fit(ds.take(args.steps), epochs=1, verbose=0)
    step = (time.perf_counter() - t0) / args.steps
    d = bench.dims
    mm = matmul_only_seconds(args.batch_size, args.seq_len, d["layers"], d["hidden"], d["intermediate"],
                             int(getattr(bench.encoder.backbone, "num_heads", 12)),
                             dtype=bench.compute_dtype)
    print(f"step {step * 1e3:.0f} ms (profiled {profiled * 1e3:.0f} ms), XLA {'on' if args.jit else 'off'}, {args.precision}, "
          f"batch {args.batch_size} x {args.seq_len}; load {os.getloadavg()[0]:.2f}")
    print(f"matmuls alone (forward + backward GEMMs at the step's shapes): {mm * 1e3:.0f} ms = "
          f"{100 * mm / step:.0f}% of the step")
    print(f"op types by host time over {args.steps} profiled steps (sum of op events {total:.2f} s; "
          "ops on 2 threads can overlap):")
    print_op_table(rows, total, scopes, args.steps, "step")


if __name__ == "__main__":
    main()
