"""Benchmark: why is kmtl's STS-B single-task baseline under the PyTorch recipe's? (issue 17, item 3)

The baseline of ``configs/compare_four_tasks.yaml`` cut to STS-B (`kmtl.compare.baselines.baseline_config`:
2,000 training pairs, 2 epochs, batch 32, max length 64, encoder 5e-5, heads 1e-3, seed 0; dev:
the whole ``stsb/dev.tsv``, 1,500 pairs) is trained once per lever, each lever changing one
thing against the first row, and its dev Pearson is printed and stored:

    .venv/bin/python benchmarks/stsb_levers.py                     # every lever (about 3 min each on 2 cores)
    .venv/bin/python benchmarks/stsb_levers.py --only base no_clip

Results: ``benchmarks/results/stsb-levers.json`` and ``.md`` (a lever already measured is
skipped; ``--again`` measures it anew). Runs go to ``runs/stsb_levers/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

from result_store import measure, publish

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"

LEVERS = {
    "base": ("the compare recipe's baseline (heads 1e-3, regression bias at the mean score)", {}),
    "no_clip": ("no gradient clipping (clipnorm: null)", {"training": {"clipnorm": None}}),
    "cls": ("[CLS] pooling instead of the mean over tokens", {"pooling": "cls"}),
    "lr_1e-4": ("encoder learning rate 1e-4", {"training": {"learning_rate": 1.0e-4}}),
    "head_5e-5": ("head at the encoder's 5e-5 (the PyTorch recipe's single rate)", {"training": {"head_learning_rate": 5.0e-5}}),
    "no_dropout": ("no dropout before the head", {"task": {"dropout": 0.0}}),
    "scaled": ("targets scaled to [0, 1] (score / 5; Pearson does not change with the scale)", {"scale": 0.2}),
    "epochs_4": ("4 epochs instead of 2 (budget, not a lever: is the baseline under-trained?)", {"training": {"epochs": 4}}),
    # last: it patches the head's class for the rest of the process
    "torch_init": ("the head's kernel initialised as torch.nn.Linear (uniform ±1/√fan_in) instead of Glorot", {"init": True}),
}


def _scaled_copy(task, factor: float, folder: Path):
    """The task with train/dev TSVs whose score column is multiplied by ``factor``."""
    import csv

    update = {}
    for split in ("train", "dev"):
        source = getattr(task, split)
        rows = list(csv.DictReader(open(source.path, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
        out = folder / f"{split}.tsv"
        with open(out, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", quoting=csv.QUOTE_NONE,
                                    escapechar="\\")
            writer.writeheader()
            for row in rows:
                row["score"] = f"{float(row['score']) * factor:.6f}"
                writer.writerow(row)
        update[split] = source.model_copy(update={"path": out})
    return task.model_copy(update=update)


def lever_config(name: str, folder: Path):
    from kmtl.compare.baselines import baseline_config
    from kmtl.config import load_config

    config = baseline_config(load_config(ROOT / "configs" / "compare_four_tasks.yaml"), "stsb",
                             output_dir=ROOT / "runs" / "stsb_levers", name=name)
    change = LEVERS[name][1]
    # the committed table's base: the encoder at 5e-5 (the compare config moved to 1e-4 after it)
    update = {"training": config.training.model_copy(update={"learning_rate": 5.0e-5, **change.get("training", {})})}
    if "pooling" in change:
        update["pooling"] = change["pooling"]
    task = config.tasks[0]
    if "task" in change:
        task = task.model_copy(update=change["task"])
    if "scale" in change:
        task = _scaled_copy(task, change["scale"], folder)
    update["tasks"] = (task,)
    return config.model_copy(update=update)


def torch_like_head_init():
    """Patch the regression head's kernel initializer to torch.nn.Linear's default (for one lever)."""
    import keras

    from kmtl.tasks import regression

    def build_head(self, features):
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(features["pooled"])
        fan_in = int(x.shape[-1])
        limit = 1.0 / fan_in ** 0.5
        return keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomUniform(-limit, limit),
                                  bias_initializer=keras.initializers.Constant(self.initial_bias), name=self.name)(x)

    regression.Regression.build_head = build_head


def run(name: str) -> dict:
    import keras

    from kmtl.compare.run import machine
    from kmtl.training import train

    with tempfile.TemporaryDirectory() as folder:
        config = lever_config(name, Path(folder))
        if LEVERS[name][1].get("init"):
            torch_like_head_init()
        keras.backend.clear_session()
        result = train(config, verbose=0, export=False, rerun="overwrite", echo=lambda line: None)
    metrics = result.metrics["stsb"]
    row = {"lever": name, "what": LEVERS[name][0], "pearson": metrics["pearson"], "spearman": metrics["spearman"],
           "mse": metrics["mse"] * (25.0 if name == "scaled" else 1.0),  # in the original score units
           "train_seconds": round(result.seconds, 1), "date": datetime.date.today().isoformat(),
           "machine": machine(), "loadavg_after": round(os.getloadavg()[0], 2)}
    print(json.dumps(row), flush=True)
    return row


def table(rows: dict) -> str:
    base = rows.get("base", {}).get("pearson")
    lines = ["| lever | what changes | dev Pearson | Δ (points) | dev MSE | train s | 1-min load after |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in LEVERS:
        if name not in rows:
            continue
        r = rows[name]
        delta = "" if base is None or name == "base" else f"{100 * (r['pearson'] - base):+.2f}"
        lines.append(f"| {name} | {r['what']} | {r['pearson']:.4f} | {delta} | {r['mse']:.3f} | {r['train_seconds']:.0f} "
                     f"| {r['loadavg_after']} |")
    machines = sorted({r["machine"] for r in rows.values()})
    dates = sorted({r["date"] for r in rows.values()})
    lines.append(f"\nMeasured on: {', '.join(machines)}; {', '.join(dates)}.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(LEVERS), help="levers to run (default: all)")
    parser.add_argument("--again", action="store_true", help="measure levers already in the results again")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        sys.exit("benchmarks/stsb_levers.py needs ../shared/data (STS-B)")
    rows = measure("stsb-levers", {name: partial(run, name) for name in args.only or list(LEVERS)}, again=args.again)
    text = ("# STS-B single-task baseline: one lever at a time\n\n"
            "The STS-B baseline of `configs/compare_four_tasks.yaml` (MiniLM-L6, 2,000 training pairs, 2 epochs, "
            "batch 32, max length 64, encoder 5e-5, heads 1e-3, regression bias at the mean score, seed 0), dev "
            "`stsb/dev.tsv` (1,500 pairs); each row changes one thing against `base`. The PyTorch recipe's "
            "single-task figure on this budget (the issue's): Pearson 0.786.\n\n"
            "Reproduce: `.venv/bin/python benchmarks/stsb_levers.py`\n\n" + table(rows) + "\n")
    publish("stsb-levers", text)


if __name__ == "__main__":
    main()
