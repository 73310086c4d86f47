"""`launch_workers`: a multi-worker run on one machine (``kmtl train CONFIG --workers N``).

TensorFlow's distributed runtime does the training (`tf.distribute.MultiWorkerMirroredStrategy`,
one process per worker, found through ``TF_CONFIG``); this only starts the processes the way a
cluster would, so that anyone can try multi-worker training on a laptop before a real cluster
(README "Training on several machines": a Slurm script and a Kubernetes example to copy).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from kmtl.errors import KmtlError

STOP_GRACE_SECONDS = 10.0
"""How long a worker gets to exit after SIGTERM before it is killed."""


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """``count`` distinct TCP ports free on ``host`` now (the OS picks them)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def tf_config(addresses: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of a cluster of ``addresses`` (worker 0 is the chief).

    Example:
        >>> tf_config(["127.0.0.1:4000", "127.0.0.1:4001"], 1)
        '{"cluster": {"worker": ["127.0.0.1:4000", "127.0.0.1:4001"]}, "task": {"type": "worker", "index": 1}}'
    """
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": int(index)}})


def threads_per_worker(workers: int, cores: Optional[int] = None) -> int:
    """CPU threads of each of ``workers`` local processes: an equal share of the cores, at least 1.

    Example:
        >>> threads_per_worker(2, cores=2), threads_per_worker(2, cores=16), threads_per_worker(4, cores=2)
        (1, 8, 1)
    """
    return max(1, (cores or os.cpu_count() or 1) // workers)


def worker_env(addresses: Optional[Sequence[str]], index: int, threads: Optional[int], base=None) -> dict:
    """The environment of one local worker: its ``TF_CONFIG`` (none when ``addresses`` is ``None``)
    and, with ``threads``, TensorFlow's and OpenMP's thread counts (so N workers on one machine do
    not each take every core)."""
    env = dict(os.environ if base is None else base)
    env.pop("TF_CONFIG", None)
    if addresses is not None:
        env["TF_CONFIG"] = tf_config(addresses, index)
    if threads:
        for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
            env[name] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def _stop(processes) -> None:
    """SIGTERM to every running worker, SIGKILL to those still running after the grace time."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in processes:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (empty when it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def launch_workers(command: Sequence[str], workers: int, *, threads: Optional[int] = None,
                   host: str = "127.0.0.1", echo: Callable[[str], None] = print, poll_seconds: float = 0.2) -> None:
    """Run ``command`` as ``workers`` local processes of one TensorFlow cluster; return when all
    succeeded.

    Each process gets its ``TF_CONFIG`` (ports free on ``host``, chosen now); worker 0, the
    chief, writes to this process's stdout/stderr, the others to log files in a temporary
    folder. When one worker fails, the others are stopped (SIGTERM, then SIGKILL after
    `STOP_GRACE_SECONDS`) and a `KmtlError` names it, with the end of its output; Ctrl-C stops
    them all.

    Args:
        command: the worker's command line (``kmtl train CONFIG ...`` without ``--workers``).
        workers: how many processes (at least 2).
        threads: CPU threads per worker (``None``: TensorFlow's default, every core).

    Example:
        >>> launch_workers([sys.executable, "-m", "kmtl.cli", "train", "config.yaml"], 2, threads=1)
    """
    if workers < 2:
        raise KmtlError(f"--workers {workers}: give 2 or more (one process trains without it)")
    addresses = [f"{host}:{port}" for port in free_ports(workers, host)]
    echo(f"starting {workers} workers on {', '.join(addresses)} (worker 0 is the chief; "
         f"{'TensorFlow picks the threads' if not threads else f'{threads} CPU thread(s) each'})")
    with tempfile.TemporaryDirectory(prefix="kmtl-workers-") as folder:
        logs = [None] + [Path(folder) / f"worker-{i}.log" for i in range(1, workers)]
        processes, handles = [], []
        try:
            for index in range(workers):
                out = None
                if logs[index] is not None:
                    out = open(logs[index], "w", encoding="utf-8")
                    handles.append(out)
                processes.append(subprocess.Popen(list(command), env=worker_env(addresses, index, threads),
                                                  stdout=out, stderr=subprocess.STDOUT if out else None))
            while True:
                codes = [p.poll() for p in processes]
                failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
                if failed:
                    index = failed[0]
                    _stop(processes)
                    where = "its output is above" if logs[index] is None else \
                        f"the end of its output:\n{tail(logs[index])}"
                    raise KmtlError(f"worker {index} of {workers} exited with status {codes[index]}; the other "
                                    f"workers were stopped; {where}")
                if all(code == 0 for code in codes):
                    return
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            _stop(processes)
            raise
        finally:
            if any(p.poll() is None for p in processes):
                _stop(processes)
            for handle in handles:
                handle.close()


def train_command(args) -> List[str]:
    """The ``kmtl train`` command line of one worker, from the parsed CLI arguments (``--workers``
    left out)."""
    command = [sys.executable, "-m", "kmtl.cli", "train", str(args.config)]
    for flag, value in (("--output-dir", args.output_dir), ("--export-dir", args.export_dir),
                        ("--epochs", args.epochs)):
        if value is not None:
            command += [flag, str(value)]
    command += ["--verbose", str(args.verbose), f"--{args.rerun}"]
    if args.no_export:
        command.append("--no-export")
    if getattr(args, "quiet", False):
        command.append("--quiet")
    return command
