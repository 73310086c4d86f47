"""What a (re)run may do with its run folder ``<output_dir>/<name>``, decided before anything is written.

`plan_run` looks at the folder (a finished run? a step backup, and of which config?) and
stops with a `RunFolderError` naming the fix, *before* the data is read; `start_run` clears
what a fresh start replaces and writes ``config.json``, *after* the data and the model were
validated. So a failed rerun never touches a finished run's files, and bad input leaves no
folder behind.

Rerun modes (``kmtl train --resume / --restart / --overwrite``):

========== ========================================= ===================================
mode       unfinished run (a backup in ``backup/``)   finished run (``run.json`` written)
========== ========================================= ===================================
auto       resume it (same config only)               replace it (Python default)
resume     resume it (same config only)               stop: ``--overwrite`` replaces it
restart    discard it, start from step 0              stop: ``--overwrite`` replaces it
overwrite  discard it, start from step 0              replace it
========== ========================================= ===================================

A start from step 0 deletes the old ``logs/`` (TensorBoard never mixes two runs' curves in
one folder), ``backup/``, weights, ``run.json`` and metrics; a resume keeps ``logs/``, and
the run's curves continue where the backup stands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

from kmtl.errors import KmtlError
from kmtl.files import without_none, write_atomic
from kmtl.run_files import CONFIG_FILE, METRICS_FILE, RUN_FILE, WEIGHTS_FILE
from kmtl.training.backup import BACKUP_FOLDER, read_backup_state

RERUN_MODES = ("auto", "resume", "restart", "overwrite")
LOGS_FOLDER = "logs"
# what a finished run leaves (besides config.json); retention.* come from `init_from` runs
RUN_OUTPUTS = (RUN_FILE, WEIGHTS_FILE, METRICS_FILE, "retention.json", "retention.md")


class RunFolderError(KmtlError):
    """The run folder holds something this rerun may not touch (a finished run, another config's backup)."""


def config_hash(config) -> str:
    """A short hash of everything in ``config`` that shapes the trained state.

    ``output_dir`` and ``export`` are left out: moving a run folder or exporting elsewhere
    does not change what a backup holds.

    Example:
        >>> config_hash(load_config("configs/sst2_conll_stsb.yaml"))
        '3f1c0a9b5e2d7c41'
    """
    data = without_none(config.to_yaml_dict())  # a new optional key left unset changes no hash
    data.pop("output_dir", None)
    data.pop("export", None)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What `plan_run` decided for a run folder.

    Attributes:
        run_dir: ``<output_dir>/<name>``.
        config_hash: `config_hash` of the config, stored in the backup's ``state.json``.
        resume: whether a backup of this config will be resumed (``False``: start from step 0).
    """

    run_dir: Path
    config_hash: str
    resume: bool


def _flag(mode: str) -> str:
    return f"--{mode} (Python: train(config, rerun={mode!r}))"


def plan_run(config, mode: str = "auto") -> RunPlan:
    """Decide what a rerun in ``config.run_dir`` does; reads the folder, writes nothing.

    Args:
        config: a validated `kmtl.config.Config`.
        mode: one of `RERUN_MODES` (see the module's table).

    Raises:
        RunFolderError: the folder holds a finished run and ``mode`` is ``resume`` or
            ``restart``; or its backup belongs to another config and ``mode`` is ``auto`` or
            ``resume``.

    Example:
        >>> plan = plan_run(config, "resume")
        >>> plan.resume            # True after a crash of this same config
    """
    if mode not in RERUN_MODES:
        raise ValueError(f"rerun mode must be one of {', '.join(RERUN_MODES)}, got {mode!r}")
    run_dir = Path(config.run_dir)
    digest = config_hash(config)
    if mode in ("resume", "restart") and (run_dir / RUN_FILE).is_file():
        raise RunFolderError(
            f"{run_dir} holds a finished run ({RUN_FILE}, weights, metrics); rerun with {_flag('overwrite')} "
            "to replace it, or give the config another `name:` (or --output-dir) to keep it")
    if mode in ("restart", "overwrite"):
        return RunPlan(run_dir, digest, resume=False)
    state = read_backup_state(run_dir / BACKUP_FOLDER)
    if state is None:
        return RunPlan(run_dir, digest, resume=False)
    saved = state.get("config_hash")
    if saved is not None and saved != digest:
        raise RunFolderError(
            f"{run_dir / BACKUP_FOLDER} is the backup of another config (it changed since that run stopped), "
            f"so it cannot be resumed: rerun with {_flag('restart')} to discard it and start over, or give the "
            "config another `name:` (or --output-dir) to keep it")
    return RunPlan(run_dir, digest, resume=True)


def start_run(plan: RunPlan, config) -> Path:
    """Prepare the folder once the input is validated: on a start from step 0, delete the old
    run's outputs, figures, ``logs/`` and ``backup/``; then write ``config.json``. Returns the folder.

    Example:
        >>> start_run(plan_run(config, "overwrite"), config)
        PosixPath('runs/demo')
    """
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if not plan.resume:
        for folder in (BACKUP_FOLDER, LOGS_FOLDER):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
        for name in RUN_OUTPUTS:
            (run_dir / name).unlink(missing_ok=True)
        for figure in run_dir.glob("*.png"):  # kmtl.plots: a removed task's figure must not survive
            figure.unlink()
    write_atomic(run_dir / CONFIG_FILE, json.dumps(config.to_yaml_dict(), indent=2) + "\n")
    return run_dir


def describe(plan: RunPlan) -> Optional[str]:
    """A progress line for a resumed run (``None`` for a fresh start)."""
    return f"resuming from the backup in {plan.run_dir / BACKUP_FOLDER}" if plan.resume else None
