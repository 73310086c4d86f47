"""Benchmark: does a masked-LM auxiliary loss help the four shared tasks? (issue 12)

Trains the multi-task model of ``configs/compare_four_tasks.yaml`` (SST-2, CoNLL-2003, STS-B,
AG News; 2,000 training examples each, 2 epochs, lr 5e-5, heads 1e-3) three times with the same
data, budget and seed — without MLM, and with a ``masked_lm`` task on WikiText-2 at λ = 0.1
and 0.5 — and writes the per-task Δ table against the run without it:

    .venv/bin/python benchmarks/mlm_aux.py                 # all three runs (about an hour on 2 cores)
    .venv/bin/python benchmarks/mlm_aux.py --weights 0.1   # without + λ 0.1 only

Weighting is ``static`` (not the compare recipe's ``uncertainty``, which sets every loss
weight itself and would ignore λ). The MLM task reads ``wikitext2/valid.txt`` (one paragraph a
line, 2,000 of them, as many as each task has) and is evaluated on the first 500 paragraphs of
``wikitext2/test.txt``. Runs go to ``runs/mlm_aux/`` (a finished run is reused, a crashed one
resumes); results to ``benchmarks/results/mlm-aux.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from functools import partial
from pathlib import Path

from result_store import measure, publish

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
METRICS = {"sst2": "accuracy", "conll": "entity_f1", "stsb": "pearson", "agnews": "accuracy"}


def variant_config(weight: float | None):
    """The compare config with static weighting, plus an MLM task of weight ``weight`` (None: none)."""
    import yaml

    from kmtl.config import config_from_dict

    data = yaml.safe_load((ROOT / "configs" / "compare_four_tasks.yaml").read_text())
    data["weighting"] = {"strategy": "static"}
    data["training"]["learning_rate"] = 5.0e-5  # what the committed table used (the config moved to 1e-4 after it)
    data["name"] = "no_mlm" if weight is None else f"mlm_{weight:g}".replace(".", "_")
    data["output_dir"] = str(ROOT / "runs" / "mlm_aux")
    if weight is not None:
        data["tasks"].append({
            "name": "mlm", "kind": "masked_lm", "weight": weight, "limit": 2000, "dev_limit": 500,
            "train": {"format": "text", "path": str(DATA / "wikitext2" / "valid.txt")},
            "dev": {"format": "text", "path": str(DATA / "wikitext2" / "test.txt")},
        })
    return config_from_dict(data, ROOT / "configs")


def run(weight: float | None) -> dict:
    import keras

    from kmtl.compare.run import machine
    from kmtl.training import train

    config = variant_config(weight)
    keras.backend.clear_session()
    result = train(config, verbose=2, export=False, echo=lambda line: print(f"[{config.name}] {line}", flush=True))
    row = {
        "variant": config.name, "mlm_weight": weight,
        "metrics": {task: result.metrics[task][metric] for task, metric in METRICS.items()},
        "train_seconds": round(result.seconds, 1),
        "date": datetime.date.today().isoformat(), "machine": machine(), "loadavg_after": os.getloadavg()[0],
    }
    if weight is not None:
        row["mlm"] = {k: result.metrics["mlm"][k] for k in ("accuracy", "perplexity") if k in result.metrics["mlm"]}
    return row


def table(rows: dict) -> str:
    base = rows["no_mlm"]["metrics"]
    lines = ["| run | " + " | ".join(f"{t} {m}" for t, m in METRICS.items()) + " | Δm vs no MLM | MLM dev acc / ppl | "
             "train s |", "|---|" + "---:|" * (len(METRICS) + 3)]
    for name, r in sorted(rows.items(), key=lambda kv: -1 if kv[1]["mlm_weight"] is None else kv[1]["mlm_weight"]):
        m = r["metrics"]
        cells = []
        for t in METRICS:
            delta = "" if name == "no_mlm" else f" ({100 * (m[t] - base[t]):+.2f})"
            cells.append(f"{m[t]:.4f}{delta}")
        rel = [(m[t] - base[t]) / abs(base[t]) for t in METRICS if base[t]]
        dm = "" if name == "no_mlm" else f"{100 * sum(rel) / len(rel):+.2f} %"
        mlm = r.get("mlm", {})
        mlm_cell = f"{mlm['accuracy']:.3f} / {mlm['perplexity']:.1f}" if mlm else ""
        label = "without MLM" if name == "no_mlm" else f"MLM λ = {r['mlm_weight']:g}"
        seconds = "—" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {dm} | {mlm_cell} | {seconds} |")
    notes = [f"- {('without MLM' if n == 'no_mlm' else 'λ = ' + format(r['mlm_weight'], 'g'))}: {r['note']}"
             for n, r in rows.items() if r.get("note")]
    machines = sorted({r["machine"] for r in rows.values()})
    lines.append("\n" + "\n".join(notes) if notes else "")
    lines.append(f"\nMeasured on: {', '.join(machines)} (`lscpu`: AMD EPYC); "
                 f"{', '.join(sorted({r['date'] for r in rows.values()}))}; 1-min load after each run: "
                 + ", ".join(f"{n} {r['loadavg_after']:.1f}" for n, r in rows.items()) + ".")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs="*", default=[0.1, 0.5], help="λ values to run")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        sys.exit("benchmarks/mlm_aux.py needs ../shared/data (SST-2, CoNLL-2003, STS-B, AG News, WikiText-2)")
    rows = measure("mlm-aux", {"no_mlm" if w is None else f"mlm_{w:g}".replace(".", "_"): partial(run, w)
                               for w in [None, *args.weights]})
    text = ("# Masked-LM auxiliary loss on four real tasks\n\n"
            "MiniLM-L6; `configs/compare_four_tasks.yaml` with static weighting (2,000 training examples per task, "
            "2 epochs, lr 5e-5, heads 1e-3, batch 32, max length 64, seed 0); MLM on WikiText-2 (valid.txt, "
            "2,000 paragraphs; dev: the first 500 of test.txt). Dev figures on the whole SST-2 / CoNLL / STS-B "
            "eval sets and the first 2,000 of AG News test; in brackets the Δ in points against the run "
            "without MLM. Machine, date and load of each run: `benchmarks/results/mlm-aux.json`.\n\n"
            "Reproduce: `.venv/bin/python benchmarks/mlm_aux.py`\n\n" + table(rows) + "\n")
    publish("mlm-aux", text)


if __name__ == "__main__":
    main()
