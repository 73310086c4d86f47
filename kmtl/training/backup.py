"""`StepBackup`: back up the training state every N steps, so a rerun resumes at that step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from kmtl.errors import KmtlError
from kmtl.files import write_atomic

DEFAULT_SAVE_EVERY = 100
STATE_FILE = "state.json"
BACKUP_FOLDER = "backup"  # <run_dir>/backup
FIX = ("rerun with --restart (Python: train(config, rerun='restart')) to discard it and start over, or give "
       "the config another `name:` to keep it")


class StaleBackupError(KmtlError):
    """A backup that does not fit this run (another config, other steps per epoch, other variables)."""


def read_backup_state(backup_dir):
    """The backup's ``state.json`` as a dict, or ``None`` when there is no (readable) backup.

    Example:
        >>> read_backup_state("runs/demo/backup")["global_step"]
        200
    """
    path = Path(backup_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StaleBackupError(f"{path} is not readable JSON: {FIX}") from None
    return state if isinstance(state, dict) else None


class ResumePoint(NamedTuple):
    """Where a run stands: ``step`` batches of ``epoch`` (0-based) are done."""

    epoch: int = 0
    step: int = 0

    def global_step(self, steps_per_epoch: int) -> int:
        return self.epoch * steps_per_epoch + self.step


class StepBackup(keras.callbacks.Callback):
    """Back up the model (weights, optimizer, weighting state, RNG states) every ``save_every``
    steps and at each epoch's end; `resume_point` tells a rerun where to start.

    Keras' `keras.callbacks.BackupAndRestore` (3.15) takes ``save_freq`` in batches but
    restores only the epoch: ``_load_model`` reads ``"epoch"`` from its metadata and ignores
    ``"batch"`` (there is no initial step in ``fit``), so a run killed mid-epoch redoes that
    epoch's first batches on weights that already learned from them. No upstream issue found;
    tf-keras had ``maybe_load_initial_counters_from_ckpt`` for this. Its files are also not
    written atomically (a kill during ``save_weights`` leaves a broken backup). Here:

    * each backup writes ``step-<global step>.weights.h5`` and ``step-<global step>.rng.npz``,
      *then* points ``state.json`` to them (atomic rename), then deletes older files: a kill at
      any moment leaves a consistent set;
    * ``save_weights`` leaves out the states of Keras ``SeedGenerator``s (Dropout's masks;
      keras issue 19796), so a resumed run would draw other dropout masks: they are saved in
      the ``.rng.npz`` file and restored with the weights;
    * the trainer reads `resume_point` before ``fit``, skips the input stream to that step
      and finishes the interrupted epoch in a ``fit`` of its own (see
      `kmtl.training.trainer.train`); the weights are loaded at ``on_train_begin`` (once),
      when every variable (optimizer slots, metrics, weighting state) exists.

    The global step counts batches since the start of the run (``epoch * steps_per_epoch +
    step``); backups fall on multiples of ``save_every``, whatever step a run resumed at.

    A backup records the `kmtl.training.run_folder.config_hash` of the run's config; one made
    by another config (or with other steps per epoch, or that does not load into this model)
    is refused with a `StaleBackupError` that names the fix (``--restart`` or a new name),
    instead of Keras' "Layer ... expected 3 variables, received 2" deep inside ``fit``.

    Args:
        backup_dir: folder for the backup (deleted by `clear` after a finished run).
        steps_per_epoch: batches per epoch (the trainer's, also passed to ``fit``).
        save_every: back up every this many steps (and at every epoch's end).
        config_hash: stored in ``state.json``; a backup with another hash is refused
            (``None``: no check).
        extra: called at each backup for more JSON-able state (``state.json``'s ``"extra"``,
            read back with `read_backup_state`): the per-task early stopping's counts.

    Example:
        >>> backup = StepBackup("runs/demo/backup", steps_per_epoch=339)
        >>> start = backup.resume_point()            # ResumePoint(epoch=1, step=200) after a crash
        >>> model.fit(data.skip(start.global_step(339)).take(139), initial_epoch=1, epochs=2,
        ...           steps_per_epoch=139, callbacks=[backup.starting_at(start)])
    """

    def __init__(self, backup_dir, steps_per_epoch: int, save_every: int = DEFAULT_SAVE_EVERY,
                 config_hash=None, extra=None):
        super().__init__()
        if steps_per_epoch < 1 or save_every < 1:
            raise ValueError(f"steps_per_epoch and save_every must be >= 1, got {steps_per_epoch}, {save_every}")
        self.backup_dir = Path(backup_dir)
        self.steps_per_epoch = int(steps_per_epoch)
        self.save_every = int(save_every)
        self.config_hash = config_hash
        self.extra = extra
        self._loaded = False
        self._offset = 0  # steps of the first epoch done before this fit (a resumed epoch)
        self._epoch = 0
        self._step = 0

    # ------------------------------------------------------------------ reading
    def _state(self):
        state = read_backup_state(self.backup_dir)
        if state is None:
            return None
        saved = state.get("config_hash")
        if self.config_hash is not None and saved is not None and saved != self.config_hash:
            raise StaleBackupError(f"{self.backup_dir} is the backup of another config: {FIX}")
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            raise StaleBackupError(
                f"the backup in {self.backup_dir} was made with {state.get('steps_per_epoch')} steps per epoch, "
                f"this run has {self.steps_per_epoch} (the data changed?): {FIX}")
        return state

    def resume_point(self) -> ResumePoint:
        """Where the last backup stands (``ResumePoint(0, 0)`` without one)."""
        state = self._state()
        return ResumePoint(state["epoch"], state["step"]) if state else ResumePoint()

    def starting_at(self, point: ResumePoint) -> "StepBackup":
        """Tell the callback that the next ``fit``'s first epoch starts ``point.step`` steps in."""
        self._offset = point.step
        return self

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs=None):
        if self._loaded:
            return
        self._loaded = True
        state = self._state()
        if state is None:
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(str(self.backup_dir / state["weights"]))
        except (ValueError, OSError, KeyError) as err:  # e.g. "Layer 'x' expected 3 variables, but received 2"
            raise StaleBackupError(f"the backup in {self.backup_dir} does not fit this model ({err}): {FIX}") from None
        with np.load(self.backup_dir / state["rng"]) as saved:
            values = [saved[str(i)] for i in range(len(saved.files))]
        rng = self._rng_states()
        if len(values) != len(rng):
            raise StaleBackupError(f"the backup in {self.backup_dir} holds {len(values)} random-seed states, the "
                                   f"model has {len(rng)}: {FIX}")
        for variable, value in zip(rng, values):
            variable.assign(value)

    def _rng_states(self):
        """The model's random-seed states (Keras ``SeedGenerator``s, e.g. Dropout's): in
        ``model.variables`` but not in ``model.weights``, so ``save_weights`` skips them
        (keras issue 19796)."""
        weights = {id(w) for w in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch, self._offset
        self._offset = 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step < self.steps_per_epoch and (self._epoch * self.steps_per_epoch + self._step) % self.save_every == 0:
            self._save(self._epoch, self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0)

    # ------------------------------------------------------------------ writing
    def _save(self, epoch: int, step: int) -> None:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        global_step = epoch * self.steps_per_epoch + step
        name, rng = f"step-{global_step}.weights.h5", f"step-{global_step}.rng.npz"
        self.model.save_weights(str(self.backup_dir / name), overwrite=True)
        np.savez(self.backup_dir / rng, **{str(i): np.asarray(v.numpy()) for i, v in enumerate(self._rng_states())})
        write_atomic(self.backup_dir / STATE_FILE, json.dumps(
            {"epoch": epoch, "step": step, "global_step": global_step, "steps_per_epoch": self.steps_per_epoch,
             "weights": name, "rng": rng, "config_hash": self.config_hash,
             **({"extra": self.extra()} if self.extra is not None else {})}) + "\n")
        for old in self.backup_dir.glob("step-*"):
            if old.name not in (name, rng):
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete the backup (after a finished run)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)
