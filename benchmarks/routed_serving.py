"""Serving cost of a model that routes by task (soft sharing), all tasks answered at once.

    python benchmarks/routed_serving.py                       # MiniLM-L6, 4 tasks, batches 1 and 32
    python benchmarks/routed_serving.py --tasks 3 --top-layers 2 --length 48 --json out.json

What a TF Serving ``serving_default`` / ``ids`` request or ``model.predict`` without task ids
costs, per variant, on token ids already encoded (the tokenizer's cost is the same for all):

* ``full``: hard sharing, one encoder pass for every task;
* ``soft``: `kmtl.model.per_task.run_tasks` (the layers below the copies once, the copied top
  layers once per task, each with plain matrix products);
* ``soft, tiled``: what kmtl did before (the batch tiled once per task, every example routed
  through its task's copies: the whole encoder once per task).

Each variant is a ``tf.function`` over the same float32 MiniLM-L6 weights; rounds alternate the
variants (load from other jobs hits them alike); the median latency per call is printed with the
1-min load average and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiled(model, x, names):
    """The batch tiled once per task, copy ``k`` routed through task ``k`` (kmtl before 2026-12-02)."""
    import tensorflow as tf

    index = {t.name: i for i, t in enumerate(model.tasks)}
    batch = tf.shape(x["token_ids"])[0]
    ids = [index[n] for n in names]
    inputs = {k: tf.tile(v, [len(ids), 1]) for k, v in x.items()}
    inputs["task_id"] = tf.repeat(tf.constant(ids, tf.int32), batch)
    outputs = model(inputs, training=False)
    return {n: outputs[n][k * batch:(k + 1) * batch] for k, n in enumerate(names)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=4, help="sentence classification tasks (default 4)")
    p.add_argument("--top-layers", type=int, default=2, help="soft_top_layers (default 2)")
    p.add_argument("--length", type=int, default=32, help="tokens per example (default 32)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=20, help="calls per round at batch 1 (fewer for larger batches)")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import kmtl
    from kmtl.bench.serve import machine_info
    from kmtl.model.per_task import run_tasks

    tasks = [kmtl.tasks.Classification(f"task{i}", ["a", "b", "c"]) for i in range(a.tasks)]
    names = [t.name for t in tasks]
    models = {"full": kmtl.build_model(kmtl.load_backbone("minilm-l6"), tasks, sharing="full"),
              "soft": kmtl.build_model(kmtl.load_backbone("minilm-l6"), tasks, sharing="soft",
                                       soft_top_layers=a.top_layers)}
    spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in ("token_ids", "segment_ids", "padding_mask")}
    variants = {
        "full": tf.function(lambda x: run_tasks(models["full"], x, tasks), input_signature=[spec]),
        "soft": tf.function(lambda x: run_tasks(models["soft"], x, tasks), input_signature=[spec]),
        "soft, tiled": tf.function(lambda x: tiled(models["soft"], x, names), input_signature=[spec]),
    }
    rng = np.random.default_rng(0)
    results = {}
    loads = []
    for batch in a.batches:
        x = {"token_ids": tf.constant(rng.integers(1000, 30000, size=(batch, a.length), dtype=np.int32)),
             "segment_ids": tf.zeros([batch, a.length], tf.int32), "padding_mask": tf.ones([batch, a.length], tf.int32)}
        calls = max(2, a.calls // max(1, batch // 4))
        times = {name: [] for name in variants}
        for fn in variants.values():  # trace and warm up
            fn(x)
            fn(x)
        for _ in range(a.rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                for _ in range(calls):
                    out = fn(x)
                    _ = [v.numpy() for v in out.values()]
                times[name].append((time.perf_counter() - start) / calls * 1000)
            loads.append(os.getloadavg()[0])
        results[batch] = {name: statistics.median(v) for name, v in times.items()}
    machine = machine_info()
    print(f"routed serving, MiniLM-L6 float32, {a.tasks} tasks, soft_top_layers {a.top_layers}, "
          f"{a.length} tokens; {machine.get('cpu_model')}, {os.cpu_count()} CPUs; "
          f"1-min load {min(loads):.2f}-{max(loads):.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'batch':>5} | " + " | ".join(f"{n:>12}" for n in variants) + " | soft / full | tiled / soft")
    for batch, row in results.items():
        print(f"{batch:>5} | " + " | ".join(f"{row[n]:9.1f} ms" for n in variants)
              + f" | {row['soft'] / row['full']:10.2f}x | {row['soft, tiled'] / row['soft']:11.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": vars(a), "machine": machine, "load_1min": [min(loads), max(loads)],
                                            "ms_per_call": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
