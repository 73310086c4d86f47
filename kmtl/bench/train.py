"""`kmtl bench train`: training throughput of the real kmtl model with `model.fit`.

What is timed: `kmtl.build_model` (shared encoder, one head per task) compiled with
`kmtl.training.make_optimizer` (AdamW, warm-up/decay, clipnorm 1.0) and trained by
``model.fit`` on a `tf.data` dataset, exactly as `kmtl train` does. Two kinds of input:

* ``fixed`` — batches of ``batch_size × seq_len`` random word pieces, no padding, half the
  batch owned by a sentence classification head (2 classes) and half by a token tagging head
  (9 BIO tags): the shapes of the issue's target, independent of any data set;
* ``real`` — the four-task mixture of `kmtl.bench.realdata` (SST-2, CoNLL-2003, STS-B, AG
  News) through `kmtl.data.mixture` with live tokenization, mixing and per-batch padding
  (``padding``: to the longest sequence as the trainer does, to fixed length buckets, or
  grouped by length), truncated to ``seq_len`` word pieces.

Method: one ``fit`` of ``warmup + repeats × steps`` steps; a `StepClock` times each window
of ``steps`` steps after the warm-up; the median window is reported (all are kept). With XLA
and real data, one batch of each padded length of the timed windows is trained on first, so
that compilation is excluded as a warm-up (the number of shapes is reported). FLOPs follow
`kmtl.bench.flops`; the matmul peak is measured by `kmtl.bench.peak` in the same process.
"""

from __future__ import annotations

import datetime
import os
import resource
import statistics
import sys
from typing import Callable, Optional

from kmtl.bench.memory import PeakMemory
from kmtl.bench.spread import spread_warning
from kmtl.errors import KmtlError

DATA_KINDS = ("fixed", "real")
PADDINGS = ("longest", "buckets", "grouped")
FIXED_TASKS = ("sentence", "tokens")


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> Optional[float]:
    """1-minute load average (the machine may be shared), or None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def check_options(batch_size: int, seq_len: int, steps: int, repeats: int, warmup: int, data: str, padding: str) -> None:
    """Raise `KmtlError` naming every bad option at once."""
    problems = []
    for name, value, low in (("--batch-size", batch_size, 1), ("--seq-len", seq_len, 4), ("--steps", steps, 1),
                             ("--repeats", repeats, 1), ("--warmup", warmup, 1)):
        if value < low:
            problems.append(f"{name} must be at least {low}, got {value}")
    if seq_len > 512:
        problems.append(f"--seq-len must be at most 512 (BERT position embeddings), got {seq_len}")
    if data not in DATA_KINDS:
        problems.append(f"--data must be one of {', '.join(DATA_KINDS)}, got {data!r}")
    if padding not in PADDINGS:
        problems.append(f"--padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if problems:
        raise KmtlError("; ".join(problems))


def fixed_tasks():
    """The two heads of the fixed-shape benchmark: sentence classification and token tagging."""
    from kmtl.tasks import Classification, Tagging, bio_labels

    return [Classification(FIXED_TASKS[0], ["negative", "positive"]),
            Tagging(FIXED_TASKS[1], bio_labels(["PER", "ORG", "LOC", "MISC"]))]


def fixed_batch(batch_size: int, seq_len: int, vocab_size: int, token_classes: int = 9, seed: int = 0) -> dict:
    """One fixed-shape batch as NumPy: ``x`` (no padding), ``y`` and ``w`` for both heads.

    The first half of the batch is owned by the sentence head, the rest by the token head
    (weights 1 on every token but the first and the last). Word pieces are random ids.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5 if vocab_size < 2000 else 1000, vocab_size, size=(batch_size, seq_len), dtype=np.int32)
    half = batch_size // 2 if batch_size > 1 else 1
    own_sentence = (np.arange(batch_size) < half).astype(np.float32)
    token_w = np.ones((batch_size, seq_len), np.float32) * (1.0 - own_sentence)[:, None]
    token_w[:, 0] = token_w[:, -1] = 0.0
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids),
         # the task index kmtl pipelines put in every x (models without adapters ignore it)
         "task_id": (1 - own_sentence).astype(np.int32)}
    y = {FIXED_TASKS[0]: rng.integers(0, 2, size=(batch_size,), dtype=np.int32),
         FIXED_TASKS[1]: rng.integers(0, token_classes, size=(batch_size, seq_len), dtype=np.int32)}
    w = {FIXED_TASKS[0]: own_sentence, FIXED_TASKS[1]: token_w}
    return {"x": x, "y": y, "w": w}


