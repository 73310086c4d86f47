"""`kmtl bench train --workers N`: weak scaling of training over N local worker processes.

Three cases, each in processes of its own (TensorFlow's distribution set-up must come before
anything else initialises it):

* ``single`` — one process, one replica, the default strategy: the baseline;
* ``workers`` — N processes of one `tf.distribute.MultiWorkerMirroredStrategy` cluster on
  loopback (``TF_CONFIG`` from `kmtl.training.launcher.worker_env`, ports from
  `kmtl.training.launcher.free_ports`), one replica each;
* ``mirrored`` — one process with N logical CPU devices (`tf.config.set_logical_device_configuration`)
  under `tf.distribute.MirroredStrategy`.

Every replica trains the fixed-shape batch of `kmtl.bench.train` (``batch_size × seq_len``
random word pieces, a sentence and a token head) with ``model.fit``, as `kmtl.bench.train.TrainBench`
does: the batch per replica stays ``batch_size``, so the global batch grows with N (weak
scaling). Threads: each worker (and the baseline) gets 1 CPU thread when N is the core count,
else cores // N; the mirrored process gets N times that (the same cores as the N workers).

All processes start together and build, trace and warm up at once (``warmup`` steps in a
``fit`` of their own); then the cases are timed one after the other, the baseline first, while
the others wait (asleep, on a file in a shared folder): start-up costs no timed window, and no
window shares the CPUs with another case.

Figures per case (medians over the timed windows of a `kmtl.bench.clock.StepClock`; the
chief's for the workers): global examples/s, the step time, the all-reduce time and the
compute time, and the scaling efficiency ``examples/s ÷ (N × the baseline's examples/s)``
(= baseline step time ÷ step time). The all-reduce is timed on its own after training: the
replicas all-reduce (sum) float32 tensors of the shapes of every trainable variable, as the
optimizer all-reduces the gradients (Keras' ``_all_reduce_sum_gradients``: one
``ReplicaContext.all_reduce`` of them all), in a ``tf.function`` under the same strategy;
compute = step − that all-reduce (an estimate: within a step it runs with nothing beside it;
"compute" so also holds the step's other distributed work, e.g. the scalar all-reduces of the
logged figures, `kmtl.model.multi_worker_fit`). The difference between the distributed step
and the baseline's step (the overhead, the other way to split a step) is given too.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from kmtl.errors import KmtlError
from kmtl.training.launcher import free_ports, tail, threads_per_worker, worker_env

CASES = ("single", "workers", "mirrored")
ALLREDUCE_METHOD = ("all-reduce timed on its own: ReplicaContext.all_reduce(SUM) of float32 tensors the shapes of "
                    "every trainable variable (the optimizer's gradient all-reduce), in a tf.function under the same "
                    "strategy, median of {calls} calls; compute = step - that all-reduce (so it holds the step's other "
                    "distributed work: the logged figures' scalar all-reduces, the distributed input); overhead = "
                    "step - the 1-worker step (the difference method)")
DEFAULT_TIMEOUT = 3600.0  # seconds, every case
GATE_POLL_SECONDS = 0.1


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _env(threads: int, interop: int = 1, addresses=None, index: int = 0) -> dict:
    """A case process's environment: the thread counts, and the ``TF_CONFIG`` of worker ``index``
    of ``addresses`` (none without them)."""
    env = worker_env(addresses, index, threads)
    env["TF_NUM_INTEROP_THREADS"] = str(interop)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU scaling: a GPU would take the replica
    return env


# --------------------------------------------------------------------------- one process
def _strategy(case: str, replicas: int):
    import tensorflow as tf

    if case == "mirrored":
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    if case == "workers":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _wait_for_turn(gate: Optional[str], case: str) -> None:
    """Say this process is warm (``<gate>/<case>-<pid>.ready``), then sleep until ``<gate>/<case>.go``
    (no ``gate``: go on at once)."""
    if not gate:
        return
    Path(gate, f"{case}-{os.getpid()}.ready").write_text("", encoding="utf-8")
    while not Path(gate, f"{case}.go").exists():
        time.sleep(GATE_POLL_SECONDS)


def run_case(case: str, settings: dict) -> Optional[dict]:
    """Train and time ``case`` in this process (see the module); the figures, or ``None`` on a
    non-chief worker. ``settings``: backbone, batch_size, seq_len, steps, repeats, warmup,
    precision, seed, replicas (the mirrored case's devices)."""
    if case not in CASES:
        raise KmtlError(f"unknown case {case!r}; one of {', '.join(CASES)}")
    strategy = _strategy(case, settings["replicas"])  # first: before anything initialises TensorFlow
    import keras
    import numpy as np
    import tensorflow as tf

    from kmtl.backbone import load_backbone
    from kmtl.bench.clock import StepClock
    from kmtl.bench.flops import head_classes
    from kmtl.bench.train import fixed_batch, fixed_tasks
    from kmtl.model import build_model
    from kmtl.model.precision import precision_scope
    from kmtl.training import make_optimizer
    from kmtl.training.multi_worker import by_example
    from kmtl.training.strategy import is_chief

    s = settings
    replicas = strategy.num_replicas_in_sync
    total = s["warmup"] + 1 + s["repeats"] * s["steps"]
    keras.utils.set_random_seed(s["seed"])
    with strategy.scope(), precision_scope(s["precision"]):
        encoder = load_backbone(s["backbone"], seed=s["seed"])
        tasks = fixed_tasks()
        model = build_model(encoder, tasks)
        model.compile(optimizer=make_optimizer(5e-5, total_steps=10 * total))
    # the global batch: one benchmark batch per replica (each replica trains what the baseline trains)
    one = fixed_batch(s["batch_size"], s["seq_len"], encoder.backbone.vocabulary_size, head_classes(tasks)[0], s["seed"])
    glued = tuple({k: np.concatenate([v] * replicas) for k, v in one[part].items()} for part in ("x", "y", "w"))
    batches = tf.data.Dataset.from_tensor_slices(glued).batch(s["batch_size"] * replicas, drop_remainder=True)

    def data(steps):  # multi-worker: each worker its part of each batch
        return by_example(batches.repeat(steps), strategy)

    _say(f"{case}: {replicas} replica(s), {s['warmup']} warm-up steps")
    model.fit(data(s["warmup"]), epochs=1, steps_per_epoch=s["warmup"], verbose=0)
    _wait_for_turn(s.get("gate"), case)
    # one more untimed step: a fit's first step also sets up its iterator
    clock = StepClock(1, s["steps"], s["repeats"])
    _say(f"{case}: timing {s['repeats']} x {s['steps']} steps")
    model.fit(data(1 + s["repeats"] * s["steps"]), epochs=1, steps_per_epoch=1 + s["repeats"] * s["steps"],
              callbacks=[clock], verbose=0)

    step = statistics.median(clock.seconds) / s["steps"]
    allreduce, calls = None, max(5, s["steps"])
    if replicas > 1:
        tensors = [tf.ones(v.shape, tf.float32) for v in model.trainable_variables]

        @tf.function
        def all_reduce():
            return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                                        tensors))

        for _ in range(2):  # tracing, the collective's set-up
            all_reduce()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            all_reduce()
            times.append(time.perf_counter() - start)
        allreduce = statistics.median(times)
    if not is_chief(strategy):
        return None
    global_batch = s["batch_size"] * replicas
    return {
        "case": case,
        "strategy": type(strategy).__name__,
        "processes": replicas if case == "workers" else 1,
        "replicas": replicas,
        "global_batch": global_batch,
        "threads": {"intra_op": int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0")),
                    "inter_op": int(os.environ.get("TF_NUM_INTEROP_THREADS", "0"))},
        "examples_per_sec": global_batch / step,
        "step_seconds": step,
        "allreduce_seconds": allreduce or 0.0,
        "compute_seconds": step - (allreduce or 0.0),
        "allreduce_bytes": 4 * int(sum(int(np.prod(v.shape)) for v in model.trainable_variables)),
        "allreduce_calls": calls if allreduce is not None else 0,
        "windows_seconds": list(clock.seconds),
        "parameters": int(model.count_params()),
    }


