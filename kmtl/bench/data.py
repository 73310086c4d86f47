"""`kmtl bench data`: throughput of the input pipeline alone (read, tokenize, mix, pad).

The pipeline is the one `kmtl train` feeds to ``model.fit``: `kmtl.data.mixture` over the
four-task real-data mixture of `kmtl.bench.realdata`, with tokenization inside `tf.data`.
It tokenizes every example once and caches the result, so three figures are reported:

* **read** — examples/s of reading the files into `Example`s (Python, once per run);
* **tokenize** — examples/s of the first pass: from a fresh pipeline to its first batch,
  every example of every task is tokenized, encoded and cached (once per run);
* **steady** — examples/s of batches once the cache is warm: sampling the task of each
  example, shuffling, batching and padding (each training step pays this), median over
  ``repeats`` windows of ``steps`` batches, the batches converted to NumPy as `fit` would.

Given the training step's consumption (``train_examples_per_sec``, e.g. from `kmtl bench
train`), the ratios pipeline / training are reported too: ≥ 10 means the pipeline cannot be
what limits training.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from typing import Optional

from kmtl.bench.train import PADDINGS, load_average, peak_rss_mib
from kmtl.errors import KmtlError


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def bench_data(backbone: str = "minilm-l6", batch_size: int = 32, seq_len: int = 128, steps: int = 200,
               repeats: int = 3, padding: str = "grouped", data_dir=None, limit: Optional[int] = None,
               train_examples_per_sec: Optional[float] = None, seed: int = 0) -> dict:
    """Measure the input pipeline on the real-data mixture; return the figures.

    Args:
        backbone: whose tokenizer to use (``minilm-l6``, ``tiny`` or a folder).
        batch_size: examples per batch.
        seq_len: max length in word pieces.
        steps: batches per timed window (steady state).
        repeats: timed windows; the median is reported.
        padding: ``longest``, ``buckets`` or ``grouped`` (see `kmtl.data.buckets`).
        data_dir: the shared data folder (default ``../shared/data``).
        limit: examples per task file (default 2000; ``0``: whole files).
        train_examples_per_sec: the training step's consumption to compare with.
        seed: sampling and shuffling seed.

    Example:
        >>> r = bench_data("tiny", steps=20, repeats=1, data_dir="../shared/data", limit=200)
        >>> r["steady_examples_per_sec"] > 0
        True
    """
    problems = [f"{name} must be at least 1, got {value}" for name, value in
                (("--batch-size", batch_size), ("--steps", steps), ("--repeats", repeats)) if value < 1]
    if seq_len < 4:
        problems.append(f"--seq-len must be at least 4, got {seq_len}")
    if padding not in PADDINGS:
        problems.append(f"--padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if train_examples_per_sec is not None and not train_examples_per_sec > 0:
        problems.append(f"--train-examples-per-sec must be positive, got {train_examples_per_sec}")
    if limit is not None and limit < 0:
        problems.append(f"--limit must be 0 (whole files) or more, got {limit}")
    if problems:
        raise KmtlError("; ".join(problems))
    from kmtl.bench.realdata import check_data_dir

    check_data_dir(data_dir)
    from kmtl.backbone import load_backbone
    from kmtl.bench.realdata import DEFAULT_LIMIT, real_tasks_and_examples
    from kmtl.bench.serve import machine_info
    from kmtl.data import mixture
    from kmtl.data.buckets import default_boundaries

    limit = DEFAULT_LIMIT if limit is None else (limit or None)
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info()
    load_start = load_average()
    tasks, examples, read_seconds = real_tasks_and_examples(data_dir, limit)
    total_examples = sum(len(v) for v in examples.values())
    encoder = load_backbone(backbone, seed=seed)
    pre = encoder.preprocessor(seq_len)
    buckets = default_boundaries(seq_len) if padding != "longest" else None
    ds = mixture(tasks, examples, pre, batch_size=batch_size, sampling="proportional",
                 steps_per_epoch=1 + steps * repeats, seed=seed, length_buckets=buckets,
                 group_by_length=padding == "grouped")

    _say(f"first pass: tokenizing {total_examples} examples of {len(tasks)} tasks")
    t0 = time.perf_counter()
    iterator = ds.as_numpy_iterator()
    next(iterator)
    first_seconds = time.perf_counter() - t0
    windows = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        examples_seen = real = padded = 0
        for _ in range(steps):
            x, _, _ = next(iterator)
            examples_seen += x["token_ids"].shape[0]
            padded += x["token_ids"].size
            real += int(x["padding_mask"].sum())
        seconds = time.perf_counter() - t0
        windows.append({"seconds": seconds, "examples_per_sec": examples_seen / seconds,
                        "tokens_per_sec": real / seconds, "mean_padded_length": padded / examples_seen,
                        "mean_real_length": real / examples_seen})
    steady = statistics.median(w["examples_per_sec"] for w in windows)
    result = {
        "benchmark": "data",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_1m": {"start": load_start, "end": load_average()},
        "settings": {"backbone": backbone, "batch_size": batch_size, "seq_len": seq_len, "steps": steps,
                     "repeats": repeats, "padding": padding, "limit_per_task": limit, "seed": seed,
                     "tasks": {t.name: len(examples[t.name]) for t in tasks}, "statistic": "median over repeats"},
        "read_examples_per_sec": total_examples / read_seconds,
        "tokenize_examples_per_sec": total_examples / first_seconds,
        "steady_examples_per_sec": steady,
        "examples_per_sec": steady,
        "tokens_per_sec": statistics.median(w["tokens_per_sec"] for w in windows),
        "mean_padded_length": statistics.median(w["mean_padded_length"] for w in windows),
        "mean_real_length": statistics.median(w["mean_real_length"] for w in windows),
        "read_seconds": read_seconds,
        "first_pass_seconds": first_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "repeats": windows,
    }
    if train_examples_per_sec is not None:
        result["train_examples_per_sec"] = train_examples_per_sec
        result["ratio_steady_to_train"] = steady / train_examples_per_sec
        result["ratio_tokenize_to_train"] = result["tokenize_examples_per_sec"] / train_examples_per_sec
    return result


def format_table(result: dict) -> str:
    """The figures as a few human-readable lines."""
    s = result["settings"]
    lines = [
        f"kmtl bench data: {', '.join(f'{k} {v}' for k, v in s['tasks'].items())} examples; batch {s['batch_size']}, "
        f"max length {s['seq_len']}, padding {s['padding']} (mean padded length {result['mean_padded_length']:.1f}, "
        f"real {result['mean_real_length']:.1f})",
        f"  read files        {result['read_examples_per_sec']:12.0f} examples/s  (once per run)",
        f"  tokenize (cold)   {result['tokenize_examples_per_sec']:12.0f} examples/s  (first pass, once per run)",
        f"  steady (mix, pad) {result['steady_examples_per_sec']:12.0f} examples/s  (each step)",
    ]
    if "train_examples_per_sec" in result:
        lines.append(f"  vs training {result['train_examples_per_sec']:.1f} examples/s: steady x"
                     f"{result['ratio_steady_to_train']:.0f}, tokenize x{result['ratio_tokenize_to_train']:.0f}")
    lines.append(f"median of {s['repeats']} x {s['steps']} batches; load {result['load_average_1m']['start']} -> "
                 f"{result['load_average_1m']['end']}; {result['date']}")
    return "\n".join(lines)
