"""Loss-weighting strategies, one file each, all `TaskWeighting` callbacks."""

from kmtl.weighting.base import TaskWeighting
from kmtl.weighting.static import LinearWeighting, StaticWeighting

STRATEGIES = {"static": StaticWeighting, "linear": LinearWeighting}

__all__ = ["TaskWeighting", "StaticWeighting", "LinearWeighting", "STRATEGIES"]
