"""A process's memory split into anonymous memory and shared-library pages, and its sampled peaks.

Peak RSS (``ru_maxrss``, ``VmHWM``) counts two kinds of pages. *Anonymous* memory (``RssAnon``):
the heap, the tensors, the optimizer's slots, what only swapping could take back. *File-backed*
pages (``RssFile``): the code and data of the shared libraries the process mapped and touched,
clean copies of files that the kernel drops under memory pressure and reads back when used. The
two frameworks differ most in the second: ``import tensorflow`` touches about 420 MiB of its
libraries (keras-hub and TF Text add 110 more), ``import torch, transformers`` about 100 MiB
(measured 2026-12-03, `lscpu`: Intel(R) Xeon(R) Processor, TF 2.21, torch 2.13). Reported side
by side, the two show what a training run itself costs and what loading the framework costs.

Linux only (``/proc/<pid>/status``); elsewhere the figures are None. Standard library only:
``benchmarks/memory_trace.py`` loads this file before TensorFlow is imported.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, Optional

FIELDS = {"VmRSS": "rss", "VmHWM": "hwm", "RssAnon": "anon", "RssFile": "file"}
"""``/proc/<pid>/status`` lines read, and their keys: resident set now, its peak so far (the kernel's
high-water mark), anonymous and file-backed resident pages now."""


def memory_mib(pid="self") -> Optional[Dict[str, float]]:
    """``{"rss", "hwm", "anon", "file"}`` (`FIELDS`) of process ``pid``, MiB; None where ``/proc``
    has no such file.

    Example:
        >>> sorted(memory_mib())
        ['anon', 'file', 'hwm', 'rss']
    """
    found = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in FIELDS:
                    found[FIELDS[key]] = int(value.split()[0]) / 1024.0
    except (OSError, ValueError):
        return None
    return found if len(found) == len(FIELDS) else None


class PeakMemory:
    """Samples the memory of some processes in a background thread and keeps each figure's peak.

    The peaks are each figure's largest sample (the anonymous and the file-backed peak need not
    fall at the same moment); a spike shorter than ``interval`` can be missed, so ``rss`` may sit a
    little under the kernel's exact ``VmHWM``.

    Args:
        pids: ``{name: pid}`` ("self" for this process).
        interval: seconds between samples.

    Example:
        >>> with PeakMemory({"kmtl": "self"}) as sampler:
        ...     data = b"x" * (100 << 20)    # 100 MiB written
        >>> sampler.peaks["kmtl"]["anon"] > 100
        True
    """

    def __init__(self, pids: Dict[str, object], interval: float = 0.02):
        self.pids, self.interval = dict(pids), float(interval)
        self.peaks: Dict[str, Optional[Dict[str, float]]] = {name: None for name in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmtl-peak-memory", daemon=True)

    def _sample(self):
        for name, pid in self.pids.items():
            now = memory_mib(pid)
            if now is None:
                continue
            old = self.peaks[name]
            self.peaks[name] = now if old is None else {k: max(old[k], now[k]) for k in now}

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def start(self) -> "PeakMemory":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> Dict[str, Optional[Dict[str, float]]]:
        """Stop sampling (after one last sample) and return `peaks`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        return self.peaks

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
