"""Loss-weighting strategies, one file each, all Keras callbacks on a `kmtl.MultiTaskModel`.

============================  ==========================  ===============================
name (YAML ``strategy``)      class                       paper
============================  ==========================  ===============================
``static``                    `StaticWeighting`           (fixed weights: the reference)
``linear``                    `LinearWeighting`           (a schedule over epochs)
``dwa``                       `DynamicWeightAverage`      Liu et al., CVPR 2019
``uncertainty``               `UncertaintyWeighting`      Kendall et al., CVPR 2018
``gradnorm``                  `GradNorm`                  Chen et al., ICML 2018
``pcgrad``                    `PCGrad`                    Yu et al., NeurIPS 2020
``rlw``                       `RandomLossWeighting`       Lin et al., TMLR 2022
============================  ==========================  ===============================
"""

from kmtl.registry import WEIGHTING
from kmtl.weighting.base import TaskWeighting
from kmtl.weighting.dwa import DynamicWeightAverage
from kmtl.weighting.gradnorm import GradNorm
from kmtl.weighting.pcgrad import PCGrad
from kmtl.weighting.random_weights import RandomLossWeighting
from kmtl.weighting.static import LinearWeighting, StaticWeighting
from kmtl.weighting.step import StepWeighting
from kmtl.weighting.uncertainty import UncertaintyWeighting

STRATEGIES = {name: entry.load() for name, entry in WEIGHTING.entries().items()}
"""``{name: class}``: every `TaskWeighting` subclass in kmtl/weighting/ that sets ``name``
(`kmtl.registry.WEIGHTING`, which the config schema reads too); a new file there is a new strategy."""


def get_weighting(name: str, **options) -> TaskWeighting:
    """The weighting callback called ``name`` (a key of `STRATEGIES`), built with ``options``.

    ``options`` are checked against the class's ``__init__`` signature (names, types,
    ranges), as the YAML ``weighting`` section is.

    Example:
        >>> get_weighting("gradnorm", alpha=1.0)
    """
    entry = WEIGHTING.get(name)  # ValueError listing the strategies
    return STRATEGIES[name](**entry.validate_options(options))


__all__ = ["TaskWeighting", "StepWeighting", "StaticWeighting", "LinearWeighting", "DynamicWeightAverage",
           "UncertaintyWeighting", "GradNorm", "PCGrad", "RandomLossWeighting", "STRATEGIES", "get_weighting"]
