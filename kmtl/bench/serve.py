"""`kmtl bench serve`: latency and throughput of the SavedModel (raw text) and ONNX Runtime (ids).

Both exports come from the same model, written to a temporary folder:

* **SavedModel** — ``serving_default`` from raw strings: TF Text tokenizer, packer, encoder and
  heads all in the graph, loaded in-process with ``tf.saved_model.load`` after
  ``import tensorflow_text`` (what TF Serving runs, minus its RPC layer);
* **SavedModel ids** — the same SavedModel's ``ids`` signature (token ids → raw head outputs,
  the graph the ONNX file holds) when the export has it: the same model on the TF runtime,
  which separates the cost of tokenization and post-processing from the runtime's own speed;
* **SavedModel XLA** (``xla_max_batch`` > 0, ``--xla``) — a second export of the same model
  whose small batches run XLA-compiled (`kmtl.export.ServingGraph`), raw text as above;
* **ONNX Runtime** — the ids → outputs graph (`kmtl.export.export_onnx`) in an
  ``onnxruntime.InferenceSession`` with the default CPU provider.

For the two ids rows the texts are tokenized once with the model's preprocessor *outside* the
timed loop and trimmed to the batch's longest sequence, as the serving graph trims them.

Each figure is measured as follows: a few warm-up calls (excluded), then calls back to back for
``seconds``; this is repeated ``repeats`` times and the median over repeats is reported
(per-repeat values are kept in the JSON); a figure whose repeats are more than `SPREAD_WARN` apart
(fastest / slowest, its ``spread`` in the JSON) gets a warning under the table: the machine was
disturbed while it was measured, and a median of disturbed repeats misleads. Latency (p50/p99 of
single calls) is measured at batch 1; throughput (examples per second over the timed window) at
``batch_size``. Outputs are fetched to NumPy inside the timed call for both runtimes. The thread
settings, the shapes the encoder really sees (batch, sequence length in word pieces, and the real
pieces before padding), the machine and the date are recorded with the figures.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from kmtl.bench.spread import spread, spread_warning
from kmtl.errors import KmtlError

WARMUP_CALLS = 3
MIN_CALLS = 3
BENCH_NAME = "bench"

# Common English words (all single pieces in BERT's uncased vocabulary) for the test sentences.
WORDS = ("the new hotel near the old station was clean and quiet but the staff at the front desk "
         "seemed tired after a long night with loud guests from paris who work for a large company "
         "in london and said the food was good the rooms were small the price was fair and we would "
         "stay there again next year with our friends").split()


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def sentences(count: int, words: int) -> list:
    """``count`` different sentences of exactly ``words`` whitespace-separated words."""
    n = len(WORDS)
    return [" ".join(WORDS[(i * 7 + j) % n] for j in range(words)) for i in range(count)]


def machine_info() -> dict:
    """CPU count, platform, CPU model and load average (the machine may be shared)."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    with contextlib.suppress(AttributeError, OSError):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    from kmtl.bench.train import load_average

    info["load_average_1m_at_start"] = load_average()
    return info


THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def tf_threads() -> dict:
    """TensorFlow's thread settings as this process runs them: ``tf.config``'s intra-/inter-op
    figures (0: TensorFlow's default, one thread per logical CPU) and the environment variables
    that set them without ``tf.config`` (which then still reads 0), so a figure measured under
    ``TF_NUM_INTRAOP_THREADS=1`` says so.

    Example:
        >>> sorted(tf_threads())
        ['env', 'inter_op', 'intra_op', 'note']
    """
    import tensorflow as tf

    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "env": {name: os.environ[name] for name in THREAD_ENV if name in os.environ},
            "note": "0 = TensorFlow's default (one thread per logical CPU) unless env sets it"}


def _versions() -> dict:
    import keras
    import onnxruntime
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "onnxruntime": onnxruntime.__version__}


# (result key, runtime, input) of the table's rows, in order
ROWS = (("saved_model", "SavedModel", "raw text"), ("saved_model_xla", "SavedModel XLA", "raw text"),
        ("saved_model_ids", "SavedModel", "token ids"), ("onnxruntime", "ONNX Runtime", "token ids"))


