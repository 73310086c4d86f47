"""Benchmark: every weighting strategy and sharing mode on four real tasks (issue 4).

Trains the MiniLM multi-task model of ``benchmarks/four_tasks.yaml`` (SST-2, CoNLL-2003,
STS-B, AG News from ../shared/data) once per variant with the same data, budget and seed,
and writes a table of per-task eval metrics, training time and trainable parameters:

    .venv/bin/python benchmarks/weighting.py --limit 500 --epochs 2
    .venv/bin/python benchmarks/weighting.py --only pcgrad gradnorm   # some variants
    .venv/bin/python benchmarks/weighting.py --only frozen lora adapters --learning-rate 1e-3

Results accumulate in ``benchmarks/results/weighting.json`` (a variant already there with
the same budget is not re-run; ``--force`` re-runs) and the table is rewritten to
``benchmarks/results/weighting.md``. Each run takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# variant name -> (weighting section, sharing section)
VARIANTS = {
    "static": ({"strategy": "static"}, {"mode": "full"}),
    "dwa": ({"strategy": "dwa", "window_steps": 20}, {"mode": "full"}),
    "uncertainty": ({"strategy": "uncertainty"}, {"mode": "full"}),
    "gradnorm": ({"strategy": "gradnorm"}, {"mode": "full"}),
    "pcgrad": ({"strategy": "pcgrad"}, {"mode": "full"}),
    "rlw": ({"strategy": "rlw"}, {"mode": "full"}),
    "frozen": ({"strategy": "static"}, {"mode": "frozen"}),
    "lora": ({"strategy": "static"}, {"mode": "lora"}),
    "adapters": ({"strategy": "static"}, {"mode": "adapters"}),
    # issue 13's modes, each at its defaults except where named
    "soft": ({"strategy": "static"}, {"mode": "soft", "soft_top_layers": 2}),
    "soft_relation": ({"strategy": "static"}, {"mode": "soft", "soft_top_layers": 2, "task_relation": "learned"}),
    "adapters_relation": ({"strategy": "static"}, {"mode": "adapters", "task_relation": "learned"}),
    "scalar_mix": ({"strategy": "static"}, {"mode": "scalar_mix"}),
    "mmoe": ({"strategy": "static"}, {"mode": "mmoe"}),
    "prefix": ({"strategy": "static"}, {"mode": "prefix"}),
    "progressive": ({"strategy": "static"}, {"mode": "progressive"}),
}
METRICS = {"sst2": "accuracy", "conll": "entity_f1", "stsb": "pearson", "agnews": "accuracy"}


def run_variant(name: str, limit: int, epochs: int, learning_rate: float) -> dict:
    import keras
    import yaml

    from kmtl.compare.run import machine
    from kmtl.config import config_from_dict
    from kmtl.sharing import served_model
    from kmtl.training import train

    data = yaml.safe_load((HERE / "four_tasks.yaml").read_text())
    weighting, sharing = VARIANTS[name]
    data["name"] = f"bench_{name}"
    data["weighting"], data["sharing"] = weighting, sharing
    data["training"]["epochs"] = epochs
    data["training"]["learning_rate"] = learning_rate
    data["training"]["head_learning_rate"] = learning_rate  # one rate, as the committed rows were measured
    for task in data["tasks"]:
        task["limit"] = limit
    config = config_from_dict(data, HERE)
    keras.backend.clear_session()
    result = train(config, verbose=2, export=False, echo=lambda line: print(f"[{name}] {line}", flush=True))
    model = result.model
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    return {
        "variant": name,
        "weighting": weighting,
        "sharing": sharing,
        "limit": limit,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "metrics": {task: result.metrics[task][metric] for task, metric in METRICS.items()},
        "train_seconds": round(result.seconds, 1),
        "trainable_params": trainable,
        "total_params": model.count_params(),
        "served_params": served_model(model).count_params(),  # prefix: the MLP folded away
        "final_loss_weights": model.loss_weights_now,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "loadavg_after": os.getloadavg()[0],
    }


def table(rows) -> str:
    head = ("| variant | weighting | sharing | lr | SST-2 acc | CoNLL F1 | STS-B Pearson | AG News acc | mean | "
            "train s | trainable params | served params |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        m = r["metrics"]
        mean = sum(m.values()) / len(m)
        w = r["weighting"]["strategy"] + "".join(f" {k}={v}" for k, v in r["weighting"].items() if k != "strategy")
        s = r["sharing"]["mode"] + "".join(f" {k}={v}" for k, v in r["sharing"].items() if k != "mode")
        lines.append(f"| {r['variant']} | {w} | {s} | {r.get('learning_rate', 1e-4):g} | "
                     f"{m['sst2']:.3f} | {m['conll']:.3f} | "
                     f"{m['stsb']:.3f} | {m['agnews']:.3f} | {mean:.3f} | {r['train_seconds']:.0f} | "
                     f"{r['trainable_params']:,} | {r.get('served_params', r['total_params']):,} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=500, help="train and eval examples per task")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--force", action="store_true", help="re-run variants already in the results")
    args = parser.parse_args(argv)
    if not (HERE.parent.parent / "shared" / "data").is_dir():
        sys.exit("benchmarks/weighting.py needs ../shared/data (SST-2, CoNLL-2003, STS-B, AG News)")

    RESULTS.mkdir(exist_ok=True)
    store = RESULTS / "weighting.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    for name in args.only or list(VARIANTS):
        key = f"{name}@{args.limit}x{args.epochs}" + ("" if args.learning_rate == 1e-4 else f"@lr{args.learning_rate:g}")
        if key in results and not args.force:
            print(f"[{name}] already measured ({key}); --force re-runs it")
            continue
        start = time.perf_counter()
        results[key] = run_variant(name, args.limit, args.epochs, args.learning_rate)
        print(f"[{name}] done in {time.perf_counter() - start:.0f} s: {results[key]['metrics']}", flush=True)
        store.write_text(json.dumps(results, indent=2) + "\n")

    rows = [r for r in results.values() if r["limit"] == args.limit and r["epochs"] == args.epochs]
    rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r.get("learning_rate", 1e-4)))
    text = (f"# Weighting and sharing on four real tasks\n\n"
            f"MiniLM-L6 (offline package), {args.limit} train examples per task (eval: the first {args.limit} of "
            f"sst2/test.tsv, conll2003/test.txt, stsb/dev.tsv, ag_news/test.tsv), {args.epochs} epochs, "
            f"max length 64, batch 32, seed 0, learning rate per row (default 1e-4). "
            f"Machine of each row: the `machine`, `date` and `loadavg_after` fields in weighting.json "
            f"(rows of 2026-11-23 did not record the CPU model: x86_64, 2 cores).\n\n"
            f"Reproduce: `.venv/bin/python benchmarks/weighting.py --limit {args.limit} --epochs {args.epochs}` "
            f"(and `--only frozen lora adapters adapters_relation prefix progressive --learning-rate 1e-3` "
            f"for the rows at lr 0.001)\n\n"
            + table(rows) + "\n\nMeasured on: " + "; ".join(
                f"{r['variant']} (lr {r.get('learning_rate', 1e-4):g}) {r['date']}, {r.get('machine', 'CPU not recorded')}"
                f", 1-min load {r['loadavg_after']:.1f}" for r in rows if "loadavg_after" in r) + "\n")
    (RESULTS / "weighting.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
