"""Per-task differences and Δm, the mean relative change of a multi-task model.

Δm (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019) compares a
multi-task model with one single-task model per task:

    Δm = 1/T · Σ_t (-1)^{l_t} · (M_mt,t - M_st,t) / M_st,t

where ``l_t`` is 1 when lower is better for task ``t``'s metric (an error, a loss) and 0 when
higher is better (accuracy, F1, Pearson). A positive Δm means the multi-task model is better
on average. kmtl reports it in percent.

Example:
    >>> delta_m({"a": 0.9, "b": 0.5}, {"a": 0.8, "b": 0.5})        # accuracy-like metrics
    6.25
    >>> delta_m({"err": 0.1}, {"err": 0.2}, lower_is_better={"err": True})
    50.0
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional


def primary_metric(kind: str) -> str:
    """The one metric of a task kind that Δm uses: the kind's `kmtl.tasks.Task.primary_metric`."""
    from kmtl.tasks import primary_metric as of_kind  # TensorFlow: import only when needed

    return of_kind(kind)

LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "loss", "error", "perplexity"})
"""Metric names for which lower is better (``l_t = 1`` in Δm); every other metric is higher-better."""


def lower_is_better(metric: str) -> bool:
    """Whether lower values of ``metric`` are better (errors, losses)."""
    return metric in LOWER_IS_BETTER or metric.endswith(("_loss", "_error", "_mse"))


def relative_change(multi: float, single: float, lower_better: bool = False) -> float:
    """``(-1)^l · (multi - single) / single`` in percent; NaN when undefined (single is 0 or NaN).

    Example:
        >>> relative_change(0.9, 0.8)
        12.5
        >>> relative_change(0.3, 0.2, lower_better=True)
        -50.0
    """
    if _missing(multi) or _missing(single) or single == 0:
        return math.nan
    sign = -1.0 if lower_better else 1.0
    return 100.0 * sign * (multi - single) / abs(single)


def delta_m(multi: Mapping[str, float], single: Mapping[str, float],
            lower_is_better: Optional[Mapping[str, bool]] = None) -> float:
    """Δm in percent over the tasks of ``single`` (NaN when a task's change is undefined).

    Args:
        multi: ``{task: metric value}`` of the multi-task model.
        single: ``{task: metric value}`` of each task's single-task baseline.
        lower_is_better: ``{task: bool}``; tasks left out are higher-is-better.

    Example:
        >>> delta_m({"sst2": 0.768, "stsb": 0.794}, {"sst2": 0.828, "stsb": 0.786})
        -3.1144...
    """
    lower = lower_is_better or {}
    changes = [relative_change(multi[t], single[t], bool(lower.get(t, False))) for t in single]
    if not changes or any(math.isnan(c) for c in changes):
        return math.nan
    return sum(changes) / len(changes)


def task_deltas(multi_metrics: Mapping[str, dict], single_metrics: Mapping[str, dict],
                primary: Optional[Mapping[str, str]] = None) -> Dict[str, dict]:
    """Per task: its primary metric, both values, the difference and the relative change.

    Args:
        multi_metrics, single_metrics: ``{task: {"kind": ..., metric: value, ...}}`` as
            `kmtl.evaluation.evaluate_tasks` returns them.
        primary: ``{task: metric}`` overrides of `primary_metric` (chosen by kind).

    Returns:
        ``{task: {"metric", "lower_is_better", "single_task", "multi_task", "difference",
        "relative_percent"}}``; ``difference`` is signed so that positive means better.
    """
    out = {}
    for task, single in single_metrics.items():
        metric = (primary or {}).get(task) or primary_metric(single["kind"])
        lower = lower_is_better(metric)
        st = _value(single.get(metric))
        mt = _value(multi_metrics.get(task, {}).get(metric))
        diff = math.nan if _missing(st) or _missing(mt) else (st - mt if lower else mt - st)
        out[task] = {"metric": metric, "lower_is_better": lower, "single_task": st, "multi_task": mt,
                     "difference": diff, "relative_percent": relative_change(mt, st, lower)}
    return out


def delta_m_of(deltas: Mapping[str, dict]) -> float:
    """Δm in percent from `task_deltas` output."""
    changes = [d["relative_percent"] for d in deltas.values()]
    if not changes or any(math.isnan(c) for c in changes):
        return math.nan
    return sum(changes) / len(changes)


def _value(value) -> float:
    return math.nan if value is None else float(value)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