# --------------------------------------------------------------------------- orchestration
def _watch(procs, logs, done, deadline: float, what: str) -> None:
    """Poll until ``done()``; raise when one of ``procs`` fails or at ``deadline``."""
    while not done():
        for index, p in enumerate(procs):
            code = p.poll()
            if code not in (None, 0):
                raise KmtlError(f"{what}: process {Path(logs[index]).stem} exited with status {code}:\n"
                                f"{tail(Path(logs[index]))}")
        if time.monotonic() > deadline:
            raise KmtlError(f"{what}: not done in time; stopped")
        time.sleep(0.2)


def _commands(cases, settings: dict, folder: Path, threads: int, workers: int):
    """``(case, command, environment)`` of every process."""
    out = []
    for case in cases:
        command = [sys.executable, "-m", "kmtl.bench.workers", case, json.dumps(settings), str(folder / f"{case}.json")]
        if case == "workers":
            addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
            out += [(case, command, _env(threads, 1, addresses, i)) for i in range(workers)]
        elif case == "mirrored":
            out.append((case, command, _env(threads * workers, workers)))
        else:
            out.append((case, command, _env(threads, 1)))
    return out


def _run_cases(cases, settings: dict, folder: Path, threads: int, workers: int, timeout: float) -> dict:
    """Start every process, wait until all are warm, then let the cases run one at a time; their figures."""
    deadline = time.monotonic() + timeout
    settings = {**settings, "gate": str(folder)}
    procs, logs, owners = [], [], []
    try:
        for n, (case, command, env) in enumerate(_commands(cases, settings, folder, threads, workers)):
            logs.append(folder / f"{case}-{n}.log")
            with open(logs[-1], "w", encoding="utf-8") as log:
                procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            owners.append(case)
        _say(f"{len(procs)} processes: building and warming up together")
        _watch(procs, logs, lambda: len(list(folder.glob("*.ready"))) >= len(procs), deadline, "warm-up")
        results = {}
        for case in cases:
            _say(f"timing case {case}")
            (folder / f"{case}.go").write_text("", encoding="utf-8")
            mine = [p for p, owner in zip(procs, owners) if owner == case]
            _watch(procs, logs, lambda mine=mine: all(p.poll() == 0 for p in mine), deadline, case)
            out = folder / f"{case}.json"
            if not out.is_file():
                raise KmtlError(f"{case}: no figures written")
            results[case] = json.loads(out.read_text(encoding="utf-8"))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def bench_workers(workers: int, backbone: str = "minilm-l6", batch_size: int = 32, seq_len: int = 64,
                  steps: int = 20, repeats: int = 3, warmup: int = 3, precision: str = "float32", seed: int = 0,
                  cases=CASES, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Run the cases (see the module) for ``workers`` and return all figures.

    Example:
        >>> r = bench_workers(2, backbone="tiny", batch_size=4, seq_len=16, steps=2, repeats=1, warmup=1)
        >>> r["workers"]["scaling_efficiency"] > 0
        True
    """
    from kmtl.bench.serve import machine_info
    from kmtl.bench.train import check_options, load_average

    if workers < 2:
        raise KmtlError(f"--workers {workers}: the scaling benchmark needs 2 or more")
    check_options(batch_size, seq_len, steps, repeats, warmup, "fixed", "grouped")
    threads = threads_per_worker(workers)
    settings = {"backbone": backbone, "batch_size": batch_size, "seq_len": seq_len, "steps": steps,
                "repeats": repeats, "warmup": warmup, "precision": precision, "seed": seed, "replicas": workers}
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_info()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="kmtl-bench-workers-") as folder:
        results = _run_cases(cases, settings, Path(folder), threads, workers, timeout)
    load_end = load_average()
    base = results.get("single")
    for r in results.values():
        if base is not None:
            r["scaling_efficiency"] = r["examples_per_sec"] / (r["replicas"] * base["examples_per_sec"])
            r["overhead_vs_single_seconds"] = r["step_seconds"] - base["step_seconds"]
    main = results.get("workers", {})
    return {
        "benchmark": "train-workers",
        "date": started.isoformat(timespec="seconds"),
        "machine": {**machine, "load_average_1m_at_end": load_end},
        "load_average_1m": {"start": load_start, "end": load_end},
        "settings": {**{k: v for k, v in settings.items() if k != "replicas"}, "workers": workers,
                     "threads_per_worker": threads, "mirrored_threads": threads * workers, "data": "fixed",
                     "scaling": "weak (batch per replica fixed, global batch = workers x batch)",
                     "statistic": "median over repeats; the chief's clock",
                     "order": "all processes warm up together, then each case is timed alone, in this order",
                     "cases": list(cases)},
        "allreduce_method": ALLREDUCE_METHOD.format(calls=max(5, steps)),
        **results,
        "examples_per_sec": main.get("examples_per_sec"),
        "scaling_efficiency": main.get("scaling_efficiency"),
    }


def format_table(result: dict) -> str:
    """The figures as a small table."""
    s, m = result["settings"], result["machine"]
    names = {"single": "1 worker", "workers": f"{s['workers']} workers (multi-worker)",
             "mirrored": f"{s['workers']} CPU devices, 1 process"}
    lines = [f"kmtl bench train --workers {s['workers']}: backbone {s['backbone']}, batch {s['batch_size']} per "
             f"replica x length {s['seq_len']} (weak scaling); {s['threads_per_worker']} thread(s) per worker",
             f"{'case':32} {'threads':>7} {'examples/s':>11} {'step ms':>8} {'compute ms':>10} {'all-reduce ms':>13} "
             f"{'overhead ms':>11} {'efficiency':>10}"]
    for case in s["cases"]:
        r = result[case]
        threads = r["threads"]["intra_op"] * r["processes"]
        lines.append(f"{names[case]:32} {threads:>7} {r['examples_per_sec']:11.1f} {1e3 * r['step_seconds']:8.1f} "
                     f"{1e3 * r['compute_seconds']:10.1f} {1e3 * r['allreduce_seconds']:13.1f} "
                     f"{1e3 * r.get('overhead_vs_single_seconds', float('nan')):11.1f} "
                     f"{100 * r.get('scaling_efficiency', float('nan')):9.0f}%")
    lines += [f"all-reduce: {result['allreduce_method']}",
              f"efficiency: examples/s / (replicas x the 1-worker examples/s); median of {s['repeats']} x {s['steps']} "
              f"steps after {s['warmup']} warm-up steps (all cases together) and 1 untimed step (each case alone)",
              f"machine: {m.get('cpu_model', m['machine'])}, {m['cpu_count']} CPUs (shared: load "
              f"{result['load_average_1m']['start']} -> {result['load_average_1m']['end']}); {result['date']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m kmtl.bench.workers CASE SETTINGS_JSON OUT``: one process of one case."""
    case, settings, out = (argv if argv is not None else sys.argv[1:])[:3]
    result = run_case(case, json.loads(settings))
    if result is not None:
        Path(out).write_text(json.dumps(result) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
