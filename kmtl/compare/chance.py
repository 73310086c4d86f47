"""The chance level of each task: the score of a model that learnt nothing, and the flag of a
single- or multi-task score that sits on it.

A task that stays at its majority class in both the single-task and the multi-task run (an
entailment task at 0.54 accuracy, say) gives a Δ of two untrained models; `kmtl compare`
flags it so that such a Δ is never read as a result.

The level is the task's own `Task.evaluate` on its dev split of a *constant* predictor fitted
on the training split, so it is in the task's metrics, whichever the primary one is:

================================  =======================================================
kind                              constant prediction
================================  =======================================================
classification, pair_, relation   the most frequent training label (majority-class
                                  accuracy; its macro-F1 for a macro-F1 metric, SemEval's
                                  for relations)
multilabel                        each label that most training examples carry
tagging                           the most frequent training tag on every word (``O``:
                                  entity F1 0)
regression, pair_regression       the training mean (MSE of the mean; Pearson and
                                  Spearman of a constant are 0 by definition)
other kinds (span QA, MLM, own)   none: such a task is never flagged
================================  =======================================================

A score is *at chance* when it is within `MARGIN` of the level (``≤ level + 0.01`` for a
higher-is-better score in [0, 1], ``≥ level · 0.99`` for an error or a loss) and, for a
correlation, when ``|r| < CORRELATION_MARGIN`` (0.1). The levels are cached per task in
``<output_dir>/baselines/chance/<task>-<key>.json``, keyed like a baseline by the task's
section and the size and time of its data files; they need no training.

Example:
    >>> levels = chance_levels(config, "runs/baselines")
    >>> levels["rte"]["metrics"]["accuracy"], levels["rte"]["how"]
    (0.527..., "always 'not_entailment', the most frequent training label")
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Optional

from kmtl.compare.baselines import file_stamps, settings_key
from kmtl.evaluation.delta import lower_is_better
from kmtl.files import json_safe, write_atomic

CHANCE_FOLDER = "chance"
MARGIN = 0.01
"""How far above its chance level a higher-is-better score in [0, 1] still counts as at chance
(1 point), and, relative, how far below it an error does (1 %)."""
CORRELATION_MARGIN = 0.1
"""A correlation (Pearson, Spearman) with ``|r|`` under this is at chance."""
CORRELATIONS = frozenset({"pearson", "spearman"})
_FORMAT = 1  # bump when the constant predictors change: cached levels are then recomputed


def level_of(chance: Optional[dict], metric: str) -> Optional[float]:
    """The chance level of ``metric`` from a `chance_levels` entry (0 for a correlation;
    ``None`` where there is none)."""
    if metric in CORRELATIONS:
        return 0.0 if chance is not None and chance.get("metrics") is not None else None
    value = ((chance or {}).get("metrics") or {}).get(metric)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def at_chance(score, metric: str, level: Optional[float]) -> bool:
    """Whether ``score`` of ``metric`` sits at the chance ``level`` (see the module's margins);
    ``False`` for a missing score or level.

    Example:
        >>> at_chance(0.54, "accuracy", 0.535), at_chance(0.56, "accuracy", 0.535), at_chance(0.05, "pearson", 0.0)
        (True, False, True)
    """
    if level is None or score is None or not math.isfinite(float(score)):
        return False
    score = float(score)
    if metric in CORRELATIONS:
        return abs(score) < CORRELATION_MARGIN
    if lower_is_better(metric):
        return score >= level - MARGIN * abs(level)
    return score <= level + MARGIN


def describe_margin(metric: str, level: float) -> str:
    """The rule `at_chance` applied, in words: ``"≤ 0.5400 + 0.01"``."""
    if metric in CORRELATIONS:
        return f"|{metric}| < {CORRELATION_MARGIN}"
    if lower_is_better(metric):
        return f"≥ {level:.4f} − 1 %"
    return f"≤ {level:.4f} + {MARGIN}"


def chance_levels(config, cache_root=None, echo=None) -> Dict[str, dict]:
    """Every task's constant-predictor dev metrics, from the cache or computed.

    Args:
        config: the compare's config (its tasks and data sources).
        cache_root: the folder of the cached levels' ``chance/`` (`BaselineCache.root`);
            ``None``: no cache.
        echo: where to say that a level could not be computed (``None``: nowhere).

    Returns:
        ``{task: {"kind", "how", "metrics"}}``; ``metrics`` is ``None`` for a kind without a
        constant predictor, or when the data could not be read (``how`` says why).
    """
    out = {}
    for tc in config.tasks:
        key = settings_key({"format": _FORMAT, "task": tc.model_dump(mode="json"), "files": file_stamps(tc)})
        path = Path(cache_root) / CHANCE_FOLDER / f"{tc.name}-{key}.json" if cache_root is not None else None
        record = _read(path)
        if record is None:
            try:
                record = {"kind": tc.kind, **constant_predictor(tc)}
            except Exception as err:  # noqa: BLE001 - a flag the report adds must not lose a finished compare
                record = {"kind": tc.kind, "how": f"not computed ({type(err).__name__}: {err})", "metrics": None}
                if echo is not None:
                    echo(f"chance level of {tc.name}: {record['how']}")
            else:
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(path, json.dumps(json_safe(record), indent=2, sort_keys=True) + "\n")
        out[tc.name] = record
    return out


def constant_predictor(task_config) -> dict:
    """``{"how", "metrics"}``: the constant prediction of ``task_config``'s kind (see the
    module's table), fitted on its training split and scored by the task's own `evaluate` on
    its dev split."""
    from kmtl.tasks import Classification, MultiLabelClassification, Regression, Tagging
    from kmtl.training import make_tasks
    from kmtl.training.data import read_split

    train = read_split(task_config.train, task_config.limit)
    dev = [ex for ex in read_split(task_config.dev, task_config.dev_cap) if ex.label is not None]
    labelled = [ex for ex in train if ex.label is not None]
    task = make_tasks(SimpleNamespace(tasks=[task_config]), {task_config.name: labelled}, echo=lambda *a: None)[0]
    if isinstance(task, Classification):
        label = Counter(str(ex.label).strip() for ex in labelled).most_common(1)[0][0]
        how = f"always {label!r}, the most frequent training label"
        predictions = [{"label": label} for _ in dev]
    elif isinstance(task, MultiLabelClassification):
        share = task.encode_labels(labelled).mean(axis=0)
        chosen = [label for label, p in zip(task.labels, share) if p > 0.5]
        how = f"always {chosen}, the labels most training examples carry" if chosen else "always no label"
        predictions = [{"labels": chosen} for _ in dev]
    elif isinstance(task, Tagging):
        tag = Counter(t for ex in labelled for t in task.bio_tags(ex)).most_common(1)[0][0]
        how = f"always {tag!r}, the most frequent training tag"
        predictions = [{"tags": [tag] * len(ex.label)} for ex in dev]
    elif isinstance(task, Regression):
        mean = float(task.encode_labels(labelled)[:, 0].mean())
        how = f"always {mean:.4g}, the training mean (correlation 0)"
        predictions = [{"score": mean} for _ in dev]
    else:
        return {"how": f"no constant predictor for kind {task_config.kind!r}: never flagged", "metrics": None}
    metrics = task.evaluate(dev, predictions)
    # finite numbers only (a constant's Pearson is NaN, read as 0 by `level_of`): as the cache stores them
    return {"how": how, "metrics": {k: float(v) for k, v in metrics.items()
                                    if isinstance(v, (int, float)) and math.isfinite(float(v))}}


def _read(path) -> Optional[dict]:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