def _percentile(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def time_calls(call: Callable[[], object], batch: int, seconds: float, repeats: int,
               warmup: int = WARMUP_CALLS) -> dict:
    """Warm up, then time ``call`` back to back for ``seconds``, ``repeats`` times.

    Returns the medians over repeats of p50/p99 call latency (ms) and of examples/s
    (``batch`` × calls / summed call time), the per-repeat figures, and ``spread``: the fastest
    repeat's examples/s over the slowest's (`format_table` warns above `SPREAD_WARN`).
    """
    for _ in range(warmup):
        call()
    runs = []
    for _ in range(repeats):
        times = []
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 - start >= seconds and len(times) >= MIN_CALLS:
                break
        runs.append({
            "calls": len(times),
            "p50_ms": _percentile(times, 50) * 1e3,
            "p99_ms": _percentile(times, 99) * 1e3,
            "examples_per_s": batch * len(times) / sum(times),
        })
    return {
        "batch": batch,
        "spread": spread([r["examples_per_s"] for r in runs]),  # > SPREAD_WARN: a disturbed figure
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "examples_per_s": statistics.median(r["examples_per_s"] for r in runs),
        "repeats": runs,
    }


def _build(backbone: Optional[str], run_dir, max_length: int, precision: str = "float32"):
    """(model, preprocessor, description): a finished run, or a fresh two-head model, built in
    ``precision`` (the SavedModel computes in it; the ONNX graph is always a float32 copy)."""
    from kmtl.model.precision import precision_scope

    if run_dir is not None:
        from kmtl.training import load_run

        with precision_scope(precision):
            model, pre, info = load_run(run_dir)
        return model, pre, {"source": f"run {Path(run_dir)}", "backbone": info.get("backbone")}
    from kmtl.backbone import load_backbone
    from kmtl.model import build_model
    from kmtl.tasks import Classification, Tagging, bio_labels

    with precision_scope(precision):
        encoder = load_backbone(backbone)
        tasks = [Classification("sentiment", ["negative", "positive"]),
                 Tagging("entities", bio_labels(["PER", "ORG", "LOC"]))]
        model = build_model(encoder, tasks)
    return model, encoder.preprocessor(max_length), {"source": "fresh model (untrained heads)", "backbone": backbone}


def _fetch(outputs: dict) -> dict:
    """TF outputs as NumPy (ONNX Runtime returns NumPy too, so both pay for the copy)."""
    return {k: v.numpy() for k, v in outputs.items()}


def _encode(pre, tasks, texts) -> dict:
    """Model inputs for ``texts`` as the serving graph makes them: packed, then trimmed to the
    batch's longest sequence (`kmtl.data.pipeline.trim_batch`); NumPy int32."""
    import numpy as np
    import tensorflow as tf

    from kmtl.data.pipeline import trim_batch

    enc = trim_batch(tasks, pre.encode_text(tf.constant(texts)))
    return {k: np.ascontiguousarray(enc[k].numpy()) for k in ("token_ids", "segment_ids", "padding_mask")}


def _measure(label, call_one, call_batch, feed_one, feed_batch, batch_size, seconds, repeats) -> dict:
    """Latency at batch 1 and throughput at ``batch_size``, with the shapes the encoder sees."""
    _say(f"{label}: latency, batch 1, {repeats} x {seconds:g} s")
    latency = time_calls(call_one, 1, seconds, repeats)
    _say(f"{label}: throughput, batch {batch_size}, {repeats} x {seconds:g} s")
    throughput = time_calls(call_batch, batch_size, seconds, repeats)
    for entry, fed in ((latency, feed_one), (throughput, feed_batch)):
        entry["length"] = int(fed["token_ids"].shape[1])
        entry["pieces"] = int(fed["padding_mask"].sum(axis=1).max())
    return {"latency": latency, "throughput": throughput}


def bench_serve(backbone: Optional[str] = None, run_dir=None, seq_words: int = 20, batch_size: int = 32,
                seconds: float = 10.0, repeats: int = 3, max_length: int = 128, precision: str = "float32",
                xla_max_batch: int = 0) -> dict:
    """Measure SavedModel (raw text, and ids) and ONNX Runtime (ids) serving; return the figures.

    Args:
        backbone: ``minilm-l6`` (default), ``tiny`` or a backbone folder; builds a fresh model
            with a sentence classification head and a tagging head. Excludes ``run_dir``.
        run_dir: a finished `kmtl train` run to load instead.
        seq_words: words in each test sentence.
        batch_size: batch of the throughput measurement.
        seconds: length of each timed window.
        repeats: timed windows per figure; the median is reported.
        max_length: the preprocessor's max length for a fresh model.
        precision: what the SavedModel computes in: ``float32`` (default: what ``kmtl train``
            and ``kmtl export`` write) or ``mixed_bfloat16`` (a model built under that policy,
            exported as is); the ONNX row is a float32 graph either way.
        xla_max_batch: > 0 adds a row for a SavedModel exported with ``xla_max_batch`` (its
            batch-1 latency runs XLA-compiled; a batch above it runs the plain graph).

    Example:
        >>> result = bench_serve("tiny", seconds=1, repeats=1)
        >>> result["onnxruntime"]["latency"]["p50_ms"] > 0
        True
    """
    if backbone is not None and run_dir is not None:
        raise KmtlError("give --backbone or --run, not both")
    for name, value, low in (("--seq-words", seq_words, 1), ("--batch-size", batch_size, 1),
                             ("--repeats", repeats, 1), ("--xla", xla_max_batch, 0)):
        if value < low:
            raise KmtlError(f"{name} must be at least {low}, got {value}")
    if not seconds > 0:
        raise KmtlError(f"--seconds must be positive, got {seconds}")
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise KmtlError("kmtl bench serve needs ONNX Runtime and tf2onnx: pip install onnxruntime tf2onnx") from err
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the TF Text ops of the serving graph)

    from kmtl.export import export_onnx, export_saved_model

    backbone = backbone if backbone is not None or run_dir is not None else "minilm-l6"
    machine = machine_info()
    started = datetime.datetime.now(datetime.timezone.utc)
    _say(f"building the model ({'run ' + str(run_dir) if run_dir else 'backbone ' + backbone})")
    if precision not in ("float32", "mixed_bfloat16"):
        raise KmtlError(f"--precision must be float32 or mixed_bfloat16, got {precision!r}")
    model, pre, source = _build(backbone, run_dir, max_length, precision)
    one = sentences(1, seq_words)
    batch = sentences(batch_size, seq_words)
    feed_one, feed_batch = _encode(pre, model.tasks, one), _encode(pre, model.tasks, batch)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine,
        "versions": _versions(),
        **source,
        "tasks": [t.name for t in model.tasks],
        "max_length": pre.max_length,
        "settings": {"seq_words": seq_words, "batch_size": batch_size, "seconds": seconds, "precision": precision,
                     "xla_max_batch": xla_max_batch, "repeats": repeats, "warmup_calls": WARMUP_CALLS,
                     "statistic": "median over repeats"},
        "example_sentence": one[0],
    }
    with tempfile.TemporaryDirectory(prefix="kmtl-bench-") as tmp:
        _say("exporting the SavedModel")
        t0 = time.perf_counter()
        saved = export_saved_model(model, pre, tmp, BENCH_NAME)
        saved_s = time.perf_counter() - t0
        _say("exporting the ONNX model")
        t0 = time.perf_counter()
        onnx_dir = export_onnx(model, Path(tmp) / "onnx", BENCH_NAME, max_length=pre.max_length)
        onnx_s = time.perf_counter() - t0

        # ---------------------------------------------------- SavedModel, raw text
        _say("loading the SavedModel")
        loaded = tf.saved_model.load(str(saved))
        serve = loaded.signatures["serving_default"]
        threads = tf_threads()
        text_one, text_batch = tf.constant(one), tf.constant(batch)
        result["saved_model"] = {
            "input": "raw text", "signature": "serving_default", "threads": threads, "export_seconds": saved_s,
            **_measure("SavedModel", lambda: _fetch(serve(text=text_one)),  # noqa: F821 (deleted after use)
                       lambda: _fetch(serve(text=text_batch)), feed_one, feed_batch, batch_size, seconds,  # noqa: F821
                       repeats)}

        # ------------------------------------------- SavedModel, token ids (same graph as ONNX)
        if "ids" in loaded.signatures:
            ids = loaded.signatures["ids"]
            tf_one = {k: tf.constant(v) for k, v in feed_one.items()}
            tf_batch = {k: tf.constant(v) for k, v in feed_batch.items()}
            result["saved_model_ids"] = {
                "input": "token ids (tokenized outside the timed loop)", "signature": "ids", "threads": threads,
                **_measure("SavedModel ids", lambda: _fetch(ids(**tf_one)), lambda: _fetch(ids(**tf_batch)),
                           feed_one, feed_batch, batch_size, seconds, repeats)}
        del serve, loaded

        # ------------------------------------------- SavedModel, raw text, small batches through XLA
        if xla_max_batch:
            _say(f"exporting and loading the SavedModel with XLA up to batch {xla_max_batch}")
            t0 = time.perf_counter()
            saved_xla = export_saved_model(model, pre, Path(tmp) / "xla", BENCH_NAME, xla_max_batch=xla_max_batch)
            xla_s = time.perf_counter() - t0
            serve_xla = tf.saved_model.load(str(saved_xla)).signatures["serving_default"]
            result["saved_model_xla"] = {
                "input": "raw text", "signature": "serving_default", "threads": threads, "export_seconds": xla_s,
                "xla_max_batch": xla_max_batch,
                **_measure("SavedModel XLA", lambda: _fetch(serve_xla(text=text_one)),
                           lambda: _fetch(serve_xla(text=text_batch)), feed_one, feed_batch, batch_size, seconds,
                           repeats)}
            del serve_xla

        # ---------------------------------------------------- ONNX Runtime, token ids
        _say("loading the ONNX model")
        session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        ort_one = {k: feed_one[k] for k in names}
        ort_batch = {k: feed_batch[k] for k in names}
        options = session.get_session_options()
        ort_threads = {"intra_op": options.intra_op_num_threads, "inter_op": options.inter_op_num_threads,
                       "providers": session.get_providers(),
                       "note": "0 = ONNX Runtime's default (intra-op: one thread per physical core)"}
        result["onnxruntime"] = {
            "input": "token ids (tokenized outside the timed loop)", "threads": ort_threads, "export_seconds": onnx_s,
            **_measure("ONNX Runtime", lambda: session.run(None, ort_one), lambda: session.run(None, ort_batch),
                       feed_one, feed_batch, batch_size, seconds, repeats)}
    from kmtl.bench.train import load_average

    result["machine"]["load_average_1m_at_end"] = load_average()
    result["seconds_total"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return result


def disturbed(result: dict) -> list:
    """`kmtl.bench.spread.spread_warning`'s lines for the figures whose repeats disagree, empty when
    every figure is steady.

    Example:
        >>> disturbed({"onnxruntime": {"throughput": {"batch": 32, "repeats": [
        ...     {"examples_per_s": 222.7}, {"examples_per_s": 211.0}, {"examples_per_s": 433.3}]}}})[0][:44]
        'warning: ONNX Runtime token ids, batch 32: r'
    """
    found = (spread_warning(f"{label} {source}, batch {m['batch']}", [r["examples_per_s"] for r in m["repeats"]],
                            "examples/s")
             for key, label, source in ROWS for m in (result.get(key, {}).get(measure)
                                                     for measure in ("latency", "throughput")) if m)
    return [line for line in found if line]


def format_table(result: dict) -> str:
    """The figures as a plain-text table with the conditions under it (and `disturbed`'s warnings)."""
    header = f"{'runtime':<14} {'input':<10} {'batch':>5} {'length (pieces)':>16} {'p50 ms':>9} {'p99 ms':>9} {'examples/s':>11}"
    lines = [f"kmtl bench serve: {result['source']}, backbone {result['backbone']}, tasks "
             f"{', '.join(result['tasks'])}; {result['settings']['seq_words']}-word sentences; SavedModel in "
             f"{result['settings'].get('precision', 'float32')}", header,
             "-" * len(header)]
    for key, label, source in ROWS:
        if key not in result:
            continue
        for measure in ("latency", "throughput"):
            m = result[key][measure]
            lines.append(f"{label:<14} {source:<10} {m['batch']:>5} {str(m['length']) + ' (' + str(m['pieces']) + ')':>16} "
                         f"{m['p50_ms']:>9.2f} {m['p99_ms']:>9.2f} {m['examples_per_s']:>11.1f}")
    s, machine = result["settings"], result["machine"]
    tf_t, ort_t = result["saved_model"]["threads"], result["onnxruntime"]["threads"]
    lines += [
        f"median of {s['repeats']} repeats x {s['seconds']:g} s each, {s['warmup_calls']} warm-up calls excluded; "
        "length = sequence length the encoder runs on, pieces = longest real input incl. [CLS]/[SEP]",
        f"threads: TensorFlow intra {tf_t['intra_op']} / inter {tf_t['inter_op']} (0 = default"
        + "".join(f"; {k}={v}" for k, v in tf_t.get("env", {}).items()) + "), "
        f"ONNX Runtime intra {ort_t['intra_op']} / inter {ort_t['inter_op']} (0 = default), {', '.join(ort_t['providers'])}",
        f"machine: {machine.get('cpu_model', machine['machine'])}, {machine['cpu_count']} CPUs "
        f"(load {machine.get('load_average_1m_at_start', '?')} at start), {machine['platform']}; {result['date']}",
        *disturbed(result),
    ]
    return "\n".join(lines)
