"""kmtl vs the PyTorch + transformers recipe, side by side in one run: the issue's four targets.

    python benchmarks/compare_torch.py                      # all four targets, ~15 min on 2 cores
    python benchmarks/compare_torch.py --targets fixed serve --steps 10 --json
    python benchmarks/compare_torch.py --targets fixed real --precision mixed_bfloat16   # bf16 against bf16
    python benchmarks/compare_torch.py --targets fixed --precision mixed_bfloat16 --torch-precision float32

kmtl runs in this process; the PyTorch recipe (`benchmarks/peer_torch.py`) in a child process
(its own memory, its own threads: ``torch.set_num_threads(<cores>)``), driven over a pipe.
Repetitions are interleaved — kmtl window 1, torch window 1, kmtl window 2, ... — so that
load from other jobs on the machine hits both; each side's median is reported, with the
1-minute load average before and after each target.

1. ``fixed`` — training, batch 32 × 64 word pieces, one sentence head + one token head, the
   very same batch for both (`kmtl bench train` defaults, XLA off). ``--precision`` sets both
   sides' training precision (float32 by default; ``mixed_bfloat16``: kmtl's bfloat16 policy and
   the recipe under ``torch.autocast``), ``--torch-precision`` the recipe's alone.
2. ``real`` — training on the SST-2 + CoNLL-2003 + STS-B + AG News mixture, max length 128:
   kmtl through `kmtl.data.mixture` (live tokenization, ``--padding``: grouped by length by
   default); the recipe with its usual dynamic padding (random batches padded to their
   longest sequence, tokenized beforehand with ``AutoTokenizer``).
3. ``data`` — the kmtl input pipeline alone (steady state) against kmtl's training
   consumption measured in target 2 (no PyTorch side).
4. ``serve`` — the exported SavedModel from raw text (``serving_default``: tokenizer in the
   graph) against the recipe's ``model.eval()`` under ``torch.no_grad()`` on the same texts
   tokenized beforehand, batch 32, 20-word sentences (the `kmtl bench serve` set-up).

Memory: each process's peak resident set (``ru_maxrss``) and, sampled every 20 ms over the whole
run by `kmtl.bench.memory.PeakMemory`, the peaks of its anonymous memory (heap, tensors) and of its
file-backed pages (the shared libraries' code): most of the difference in resident memory between
the two frameworks is the second. torch is never imported into kmtl's process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import kmtl  # noqa: E402,F401  (sets the TF environment: oneDNN on, Keras on TensorFlow)
from kmtl.bench.spread import spread_warning  # noqa: E402

TARGETS = {"fixed": 1.2, "real": 1.3, "data": 10.0, "serve": 1.0}


def loadavg():
    return round(os.getloadavg()[0], 2)


def say(message):
    print(f"compare: {message}", file=sys.stderr, flush=True)


class Peer:
    """The PyTorch recipe in a child process (``peer_torch.py --worker``)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "peer_torch.py"), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch worker died (see its messages above)")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self):
        try:
            self.ask(cmd="quit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=30)


def save_batches(batches, path):
    import numpy as np

    arrays = {f"{i}/{part}/{name}": v for i, b in enumerate(batches) for part in ("x", "y", "w")
              for name, v in b[part].items()}
    np.savez(path, **arrays)


def heads_of(tasks):
    return [{"name": t.name, "kind": t.kind, "classes": t.num_outputs} for t in tasks]


def train_target(peer, tmp, args, data):
    """Targets 1 and 2: interleaved training windows; returns the row."""
    from kmtl.bench.train import TrainBench

    seq_len = args.seq_len if data == "fixed" else args.max_length
    bench = TrainBench(args.backbone, batch_size=args.batch_size, seq_len=seq_len, steps=args.steps,
                       repeats=args.repeats, warmup=args.warmup, data=data, jit=args.jit,
                       padding=args.padding, data_dir=args.data_dir, limit=args.limit, precision=args.precision)
    batches = bench.batches()
    total = len(batches)
    if data == "fixed":
        path = Path(tmp) / "fixed.npz"
        save_batches(batches, path)
        setup = peer.ask(cmd="train_setup", batches=str(path), heads=heads_of(bench.tasks), warmup=args.warmup,
                         precision=args.torch_precision)
    else:
        setup = peer.ask(cmd="train_setup_real", data_dir=str(args.data_dir), batch_size=args.batch_size,
                         seq_len=seq_len, count=total, limit=args.limit, warmup=args.warmup,
                         precision=args.torch_precision)
    torch_windows = []

    def torch_window(index):
        start = args.warmup + index * args.steps
        torch_windows.append(peer.ask(cmd="train", start=start, count=args.steps))

    load0 = loadavg()
    result = bench.run(between=torch_window, batches=batches)
    torch_window(args.repeats - 1)
    kmtl_eps = result["examples_per_sec"]
    torch_eps = statistics.median(w["examples_per_sec"] for w in torch_windows)
    return {"target": data, "kmtl": kmtl_eps, "torch": torch_eps, "ratio": kmtl_eps / torch_eps,
            "goal": TARGETS[data], "load": [load0, loadavg()],
            "unit": f"training examples/s ({precisions(args)})",
            "kmtl_detail": {k: result[k] for k in ("tokens_per_sec", "padded_tokens_per_sec", "gflops", "peak_gflops",
                                                   "peak_ratio", "mean_padded_length", "mean_real_length",
                                                   "peak_rss_mib", "step_seconds")}
            | {"windows": [w["examples_per_sec"] for w in result["repeats"]], "settings": result["settings"]},
            "torch_detail": {"windows": [w["examples_per_sec"] for w in torch_windows],
                             "mean_padded_length": statistics.median(w["mean_padded_length"] for w in torch_windows),
                             "mean_real_length": statistics.median(w["mean_real_length"] for w in torch_windows),
                             "tokens_per_sec": statistics.median(w["tokens_per_sec"] for w in torch_windows)},
            "setup": setup}


def data_target(args, train_eps):
    """Target 3: the pipeline alone vs kmtl's training consumption."""
    from kmtl.bench.data import bench_data

    load0 = loadavg()
    r = bench_data(args.backbone, batch_size=args.batch_size, seq_len=args.max_length, steps=200,
                   repeats=args.repeats, padding=args.padding, data_dir=args.data_dir, limit=args.limit,
                   train_examples_per_sec=train_eps)
    return {"target": "data", "kmtl": r["steady_examples_per_sec"], "torch": None, "consumption": train_eps,
            "ratio": r["ratio_steady_to_train"], "goal": TARGETS["data"], "unit": "pipeline examples/s / training",
            "load": [load0, loadavg()], "kmtl_detail": {k: r[k] for k in ("read_examples_per_sec",
                                                                          "tokenize_examples_per_sec",
                                                                          "ratio_tokenize_to_train",
                                                                          "mean_padded_length")}}


def serve_target(peer, tmp, args):
    """Target 4: SavedModel raw text vs torch eval on ids, interleaved windows."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    from kmtl.bench.serve import _build, _encode, _fetch, sentences, time_calls
    from kmtl.export import export_saved_model

    model, pre, _ = _build(args.backbone, None, 128)
    texts = sentences(args.batch_size, args.seq_words)
    feed = _encode(pre, model.tasks, texts)
    np.savez(Path(tmp) / "feed.npz", **feed)
    saved = export_saved_model(model, pre, Path(tmp) / "saved", "bench")
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    text = tf.constant(texts)
    call = lambda: _fetch(serve(text=text))  # noqa: E731
    peer.ask(cmd="infer_setup", feed=str(Path(tmp) / "feed.npz"), heads=heads_of(model.tasks))
    for _ in range(3):
        call()
    load0 = loadavg()
    kmtl_runs, torch_runs = [], []
    for _ in range(args.repeats):
        kmtl_runs.append(time_calls(call, args.batch_size, args.seconds, 1, warmup=0)["examples_per_s"])
        torch_runs.append(peer.ask(cmd="infer", seconds=args.seconds)["examples_per_s"])
    k, t = statistics.median(kmtl_runs), statistics.median(torch_runs)
    return {"target": "serve", "kmtl": k, "torch": t, "ratio": k / t, "goal": TARGETS["serve"],
            "unit": "inference examples/s", "load": [load0, loadavg()],
            "kmtl_detail": {"windows": kmtl_runs, "input": "raw text (SavedModel serving_default)",
                            "length": int(feed["token_ids"].shape[1])},
            "torch_detail": {"windows": torch_runs, "input": "token ids (model.eval(), no_grad)"}}


def precisions(args) -> str:
    """``float32``, or ``kmtl X, torch Y`` when the two sides train in different precisions."""
    same = args.precision == args.torch_precision
    return args.precision if same else f"kmtl {args.precision}, torch {args.torch_precision}"


def format_rows(rows):
    lines = [f"{'target':<8} {'kmtl':>10} {'torch':>10} {'ratio':>7} {'goal':>6} {'met':>4}  load (1 min)  unit",
             "-" * 78]
    for r in rows:
        torch_cell = f"{r['torch']:10.1f}" if r["torch"] is not None else f"{'-':>10}"
        lines.append(f"{r['target']:<8} {r['kmtl']:10.1f} {torch_cell} {r['ratio']:7.2f} {r['goal']:6.1f} "
                     f"{'yes' if r['ratio'] >= r['goal'] else 'no':>4}  {r['load'][0]:.2f} -> {r['load'][1]:.2f}  {r['unit']}")
    # the same work in every window on fixed shapes and in serving (real-data windows hold other batches)
    warnings = (spread_warning(f"{r['target']}, {side}", r[f"{side}_detail"]["windows"], "examples/s")
                for r in rows if r["target"] in ("fixed", "serve") for side in ("kmtl", "torch")
                if len(r.get(f"{side}_detail", {}).get("windows", [])) > 1)
    return "\n".join(lines + [w for w in warnings if w])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", choices=tuple(TARGETS), default=list(TARGETS))
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64, help="fixed-shape target length (default: 64)")
    p.add_argument("--max-length", type=int, default=128, help="real-data max length (default: 128)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False, help="XLA for kmtl (default: off)")
    p.add_argument("--padding", choices=("longest", "buckets", "grouped"), default="grouped")
    p.add_argument("--data-dir", default=os.environ.get("KMTL_SHARED_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--seq-words", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0, help="serve: window per repeat")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
                   help="training targets: both sides in float32 (default), or both in bfloat16 mixed precision "
                        "(kmtl mixed_bfloat16, the recipe under torch.autocast)")
    p.add_argument("--torch-precision", choices=("float32", "mixed_bfloat16"),
                   help="the recipe's precision when it differs from kmtl's (default: --precision), e.g. kmtl in "
                        "bfloat16 against the recipe in float32")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    args.torch_precision = args.torch_precision or args.precision
    if args.backbone != "minilm-l6":
        p.error("the PyTorch recipe loads the MiniLM folder: --backbone must be minilm-l6")
    # find_spec, not import: importing torch here would add its libraries to kmtl's resident memory
    if any(importlib.util.find_spec(name) is None for name in ("torch", "transformers")):
        p.error("needs the optional extra: pip install -e '.[peer]' (torch, transformers)")
    from kmtl.bench.memory import PeakMemory

    peer = Peer()
    memory = PeakMemory({"kmtl": "self", "torch": peer.proc.pid}).start()
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    try:
        with tempfile.TemporaryDirectory(prefix="kmtl-compare-") as tmp:
            real_row = None
            for target in ("fixed", "real"):
                if target in args.targets or (target == "real" and "data" in args.targets):
                    say(f"target {target}: training, kmtl and torch interleaved")
                    row = train_target(peer, tmp, args, target)
                    real_row = row if target == "real" else real_row
                    if target in args.targets:
                        rows.append(row)
                    print(format_rows([row]), flush=True)
            if "data" in args.targets:
                say("target data: the input pipeline alone")
                rows.append(data_target(args, real_row["kmtl"]))
            if "serve" in args.targets:
                say("target serve: SavedModel raw text vs torch eval on ids, interleaved")
                rows.append(serve_target(peer, tmp, args))
        stats = peer.ask(cmd="stats")
    finally:
        peaks = memory.stop()  # before the peer exits
        peer.close()
    from kmtl.bench.serve import machine_info
    from kmtl.bench.train import peak_rss_mib

    print(f"\nkmtl vs PyTorch recipe, {started}; kmtl peak RSS {peak_rss_mib():.0f} MiB, torch "
          f"{stats['peak_rss_mib']:.0f} MiB; torch {stats['torch']} ({stats['threads']} threads), "
          f"transformers {stats['transformers']}")
    if all(peaks.values()):  # Linux: /proc/<pid>/status (kmtl.bench.memory)
        print(f"peak anonymous memory (heap, tensors; sampled every 20 ms): kmtl {peaks['kmtl']['anon']:.0f} MiB, "
              f"torch {peaks['torch']['anon']:.0f} MiB; peak file-backed (shared libraries' pages): kmtl "
              f"{peaks['kmtl']['file']:.0f} MiB, torch {peaks['torch']['file']:.0f} MiB")
    print(format_rows(rows))
    if args.json:
        machine = machine_info()
        print(json.dumps({"date": started, "machine": machine, "torch": stats, "rows": rows,
                          "memory_mib": peaks, "settings": vars(args),
                          "note": f"ratios against PyTorch hold for this CPU ({machine.get('cpu_model')}) only; "
                                  "rows[].load: the 1-min load average at the start and end of each target"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