def _kernel_builds(name: str) -> bool:
    """Whether `kmtl.kernels`' ``name`` (``adamw``, ``dropout``, ``layer_norm``, ``softmax``) builds and loads here."""
    from kmtl import kernels

    return getattr(kernels, name)() is not None


def _set_lever(model, kind, patch, on: bool) -> None:
    """Every exact ``kind`` layer of ``model`` back on Keras' own call, then ``patch(model)`` if ``on``."""
    for layer in model._flatten_layers():
        if type(layer) is kind:
            layer.__dict__.pop("call", None)  # Keras' own call
    if on:
        patch(model)


class TrainBench:
    """The model, data and settings of one training benchmark; `run` measures it.

    Args:
        backbone: ``minilm-l6`` (default), ``tiny`` or a backbone folder.
        batch_size: examples per step.
        seq_len: sequence length (``fixed``) or max length in word pieces (``real``).
        steps: steps per timed window.
        repeats: timed windows (median reported).
        warmup: steps before the first window (tracing, XLA compilation, oneDNN set-up).
        data: ``fixed`` or ``real``.
        jit: compile the train step with XLA (``model.compile(jit_compile=True)``).
        padding: ``longest``, ``buckets`` or ``grouped`` (real data only; see `kmtl.data.buckets`).
        precision: ``float32``, ``mixed_bfloat16`` or ``mixed_float16`` (`kmtl.model.precision`).
        data_dir: the shared data folder (real data).
        limit: examples per task file (real data).
        seed: weights of the heads, sampling and shuffling.
        layernorm: ``True``: `kmtl.layer_norm.fast_layer_norm` on the built model; ``False``: Keras'
            LayerNormalization call; ``None`` (default): the model as kmtl builds it.
        attention: ``True``: `kmtl.attention.fast_attention` on the built model (self-attention in plain
            matmuls); ``False``: Keras' MultiHeadAttention call; ``None`` (default): the model as kmtl builds it.
        sharing: the sharing mode (`kmtl.sharing`; default ``full``, `kmtl.build_model`'s): ``soft`` routes
            each half of the fixed batch (or each task's examples) through its task's copies of the top layers.
        fused: the optimizer's fused Adam kernel (`kmtl.optimizer.FusedAdamUpdate`) or Keras' ops.
        adamw_kernel: kmtl's AdamW kernel (`kmtl.kernels.adamw`: decay and Adam in one pass) where it
            builds, or TensorFlow's ops.
        merge_rows: the embedding gradient clipped on its rows (`kmtl.optimizer.clip_by_global_norm`);
            ``None`` (default): the optimizer's default (True).
        steps_per_execution: train steps per call of Keras' step function; must divide ``steps`` and
            ``warmup`` (the clock reads the time once per call).

    Example:
        >>> bench = TrainBench("tiny", batch_size=8, seq_len=16, steps=2, repeats=1)
        >>> bench.run()["examples_per_sec"] > 0
        True
    """

    def __init__(self, backbone: str = "minilm-l6", batch_size: int = 32, seq_len: int = 64, steps: int = 20,
                 repeats: int = 3, warmup: int = 3, data: str = "fixed", jit: bool = False, padding: str = "grouped",
                 data_dir=None, limit: Optional[int] = None, seed: int = 0, precision: str = "float32",
                 fused: bool = True, layernorm: Optional[bool] = None, attention: Optional[bool] = None,
                 sharing: str = "full", merge_rows: Optional[bool] = None, steps_per_execution: int = 1,
                 adamw_kernel: bool = True):
        check_options(batch_size, seq_len, steps, repeats, warmup, data, padding)
        if steps_per_execution < 1 or steps % steps_per_execution or warmup % steps_per_execution:
            raise KmtlError(f"steps_per_execution must be at least 1 and divide --steps ({steps}) and --warmup "
                            f"({warmup}): the clock reads the time once per execution, got {steps_per_execution}")
        from kmtl.model.precision import AUTO, PRECISIONS, precision_scope, resolve_precision

        if precision not in (AUTO, *PRECISIONS):
            raise KmtlError(f"--precision must be one of {', '.join((AUTO, *PRECISIONS))}, got {precision!r}")
        asked = precision
        precision, reason = resolve_precision(precision)
        if data == "real":  # before any TensorFlow work: a wrong folder is a quick, clear error
            from kmtl.bench.realdata import check_data_dir

            check_data_dir(data_dir)
            if limit is not None and limit < 0:
                raise KmtlError(f"--limit must be 0 (whole files) or more, got {limit}")
        import keras

        from kmtl.backbone import load_backbone
        from kmtl.bench import flops as flops_lib
        from kmtl.model import build_model
        from kmtl.training import make_optimizer

        self.settings = {"backbone": backbone, "batch_size": batch_size, "seq_len": seq_len, "steps": steps,
                         "repeats": repeats, "warmup_steps": warmup, "data": data, "jit": jit,
                         "padding": padding if data == "real" else "none (fixed shapes)", "seed": seed,
                         "precision": precision, "fused_adam": fused, "sharing": sharing,
                         # kmtl's kernels where they build (an XLA-compiled step takes TensorFlow's ops)
                         "adamw_kernel": bool(adamw_kernel and fused and not jit and _kernel_builds("adamw")),
                         "dropout_kernel": bool(not jit and _kernel_builds("dropout")),
                         "layer_norm_kernel": bool(layernorm is not False and not jit and _kernel_builds("layer_norm")),
                         "softmax_kernel": bool(attention is not False and not jit and _kernel_builds("softmax")),
                         **({"precision_auto": reason} if asked == AUTO else {})}
        self.compute_dtype = keras.DTypePolicy(precision).compute_dtype  # the dtype the matmul peak is measured in
        self.read_seconds = None
        keras.utils.set_random_seed(seed)
        if data == "real":
            from kmtl.bench.realdata import DEFAULT_LIMIT, real_tasks_and_examples

            limit = DEFAULT_LIMIT if limit is None else limit
            self.settings["limit_per_task"] = limit
            tasks, self.examples, self.read_seconds = real_tasks_and_examples(data_dir, limit)
        else:
            tasks, self.examples = fixed_tasks(), None
        _say(f"loading backbone {backbone}")
        with precision_scope(precision):
            self.encoder = load_backbone(backbone, seed=seed)
            self.model = build_model(self.encoder, tasks, sharing=sharing)
        from kmtl.attention import fast_attention
        from kmtl.layer_norm import fast_layer_norm

        # A/B levers (benchmarks/levers.py layernorm / attention): None leaves the model as built
        for key, on, kind, patch in (("fast_layer_norm", layernorm, keras.layers.LayerNormalization, fast_layer_norm),
                                     ("fast_attention", attention, keras.layers.MultiHeadAttention, fast_attention)):
            if on is not None:
                _set_lever(self.model, kind, patch, on)
                self.settings[key] = on
        self.tasks = tasks
        self.dims = flops_lib.encoder_dims(self.encoder.backbone)
        self.classes = flops_lib.head_classes(tasks)
        total = warmup + repeats * steps
        optimizer = make_optimizer(5e-5, total_steps=10 * total)
        optimizer.fused = fused  # kmtl.optimizer.FusedAdamUpdate (an A/B lever: benchmarks/levers.py)
        optimizer.adamw_kernel = adamw_kernel  # kmtl.kernels.adamw where it builds (levers.py adamwkernel)
        if merge_rows is not None:  # kmtl.optimizer.clip_by_global_norm's merge_rows (levers.py rowclip)
            optimizer.merge_rows = merge_rows
            self.settings["merge_rows"] = merge_rows
        if steps_per_execution > 1:  # an A/B lever (benchmarks/levers.py spe): several steps per function call
            self.settings["steps_per_execution"] = steps_per_execution
        self.model.compile(optimizer=optimizer, jit_compile=jit, steps_per_execution=steps_per_execution)
        self.total_steps = total

    # ------------------------------------------------------------------ data
    def dataset(self):
        """A fresh `tf.data` dataset of ``warmup + repeats × steps`` training batches."""
        import tensorflow as tf

        s = self.settings
        if s["data"] == "fixed":
            batch = fixed_batch(s["batch_size"], s["seq_len"], self.encoder.backbone.vocabulary_size,
                                self.classes[0], s["seed"])
            return tf.data.Dataset.from_tensors((batch["x"], batch["y"], batch["w"])).repeat(self.total_steps)
        from kmtl.data import mixture
        from kmtl.data.buckets import default_boundaries

        pre = self.encoder.preprocessor(s["seq_len"])
        buckets = default_boundaries(s["seq_len"]) if s["padding"] != "longest" else None
        return mixture(self.tasks, self.examples, pre, batch_size=s["batch_size"], sampling="proportional",
                       steps_per_epoch=self.total_steps, seed=s["seed"], length_buckets=buckets,
                       group_by_length=s["padding"] == "grouped")

    def batches(self) -> list:
        """The batches `run` trains on, in order, as NumPy ``{"x", "y", "w"}`` dicts.

        Real data comes from a second, identically seeded pipeline (deterministic), so these are
        the very batches the timed `fit` sees; the peer benchmark trains on them too.
        """
        if self.settings["data"] == "fixed":
            s = self.settings
            one = fixed_batch(s["batch_size"], s["seq_len"], self.encoder.backbone.vocabulary_size, self.classes[0], s["seed"])
            return [one] * self.total_steps
        out = []
        for x, y, w in self.dataset().as_numpy_iterator():
            out.append({"x": x, "y": y, "w": w})
        return out

    # ------------------------------------------------------------------- run
    def _precompile(self, batches) -> int:
        """With XLA on real data: one step on a batch of each padded length seen later; returns
        the number of distinct shapes (each compiled once)."""
        import tensorflow as tf

        seen, firsts = set(), []
        for b in batches:
            length = b["x"]["token_ids"].shape[1]
            if length not in seen:
                seen.add(length)
                firsts.append(b)
        spec = self.dataset().element_spec
        gen = lambda: ((b["x"], b["y"], b["w"]) for b in firsts)  # noqa: E731
        warm = tf.data.Dataset.from_generator(gen, output_signature=spec)
        _say(f"XLA: compiling the train step for {len(firsts)} padded lengths ({sorted(seen)})")
        self.model.fit(warm, epochs=1, verbose=0)
        return len(firsts)

    def run(self, between: Optional[Callable[[int], None]] = None, batches: Optional[list] = None,
            peak: Optional[dict] = None, peak_after: bool = True) -> dict:
        """Train and time; return the figures (see `format_table` for what they mean).

        The share of the matmul peak is taken against the higher of the peak measured before the
        timed windows and (``peak_after``) the one measured right after them: on a machine whose
        speed drifts within minutes a single measurement can sit in a slow or a fast moment, and
        the higher one never flatters the share.

        Args:
            between: called after each timed window but the last (not timed), e.g. to run the
                peer framework's repeat in between.
            batches: `batches()`, if already computed.
            peak: a `kmtl.bench.peak.matmul_peak` result to reuse (measured now when None).
            peak_after: measure the peak again after the windows (about 3 s; False for A/B
                loops that only compare examples/s).
        """
        import keras
        import tensorflow as tf

        from kmtl.bench.clock import StepClock
        from kmtl.bench.flops import step_flops
        from kmtl.bench.peak import matmul_peak
        from kmtl.bench.serve import machine_info, tf_threads

        s = self.settings
        started = datetime.datetime.now(datetime.timezone.utc)
        machine = machine_info()
        if peak is None:
            _say(f"measuring the {self.compute_dtype} matmul peak")
            peak = matmul_peak(dtype=self.compute_dtype)
        batches = batches if batches is not None else self.batches()
        compiled_shapes = None
        if s["jit"] and s["data"] == "real":
            compiled_shapes = self._precompile(batches[s["warmup_steps"]:])
        clock = StepClock(s["warmup_steps"], s["steps"], s["repeats"], between)
        _say(f"training: {s['warmup_steps']} warm-up steps, then {s['repeats']} x {s['steps']} timed steps "
             f"({s['data']} data, batch {s['batch_size']}, {'max length' if s['data'] == 'real' else 'length'} "
             f"{s['seq_len']}, XLA {'on' if s['jit'] else 'off'})")
        load_start = load_average()
        with PeakMemory({"self": "self"}) as memory:  # anonymous vs file-backed pages (kmtl.bench.memory)
            self.model.fit(self.dataset(), epochs=1, steps_per_epoch=self.total_steps, callbacks=[clock], verbose=0)
        load_end = load_average()
        after = (matmul_peak(peak.get("size", 1024), seconds=peak.get("seconds", 1.0),
                             repeats=len(peak.get("repeats", ())) or 3, dtype=self.compute_dtype)
                 if peak_after else None)  # the same measurement as before the windows
        best = max(peak["gflops"], after["gflops"]) if after else peak["gflops"]

        windows = []
        for r, seconds in enumerate(clock.seconds):
            part = batches[s["warmup_steps"] + r * s["steps"]: s["warmup_steps"] + (r + 1) * s["steps"]]
            shapes = [b["x"]["token_ids"].shape for b in part]
            examples = sum(sh[0] for sh in shapes)
            padded = sum(sh[0] * sh[1] for sh in shapes)
            real = int(sum(b["x"]["padding_mask"].sum() for b in part))
            flops = step_flops(shapes, **self.dims, token_classes=self.classes[0], sentence_classes=self.classes[1])
            windows.append({"seconds": seconds, "examples_per_sec": examples / seconds,
                            "tokens_per_sec": real / seconds, "padded_tokens_per_sec": padded / seconds,
                            "gflops": flops / seconds / 1e9, "mean_padded_length": padded / examples,
                            "mean_real_length": real / examples})
        med = {k: statistics.median(w[k] for w in windows) for k in windows[0]}
        result = {
            "benchmark": "train",
            "date": started.isoformat(timespec="seconds"),
            "machine": {**machine, "load_average_1m_at_end": load_end},
            "load_average_1m": {"start": load_start, "end": load_end},
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "settings": {**s, "statistic": "median over repeats", "tasks": [t.name for t in self.tasks],
                         "optimizer": "AdamW (kmtl.training.make_optimizer)",
                         "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                         "tf_threads": tf_threads()},
            "examples_per_sec": med["examples_per_sec"],
            "tokens_per_sec": med["tokens_per_sec"],
            "padded_tokens_per_sec": med["padded_tokens_per_sec"],
            "step_seconds": med["seconds"] / s["steps"],
            "gflops": med["gflops"],
            "peak_gflops": best,  # the higher of the peaks measured before and after the windows
            "peak_ratio": med["gflops"] / best,
            "mean_padded_length": med["mean_padded_length"],
            "mean_real_length": med["mean_real_length"],
            "peak_rss_mib": peak_rss_mib(),
            # during the fit, sampled every 20 ms (None off Linux): the heap and tensors, the libraries' pages
            "peak_anonymous_mib": (memory.peaks["self"] or {}).get("anon"),
            "peak_file_backed_mib": (memory.peaks["self"] or {}).get("file"),
            "flops_formula": "6*P_mm*tokens + 12*L*S^2*H*batch + 6*H*C_sentence*batch per step "
                             "(padded tokens; kmtl/bench/flops.py)",
            "model": {**self.dims, "parameters": int(self.model.count_params())},
            "repeats": windows,
            "matmul_peak": peak,
            "matmul_peak_after": after,
        }
        if compiled_shapes is not None:
            result["xla_compiled_shapes"] = compiled_shapes
        if self.read_seconds is not None:
            result["read_seconds"] = self.read_seconds
        return result


def bench_train(**options) -> dict:
    """Build a `TrainBench` with ``options`` and run it; returns the figures.

    Example:
        >>> r = bench_train(backbone="tiny", batch_size=8, seq_len=16, steps=2, repeats=1)
        >>> sorted(k for k in r if k.endswith("per_sec"))
        ['examples_per_sec', 'padded_tokens_per_sec', 'tokens_per_sec']
    """
    return TrainBench(**options).run()


def format_table(result: dict) -> str:
    """The figures as a few human-readable lines (and a warning when the timed windows disagree:
    `kmtl.bench.spread`)."""
    s, m = result["settings"], result["machine"]
    shape = (f"batch {s['batch_size']} x length {s['seq_len']}" if s["data"] == "fixed" else
             f"batch {s['batch_size']}, max length {s['seq_len']}, padding {s['padding']}, mean padded length "
             f"{result['mean_padded_length']:.1f} (real {result['mean_real_length']:.1f})")
    lines = [
        f"kmtl bench train: backbone {s['backbone']}, tasks {', '.join(s['tasks'])}; {s['data']} data, {shape}; "
        f"XLA {'on' if s['jit'] else 'off'}; precision {s.get('precision', 'float32')}"
        + (f" ({s['precision_auto']})" if "precision_auto" in s else ""),
        f"  examples/s        {result['examples_per_sec']:10.1f}",
        f"  tokens/s (real)   {result['tokens_per_sec']:10.0f}",
        f"  tokens/s (padded) {result['padded_tokens_per_sec']:10.0f}",
        f"  step time         {result['step_seconds'] * 1e3:10.1f} ms",
        f"  achieved GFLOP/s  {result['gflops']:10.1f}  ({100 * result['peak_ratio']:.0f}% of the measured "
        f"{result['matmul_peak'].get('dtype', 'float32')} "
        f"matmul peak {result['peak_gflops']:.1f}"
        + (f"; the higher of {result['matmul_peak']['gflops']:.1f} before and "
           f"{result['matmul_peak_after']['gflops']:.1f} after the windows" if result.get("matmul_peak_after") else "")
        + ")",
        f"  peak RSS          {result['peak_rss_mib']:10.0f} MiB"
        + (f"  (while training: anonymous {result['peak_anonymous_mib']:.0f} MiB, the libraries' file pages "
           f"{result['peak_file_backed_mib']:.0f} MiB)" if result.get("peak_anonymous_mib") is not None else ""),
        f"median of {s['repeats']} x {s['steps']} steps after {s['warmup_steps']} warm-up steps"
        + (f" (+ {result['xla_compiled_shapes']} XLA compile steps)" if "xla_compiled_shapes" in result else "")
        + f"; FLOPs: {result['flops_formula']}",
        f"machine: {m.get('cpu_model', m['machine'])}, {m['cpu_count']} CPUs, load {result['load_average_1m']['start']}"
        f" -> {result['load_average_1m']['end']}; {result['date']}",
    ]
    # GFLOP/s, not examples/s: real-data windows hold batches of other lengths
    warning = spread_warning("the timed windows", [w["gflops"] for w in result["repeats"]], "GFLOP/s")
    return "\n".join(lines + ([warning] if warning else []))
