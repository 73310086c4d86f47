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

from kmtl.weighting.base import TaskWeighting
from kmtl.weighting.dwa import DynamicWeightAverage
from kmtl.weighting.gradnorm import GradNorm
from kmtl.weighting.pcgrad import PCGrad
from kmtl.weighting.random_weights import RandomLossWeighting
from kmtl.weighting.static import LinearWeighting, StaticWeighting
from kmtl.weighting.step import StepWeighting
from kmtl.weighting.uncertainty import UncertaintyWeighting

STRATEGIES = {
    "static": StaticWeighting,
    "linear": LinearWeighting,
    "dwa": DynamicWeightAverage,
    "uncertainty": UncertaintyWeighting,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
    "rlw": RandomLossWeighting,
}


def get_weighting(name: str, **options) -> TaskWeighting:
    """The weighting callback called ``name`` (a key of `STRATEGIES`), built with ``options``.

    Example:
        >>> get_weighting("gradnorm", alpha=1.0)
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown weighting strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    try:
        return STRATEGIES[name](**options)
    except TypeError as err:
        import inspect

        valid = [p for p in inspect.signature(STRATEGIES[name]).parameters]
        raise ValueError(f"bad options for weighting {name!r} ({err}); its options are: {', '.join(valid)}") from None


__all__ = ["TaskWeighting", "StepWeighting", "StaticWeighting", "LinearWeighting", "DynamicWeightAverage",
           "UncertaintyWeighting", "GradNorm", "PCGrad", "RandomLossWeighting", "STRATEGIES", "get_weighting"]
