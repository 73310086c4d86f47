"""Where a kmtl training process's memory goes: resident and peak memory after each stage.

Issue 16 asks for a training run's peak RSS no higher than the PyTorch recipe's. This script
follows `kmtl.bench.train.TrainBench`'s stages one by one (import TensorFlow, import kmtl and
keras-hub, load the backbone, build the model, compile, the first step, more steps) and prints
the resident set (``VmRSS``), its peak so far (``VmHWM``) and the resident set's two kinds of pages
(anonymous: heap and tensors; file-backed: the shared libraries' code, `kmtl.bench.memory`) after
each, so the stage that costs the most is read, not guessed. ``--env NAME=VALUE`` runs the whole
trace again in a child process with that environment (an A/B of an allocator or oneDNN setting),
one row per setting.

    python benchmarks/memory_trace.py                        # MiniLM-L6, 32 x 64, float32, 10 steps
    python benchmarks/memory_trace.py --precision mixed_bfloat16 --json
    python benchmarks/memory_trace.py --env MALLOC_ARENA_MAX=2 --env ONEDNN_PRIMITIVE_CACHE_CAPACITY=16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _memory_module():
    """`kmtl.bench.memory`, loaded from its file: importing the kmtl package would import TensorFlow
    before the first stage is measured."""
    path = Path(__file__).resolve().parents[1] / "kmtl" / "bench" / "memory.py"
    spec = importlib.util.spec_from_file_location("kmtl_bench_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


memory_mib = _memory_module().memory_mib


def trace(backbone: str, batch_size: int, seq_len: int, steps: int, precision: str) -> list:
    """The stages of one training run, each ``{"stage", "rss", "hwm", "anon", "file", "seconds"}`` (MiB:
    resident, its peak so far, anonymous and file-backed resident pages)."""
    rows, start = [], time.perf_counter()

    def mark(stage):
        rows.append({"stage": stage, **{k: round(v, 1) for k, v in memory_mib().items()},
                     "seconds": round(time.perf_counter() - start, 1)})
        row = rows[-1]
        print(f"  {stage:<38} rss {row['rss']:7.0f} MiB   peak {row['hwm']:7.0f} MiB   anonymous {row['anon']:7.0f} MiB"
              f"   file-backed {row['file']:6.0f} MiB", file=sys.stderr)

    mark("python")
    import tensorflow as tf  # noqa: F401

    mark("import tensorflow")
    import keras

    import kmtl  # noqa: F401
    from kmtl.backbone import load_backbone
    from kmtl.bench.train import fixed_batch, fixed_tasks
    from kmtl.model import build_model
    from kmtl.model.precision import precision_scope, resolve_precision
    from kmtl.training import make_optimizer

    mark("import kmtl, keras-hub, tf-text")
    precision = resolve_precision(precision)[0]
    keras.utils.set_random_seed(0)
    with precision_scope(precision):
        encoder = load_backbone(backbone, seed=0)
        mark("load backbone")
        model = build_model(encoder, fixed_tasks())
        mark("build model")
    model.compile(optimizer=make_optimizer(5e-5, total_steps=10 * steps))
    batch = fixed_batch(batch_size, seq_len, encoder.backbone.vocabulary_size)
    x, y, w = batch["x"], batch["y"], batch["w"]
    model.train_on_batch(x, y, sample_weight=w)
    mark("first step (trace + optimizer slots)")
    for _ in range(steps - 1):
        model.train_on_batch(x, y, sample_weight=w)
    mark(f"after {steps} steps")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "auto"])
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="also trace a child process with this environment setting (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for setting in args.env:
        if "=" not in setting:
            parser.error(f"--env takes NAME=VALUE, got {setting!r}")
    settings = [None] + args.env if not args.child else [None]
    results = []
    for setting in settings:
        if setting is None:
            print(f"trace ({'this process' if not args.child else os.environ.get('KMTL_TRACE_ENV')}):", file=sys.stderr)
            rows = trace(args.backbone, args.batch_size, args.seq_len, args.steps, args.precision)
        else:
            name, _, value = setting.partition("=")
            command = [sys.executable, __file__, "--child", "--json", "--backbone", args.backbone, "--batch-size",
                       str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
                       "--precision", args.precision]
            env = {**os.environ, name: value, "KMTL_TRACE_ENV": setting}
            done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
            rows = json.loads(done.stdout)[0]["rows"]
        results.append({"env": setting or "(as is)", "rows": rows})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        stages = [row["stage"] for row in results[0]["rows"]]
        print(f"{'stage':<38}" + "".join(f"{r['env'][:22]:>24}" for r in results))
        for i, stage in enumerate(stages):
            print(f"{stage:<38}" + "".join(f"{r['rows'][i]['rss']:>10.0f} / {r['rows'][i]['hwm']:>7.0f} MiB"
                                           for r in results))
        print("(rss / peak so far, MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
