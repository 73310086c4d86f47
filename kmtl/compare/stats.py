"""Seeds in `kmtl compare`: which seeds run, and each figure's mean, spread and 95 % interval.

One seed cannot tell a Δ of −0.46 points from noise (the standard error of an SST-2 accuracy
on 872 dev examples is about 1.3 points). With ``--seeds N`` every baseline and the
multi-task model train once per seed, and each per-task Δ is *paired by seed* (the seed-k
multi-task model against the seed-k baselines): its mean, the sample standard deviation of
the per-seed Δ, and a Student-t 95 % interval ``mean ± t(0.975, n-1) · sd / √n`` (scipy).
A Δ whose interval contains 0 is *within noise*; Δm gets the same treatment over its
per-seed values.

Example:
    >>> resolve_seeds(0, 3), resolve_seeds(7, [0, 1, 5]), resolve_seeds(4, None)
    ([0, 1, 2], [0, 1, 5], [4])
    >>> summary([1.0, 2.0, 3.0])["ci95"]
    [-0.484..., 4.484...]
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Union

from kmtl.errors import KmtlError

CONFIDENCE = 0.95
"""The level of the intervals the report gives (a two-sided Student-t interval)."""

VERDICT_BETTER = "multi-task better"
VERDICT_WORSE = "multi-task worse"
VERDICT_NOISE = "within noise"
VERDICT_ONE_SEED = "one seed: no spread"
VERDICT_NONE = "n/a"


def resolve_seeds(base: int, seeds: Union[None, int, Sequence[int]]) -> List[int]:
    """The seeds a compare runs: ``None`` → ``[base]`` (the config's ``training.seed``); a count
    ``n`` → ``[base, base+1, ..., base+n-1]``; a list → itself (no repeats, each ≥ 0).

    Raises:
        KmtlError: a count below 1, an empty list, a repeated, negative or non-integer seed.
    """
    if seeds is None:
        return [int(base)]
    if isinstance(seeds, bool):
        raise KmtlError(f"seeds must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise KmtlError(f"seeds: a count of at least 1 (3: seeds {base}, {base + 1}, {base + 2}), got {seeds}")
        return [int(base) + k for k in range(seeds)]
    chosen = list(seeds)
    if not chosen:
        raise KmtlError("seeds: the list is empty; give a count (3) or seeds (0,1,5)")
    for s in chosen:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise KmtlError(f"seeds: {s!r} is not a seed (an integer ≥ 0)")
    repeated = sorted({s for s in chosen if chosen.count(s) > 1})
    if repeated:
        raise KmtlError(f"seeds: {', '.join(map(str, repeated))} given twice; each seed runs once")
    return chosen


def finite(values) -> List[float]:
    """The values that are numbers (``None`` and NaN dropped)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Optional[List[float]]:
    """``[low, high]``: the two-sided Student-t interval of the mean of ``values`` (``None``
    under two values: one value has no spread).

    Example:
        >>> t_interval([1.0, 2.0, 3.0])     # 2 ± t(0.975, 2) · 1 / √3
        [-0.484..., 4.484...]
    """
    from scipy import stats

    values = finite(values)
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = _sd(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def summary(values: Sequence[float]) -> Dict[str, object]:
    """``{"n", "mean", "sd", "ci95"}`` of the finite ``values``: ``sd`` is the sample standard
    deviation (n − 1) and ``ci95`` the `t_interval`; both ``None`` under two values, ``mean``
    NaN with none."""
    values = finite(values)
    n = len(values)
    return {"n": n, "mean": sum(values) / n if n else math.nan, "sd": _sd(values) if n >= 2 else None,
            "ci95": t_interval(values)}


def contains_zero(interval: Optional[Sequence[float]]) -> bool:
    """Whether ``[low, high]`` holds 0 (a Δ within noise)."""
    return interval is not None and interval[0] <= 0.0 <= interval[1]


def verdict(stats: Dict[str, object]) -> str:
    """What a paired Δ's `summary` says: `VERDICT_NOISE` when its interval holds 0, better or
    worse when it does not, `VERDICT_ONE_SEED` with one value, `VERDICT_NONE` with none."""
    if stats["n"] == 0:
        return VERDICT_NONE
    if stats["ci95"] is None:
        return VERDICT_ONE_SEED
    if contains_zero(stats["ci95"]):
        return VERDICT_NOISE
    return VERDICT_BETTER if stats["mean"] > 0 else VERDICT_WORSE


def _sd(values: Sequence[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
