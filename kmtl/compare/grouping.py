"""Which tasks to train together: TAG's network selection over an inter-task affinity matrix.

Fifty et al., "Efficiently Identifying Task Groupings in Multi-Task Learning" (NeurIPS 2021),
§3.2: given the lookahead affinities ``Z[i, j] = Z(i→j)`` (`kmtl.training.affinity`), the
affinity *onto* task ``j`` inside a group is the mean of ``Z(i→j)`` over the group's other
tasks ``i``; a grouping's score is the sum of that over all tasks (a task alone scores 0).
The suggested grouping into ``k`` groups is the partition with the highest score, found
here by trying every partition (a 7-task set has 877 partitions in all, 8 tasks 4,140), so
it is exact. Unlike TAG, groups do not overlap: each task is served by exactly one model.

Example:
    >>> z = [[0, .3, -.2], [.4, 0, -.1], [-.3, -.2, 0]]
    >>> best_grouping(z, ["a", "b", "c"], 2)
    Grouping(groups=(('a', 'b'), ('c',)), score=0.7)
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

MAX_TASKS = 10
"""The most tasks `rank_groupings` enumerates the partitions of (Bell(10) = 115,975)."""


@dataclasses.dataclass(frozen=True)
class Grouping:
    """One way to split the tasks into models.

    Attributes:
        groups: the groups, each a tuple of task names in the matrix's order.
        score: the sum over tasks of the mean affinity onto it from its group's other tasks.
    """

    groups: Tuple[Tuple[str, ...], ...]
    score: float

    def describe(self) -> str:
        """``"{a, b} {c}"``."""
        return " ".join("{" + ", ".join(group) + "}" for group in self.groups)


def partitions(n: int, k: int) -> Iterator[List[int]]:
    """Every partition of ``range(n)`` into exactly ``k`` non-empty groups, as a group index
    per item (restricted growth strings: item 0 in group 0, each item at most one group past
    the highest so far), so each partition comes once.

    Example:
        >>> list(partitions(3, 2))
        [[0, 0, 1], [0, 1, 0], [0, 1, 1]]
    """
    if not 1 <= k <= n:
        return
    labels = [0] * n

    def fill(i: int, used: int):
        if n - i < k - used:  # not enough items left to open the missing groups
            return
        if i == n:
            if used == k:
                yield list(labels)
            return
        for g in range(min(used + 1, k)):
            labels[i] = g
            yield from fill(i + 1, max(used, g + 1))

    if n:
        yield from fill(1, 1)


def grouping_score(affinity, groups: Sequence[Sequence[int]]) -> float:
    """The score of ``groups`` (lists of task indices) under ``affinity[i][j] = Z(i→j)``:
    for each task ``j`` the mean of ``Z(i→j)`` over the other tasks ``i`` of its group,
    summed; NaN entries count as 0.

    Example:
        >>> grouping_score([[0, .3], [.1, 0]], [[0, 1]])   # .1 onto 0, .3 onto 1
        0.4
    """
    z = np.nan_to_num(np.asarray(affinity, dtype=np.float64))
    score = 0.0
    for group in groups:
        if len(group) < 2:
            continue
        for j in group:
            score += sum(z[i, j] for i in group if i != j) / (len(group) - 1)
    return float(score)


def rank_groupings(affinity, names: Sequence[str], k: int, top: Optional[int] = None) -> List[Grouping]:
    """The partitions of ``names`` into ``k`` groups, best score first (ties: by the groups' order).

    Args:
        affinity: ``[tasks, tasks]``, ``affinity[i][j] = Z(i→j)`` (the diagonal is not used).
        names: the task names, in the matrix's order.
        k: the number of groups, 1 to ``len(names)``.
        top: keep only the best ``top`` (default: all).

    Raises:
        ValueError: for ``k`` out of range, a matrix of the wrong shape, or more than
            `MAX_TASKS` tasks.
    """
    names = list(names)
    n = len(names)
    z = np.asarray(affinity, dtype=np.float64)
    if z.shape != (n, n):
        raise ValueError(f"the affinity matrix is {z.shape}; {n} task names need ({n}, {n})")
    if not 1 <= k <= n:
        raise ValueError(f"a grouping of {n} tasks has 1 to {n} groups, not {k}")
    if n > MAX_TASKS:
        raise ValueError(f"{n} tasks: trying every grouping stops at {MAX_TASKS} tasks")
    found = []
    for labels in partitions(n, k):
        groups = [[i for i in range(n) if labels[i] == g] for g in range(k)]
        named = tuple(tuple(names[i] for i in group) for group in groups)
        found.append(Grouping(named, round(grouping_score(z, groups), 12)))
    found.sort(key=lambda g: -g.score)  # stable: partitions come in a fixed order
    return found[:top] if top else found


def best_grouping(affinity, names: Sequence[str], k: int) -> Grouping:
    """The best partition of ``names`` into ``k`` groups (`rank_groupings`' first)."""
    return rank_groupings(affinity, names, k, top=1)[0]


def suggest_groupings(affinity, names: Sequence[str], ks: Optional[Sequence[int]] = None) -> Dict[int, Grouping]:
    """``{k: best grouping into k groups}`` for each ``k`` in ``ks`` (default: 1 to the number of tasks).

    Example:
        >>> {k: g.describe() for k, g in suggest_groupings(z, ["a", "b", "c"]).items()}
        {1: '{a, b, c}', 2: '{a, b} {c}', 3: '{a} {b} {c}'}
    """
    ks = list(ks) if ks is not None else list(range(1, len(names) + 1))
    return {k: best_grouping(affinity, names, k) for k in ks}


def bell(n: int) -> int:
    """How many partitions ``n`` tasks have (the Bell number): ``bell(8) == 4140``."""
    row = [1]
    for _ in range(n):
        nxt = [row[-1]]
        for value in row:
            nxt.append(nxt[-1] + value)
        row = nxt
    return row[0] if n else 1


__all__ = ["Grouping", "MAX_TASKS", "partitions", "grouping_score", "rank_groupings", "best_grouping",
           "suggest_groupings", "bell"]
