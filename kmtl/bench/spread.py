"""How far apart a benchmark figure's repeats are, and the warning printed under a disturbed one."""

from __future__ import annotations

from typing import Optional

SPREAD_WARN = 1.25  # a figure's repeats further apart than this (fastest / slowest): a disturbed figure


def spread(rates) -> float:
    """Fastest over slowest of a figure's repeats (1.0: all equal).

    Example:
        >>> round(spread([222.7, 211.0, 433.3]), 2)
        2.05
    """
    return max(rates) / min(rates)


def spread_warning(what: str, rates, unit: str) -> Optional[str]:
    """A warning line when ``what``'s repeats ``rates`` are more than `SPREAD_WARN` apart (the machine
    was disturbed while it was measured: another job, a throttled or migrated VM; a median over
    repeats, some of them disturbed, misleads), else None.

    Example:
        >>> spread_warning("ONNX Runtime token ids, batch 32", [222.7, 211.0, 433.3], "examples/s")[:52]
        'warning: ONNX Runtime token ids, batch 32: repeats r'
    """
    if len(rates) < 2 or spread(rates) <= SPREAD_WARN:
        return None
    return (f"warning: {what}: repeats ranged {min(rates):.1f}-{max(rates):.1f} {unit} ({spread(rates):.2f}x): "
            "the machine was disturbed while it was measured and the median may mislead; run the benchmark again")
