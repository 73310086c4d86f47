"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019)."""

from __future__ import annotations

import math
from typing import Annotated, Dict, Optional

import keras
import numpy as np
from pydantic import Field, PositiveFloat

from kmtl.weighting.base import TaskWeighting


class DynamicWeightAverage(TaskWeighting):
    """Weights from how fast each task's loss fell: ``w_t = T * softmax(r_t / temperature)``.

    Implements DWA from Liu et al., "End-to-End Multi-Task Learning with Attention" (CVPR
    2019): ``r_t = L_t(k-1) / L_t(k-2)``, the ratio of the task's mean training losses over
    the last two periods; a task whose loss stalls gets more weight. The first two periods
    use weight 1. A period is an epoch (the paper) or, with ``window_steps``, that many
    training steps, which suits short fine-tuning runs of 2-3 epochs. The losses are the
    model's per-task means over owned examples (``<task>_loss``).

    Args:
        temperature: softness of the softmax (paper: 2).
        window_steps: period length in steps; ``None``: one epoch.

    Example:
        >>> model.fit(train, epochs=3, callbacks=[DynamicWeightAverage(temperature=2.0)])
    """

    def __init__(self, temperature: PositiveFloat = 2.0, window_steps: Optional[Annotated[int, Field(ge=1)]] = None):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if window_steps is not None and int(window_steps) < 1:
            raise ValueError(f"window_steps must be >= 1 (or None for one epoch), got {window_steps}")
        self.temperature = float(temperature)
        self.window_steps = None if window_steps is None else int(window_steps)

    name = "dwa"
    choice_order = 2  # position in lists of choices (`kmtl.registry`)
    overrides_task_weights = True

    def initial_state(self, num_tasks):
        # the mean loss per task of the last two finished periods (row 1 the latest), and how
        # many periods have finished: model state, so a resumed run or a second fit goes on
        return {"losses": np.zeros([2, num_tasks]), "periods": 0.0}

    def weights_for_losses(self) -> Dict[str, float]:
        names = self.task_names
        if float(self.state["periods"].numpy()) < 2:
            return {name: 1.0 for name in names}
        before, last = np.asarray(self.state["losses"].numpy(), dtype=np.float64)
        ratios = {n: (last[i] / before[i]) if before[i] > 0 else 1.0 for i, n in enumerate(names)}
        top = max(r / self.temperature for r in ratios.values())
        exps = {n: math.exp(ratios[n] / self.temperature - top) for n in names}
        total = sum(exps.values())
        return {n: len(names) * exps[n] / total for n in names}

    def _push(self, losses: Dict[str, Optional[float]]) -> None:
        """Record a finished period's losses (a task absent from it keeps its previous loss)."""
        periods = float(self.state["periods"].numpy())
        table = np.asarray(self.state["losses"].numpy())
        row = [losses[n] if losses[n] is not None else (table[1, i] if periods else None)
               for i, n in enumerate(self.task_names)]
        if any(v is None for v in row):
            return
        self.state["losses"].assign(np.stack([table[1], np.asarray(row, dtype=np.float32)]))
        self.state["periods"].assign(periods + 1)

    def _period_done(self, losses: Dict[str, Optional[float]]) -> None:
        self._push(losses)
        self.assign(self.weights_for_losses())

    # epoch periods ---------------------------------------------------------
    def weights_for_epoch(self, epoch, logs):
        if self.window_steps is None and logs is not None:
            self._push({n: float(logs[f"{n}_loss"]) for n in self.task_names})
        return self.weights_for_losses()

    # step windows ----------------------------------------------------------
    def _tracker_totals(self):
        return {n: (float(keras.ops.convert_to_numpy(t.total)), float(keras.ops.convert_to_numpy(t.count)))
                for n, t in self.model.task_loss_trackers.items()}

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._steps, self._start = 0, None

    def on_train_batch_end(self, batch, logs=None):
        if self.window_steps is None:
            return
        if self._start is None:  # the trackers restart each epoch, so do windows
            self._start = {n: (0.0, 0.0) for n in self.task_names}
        self._steps += 1
        if self._steps % self.window_steps:
            return
        now = self._tracker_totals()
        losses = {n: ((now[n][0] - self._start[n][0]) / (now[n][1] - self._start[n][1])
                      if now[n][1] > self._start[n][1] else None) for n in now}
        self._start = now
        self._period_done(losses)
