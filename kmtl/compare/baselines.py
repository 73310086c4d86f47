"""Single-task baselines: their configs, derived from the multi-task config, and their cache.

A baseline is the multi-task config cut down to one task: same backbone, pooling, sharing
mode, max length, the task's own data (same ``limit``), the same ``training`` section (epochs,
learning rate, warm-up, seed...) and batch size. It is trained once and kept in
``<output_dir>/baselines/<task>-<key>/``, where ``key`` hashes every setting that changes it
(including the size and content hash of its data files), so `kmtl compare` retrains a
baseline only when one of them changed.

Example:
    >>> config = kmtl.config.load_config("configs/compare_four_tasks.yaml")
    >>> base = baseline_config(config, "sst2")          # a one-task Config
    >>> BaselineCache(config.output_dir).run_dir(config, "sst2")
    PosixPath('/abs/runs/baselines/sst2-3f0c9a1e2b7d4c56')
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Dict, Optional

from kmtl.files import file_digest, json_safe, without_none, write_atomic

CACHE_FOLDER = "baselines"
RECORD_FILE = "baseline.json"
_FORMAT = 1  # bump when what a baseline run means changes: old cache entries are then ignored


def _monitor_fits(monitor: str, task: str) -> bool:
    metric = monitor[len("val_"):] if monitor.startswith("val_") else monitor
    return metric == "loss" or metric.startswith(f"{task}_")


def baseline_config(config, task_name: str, output_dir: Optional[Path] = None, name: Optional[str] = None):
    """The single-task `kmtl.config.Config` of ``task_name``, derived from the multi-task ``config``.

    The task keeps its data, ``limit`` and labels, with loss weight 1 and no batch share; the sharing mode drops
    what is about other tasks (`kmtl.sharing.Sharing.for_one_task`: no task relation; under
    ``soft``, ``full``, which one copy of the top layers computes; under ``progressive``, a
    column of its own, or ``full`` for a task without one); ``weighting`` goes back
    to static (one task has nothing to weigh), early stopping is kept only when it monitors
    the total loss or this task, and export, teachers and ``init_from`` are off.

    Args:
        config: the multi-task config.
        task_name: one of its tasks.
        output_dir, name: where the run goes (``<output_dir>/<name>``); default: the
            config's ``output_dir`` and the task's name.
    """
    from kmtl.config import ExportConfig, WeightingConfig
    from kmtl.config.schema import SharingConfig
    from kmtl.sharing import make_sharing

    # alone, a task is the whole batch: its loss weight and batch share say nothing (and would
    # only change the cache key, retraining the same baseline for each mixture tried)
    task = config.task(task_name).model_copy(update={"weight": 1.0, "batch_share": None})
    mode, changes = make_sharing(config.sharing.mode, **config.sharing.options()).for_one_task(task_name)
    sharing = config.sharing.model_copy(update=changes) if mode == config.sharing.mode else SharingConfig(mode=mode)
    training = config.training
    es = training.early_stopping
    if es is not None and not _monitor_fits(es.monitor, task_name):
        training = training.model_copy(update={"early_stopping": None})
    update = {
        "name": name or task_name,
        "tasks": (task,),
        "sharing": sharing,
        "training": training,
        "weighting": WeightingConfig(),
        "output_dir": Path(output_dir) if output_dir is not None else config.output_dir,
        "export": ExportConfig(enabled=False, dir=config.export.dir),
    }
    for key in ("teachers", "init_from"):  # the options of the multi-task model only
        if key in type(config).model_fields:
            update[key] = type(config).model_fields[key].get_default(call_default_factory=True)
    return config.model_copy(update=update)


def file_stamps(task_config) -> Dict[str, list]:
    """``{path: [size, sha256]}`` of the task's train and dev files (TFDS sources have none).

    The content, not the modification time (`kmtl.files.file_digest`): a fresh copy of the same
    data keeps the cache, an edit retrains."""
    stamps = {}
    for source in (task_config.train, task_config.dev):
        path = getattr(source, "path", None)
        if path is not None and Path(path).is_file():
            stamps[str(path)] = [Path(path).stat().st_size, file_digest(path)]
    return stamps


def baseline_settings(config, task_name: str) -> dict:
    """Every setting that changes the baseline of ``task_name``, as plain JSON data."""
    from kmtl.model.precision import resolve_precision

    base = baseline_config(config, task_name)
    task = base.tasks[0]
    training = base.training.model_dump(mode="json")
    # what the run computes in, not "auto": a cache filled on a float32 CPU is not a bfloat16 baseline
    training["precision"] = resolve_precision(training["precision"])[0]
    return {
        "format": _FORMAT,
        "backbone": base.backbone,
        "max_length": base.max_length,
        "pooling": base.pooling,
        "sharing": base.sharing.model_dump(mode="json"),
        "task": task.model_dump(mode="json"),
        "files": file_stamps(task),
        "training": training,
        "batch_size": base.mixture.batch_size,
    }


def settings_key(settings: dict) -> str:
    """A short stable hash (16 hex digits) of JSON ``settings`` (``None`` entries left out:
    a new optional setting left unset keeps the cache's keys)."""
    text = json.dumps(without_none(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class BaselineCache:
    """The folder of trained single-task baselines, one run folder per task and settings.

    Args:
        output_dir: the config's ``output_dir``; the cache is ``<output_dir>/baselines``.

    Example:
        >>> cache = BaselineCache("runs")
        >>> record = cache.get(config, "sst2")      # None when it must be trained
    """

    def __init__(self, output_dir):
        self.root = Path(output_dir) / CACHE_FOLDER

    def run_dir(self, config, task_name: str) -> Path:
        """The run folder of ``task_name``'s baseline under ``config``'s settings."""
        return self.root / f"{task_name}-{settings_key(baseline_settings(config, task_name))}"

    def config(self, config, task_name: str):
        """The baseline's config, writing into `run_dir`."""
        run_dir = self.run_dir(config, task_name)
        return baseline_config(config, task_name, output_dir=run_dir.parent, name=run_dir.name)

    def get(self, config, task_name: str) -> Optional[dict]:
        """The cached record (metrics, seconds, parameters...) or ``None`` when there is none."""
        path = self.run_dir(config, task_name) / RECORD_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged record: train again

    def put(self, config, task_name: str, metrics: dict, seconds: float, parameters: int) -> dict:
        """Record a finished baseline next to its run files; returns the record."""
        run_dir = self.run_dir(config, task_name)
        record = {
            "task": task_name,
            "run_dir": str(run_dir),
            "key": run_dir.name.rsplit("-", 1)[1],
            "metrics": metrics,
            "seconds": seconds,
            "parameters": parameters,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": baseline_settings(config, task_name),
        }
        write_atomic(run_dir / RECORD_FILE, json.dumps(json_safe(record), indent=2, sort_keys=True) + "\n")
        return record
