"""Benchmark: adding a task to a trained model — progressive networks vs plain add-a-task (issue 13).

1. ``base``: SST-2 + CoNLL-2003, MiniLM-L6, sharing ``full`` (``--limit`` training examples per
   task, 2 epochs, lr 1e-4, batch 32, max length 64).
2. ``plain``: ``init_from`` the base run, WNUT-17 added, everything trains (sharing ``full``,
   lr 1e-4): the usual add-a-task.
3. ``progressive``: ``init_from`` the base run, WNUT-17 added with a column (``sharing:
   progressive, progressive_tasks: [wnut]``, width 64, lr 1e-3 as for the other modes that
   freeze the encoder): the old tasks cannot move. Only WNUT-17 is in its training mixture
   (the old tasks have nothing to train), so 2 epochs are a third of ``plain``'s steps;
4. ``progressive_6ep``: the same for 6 epochs, about ``plain``'s number of optimizer steps.

Reported: WNUT-17's entity F1 (first ``--limit`` sentences of wnut17/test.conll), the old tasks'
scores before and after (the runs' retention.json), parameters trained, training time:

    .venv/bin/python benchmarks/add_task.py              # about 20 minutes on 2 cores
    .venv/bin/python benchmarks/add_task.py --limit 1000

Runs go to ``runs/add_task/`` (finished runs are reused); results to
``benchmarks/results/add-task.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from functools import partial
from pathlib import Path

from result_store import measure, publish

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"


def config(variant: str, limit: int):
    from kmtl.config import config_from_dict

    tasks = [
        {"name": "sst2", "kind": "classification", "labels": ["0", "1"], "limit": limit,
         "train": {"format": "tsv", "path": str(DATA / "sst2/train.tsv"), "text": "sentence", "label": "label"},
         "dev": {"format": "tsv", "path": str(DATA / "sst2/test.tsv"), "text": "sentence", "label": "label"}},
        {"name": "conll", "kind": "tagging", "limit": limit, "tag_scheme": "bio",
         "train": {"format": "conll", "path": str(DATA / "conll2003/train.txt")},
         "dev": {"format": "conll", "path": str(DATA / "conll2003/test.txt")}},
    ]
    data = {"name": f"{variant}_{limit}", "backbone": "minilm-l6", "max_length": 64, "tasks": tasks,
            "mixture": {"sampling": "proportional", "batch_size": 32},
            "training": {"epochs": 2, "learning_rate": 1e-4, "warmup_ratio": 0.1},
            # pinned to what the committed results were measured with (the defaults moved since)
            "weighting": {"strategy": "static"},
            "output_dir": str(ROOT / "runs" / "add_task"), "export": {"enabled": False}}
    if variant != "base":
        tasks.append({"name": "wnut", "kind": "tagging", "limit": limit, "tag_scheme": "bio",
                      "train": {"format": "conll", "path": str(DATA / "wnut17/train.conll")},
                      "dev": {"format": "conll", "path": str(DATA / "wnut17/test.conll")}})
        data["init_from"] = str(ROOT / "runs" / "add_task" / f"base_{limit}")
    if variant.startswith("progressive"):
        data["sharing"] = {"mode": "progressive", "progressive_tasks": ["wnut"], "column_size": 64}
        data["training"]["learning_rate"] = 1e-3
    if variant == "progressive_6ep":
        data["training"]["epochs"] = 6
    data["training"]["head_learning_rate"] = data["training"]["learning_rate"]
    return config_from_dict(data, ROOT)


def run(variant: str, limit: int) -> dict:
    import keras

    from kmtl.compare.run import machine
    from kmtl.training import train

    cfg = config(variant, limit)
    keras.backend.clear_session()
    result = train(cfg, verbose=2, export=False, echo=lambda line: print(f"[{variant}] {line}", flush=True))
    model = result.model
    row = {"variant": variant, "limit": limit,
           "metrics": {t: {k: v for k, v in m.items() if isinstance(v, (int, float))}
                       for t, m in result.metrics.items()},
           "train_seconds": round(result.seconds, 1),
           "trainable_params": sum(int(keras.ops.size(w)) for w in model.trainable_weights),
           "date": datetime.date.today().isoformat(), "machine": machine(), "loadavg_after": os.getloadavg()[0]}
    retention = cfg.run_dir / "retention.json"
    if retention.exists():
        row["retention"] = json.loads(retention.read_text())
    return row


def table(rows: dict, limit: int) -> str:
    base = rows[f"base@{limit}"]["metrics"]
    lines = ["| run | lr | epochs | WNUT-17 entity F1 | SST-2 acc (Δ vs base) | CoNLL F1 (Δ vs base) | "
             "trainable params | train s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for variant, lr, epochs in (("base", 1e-4, 2), ("plain", 1e-4, 2), ("progressive", 1e-3, 2),
                                ("progressive_6ep", 1e-3, 6)):
        r = rows.get(f"{variant}@{limit}")
        if r is None:
            continue
        m = r["metrics"]
        wnut = f"{m['wnut']['entity_f1']:.4f}" if "wnut" in m else "–"
        old = []
        for task, metric in (("sst2", "accuracy"), ("conll", "entity_f1")):
            delta = "" if variant == "base" else f" ({100 * (m[task][metric] - base[task][metric]):+.2f})"
            old.append(f"{m[task][metric]:.4f}{delta}")
        lines.append(f"| {variant} | {lr:g} | {epochs} | {wnut} | {old[0]} | {old[1]} | {r['trainable_params']:,} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def measured_on(rows: dict) -> str:
    """Where and under what load each row was measured (a time holds for that CPU and load only)."""
    return "Measured on: " + "; ".join(f"{k.split('@')[0]} {r['date']}, {r['machine']}, 1-min load "
                                       f"{r['loadavg_after']:.1f}" for k, r in rows.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=500, help="training and eval examples per task")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        sys.exit("benchmarks/add_task.py needs ../shared/data (SST-2, CoNLL-2003, WNUT-17)")
    rows = measure("add-task", {f"{variant}@{args.limit}": partial(run, variant, args.limit)
                                for variant in ("base", "plain", "progressive", "progressive_6ep")})
    text = ("# Adding a task: progressive networks vs plain add-a-task\n\n"
            f"MiniLM-L6; base: SST-2 + CoNLL-2003 ({args.limit} training examples each, sharing full, 2 epochs, "
            "lr 1e-4, batch 32, max length 64, seed 0); then WNUT-17 added from the base run (`init_from`): "
            "`plain` trains everything (sharing full), `progressive` one column of width 64 for WNUT-17 "
            "(encoder and old heads frozen; only WNUT-17 batches, so 2 epochs are a third of plain's steps and "
            "6 epochs about as many). Eval: the first "
            f"{args.limit} of sst2/test.tsv, conll2003/test.txt, wnut17/test.conll. Machine, date and load of each "
            "run: `benchmarks/results/add-task.json`.\n\n"
            f"Reproduce: `.venv/bin/python benchmarks/add_task.py --limit {args.limit}`\n\n"
            + table(rows, args.limit) + "\n\n" + measured_on(rows) + "\n")
    publish("add-task", text)


if __name__ == "__main__":
    main()
