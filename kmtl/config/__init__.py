"""The run configuration: a YAML file validated once into frozen, typed pydantic models.

Example:
    >>> from kmtl.config import load_config, build_source
    >>> config = load_config("configs/sst2_conll_stsb.yaml")      # ConfigError lists every problem
    >>> task = config.task("sentiment")
    >>> examples = build_source(task.train).read()[: task.limit]
"""

from kmtl.config.load import build_source, config_from_dict, load_config
from kmtl.config.schema import (
    PAIR_KINDS,
    REGRESSION_KINDS,
    SOURCE_FORMATS,
    SOURCE_MODELS,
    Config,
    EarlyStoppingConfig,
    ExportConfig,
    MixtureConfig,
    SharingConfig,
    SourceConfig,
    TaskConfig,
    TaskKind,
    TrainingConfig,
    WeightingConfig,
)

__all__ = [
    "PAIR_KINDS",
    "REGRESSION_KINDS",
    "SOURCE_FORMATS",
    "SOURCE_MODELS",
    "Config",
    "EarlyStoppingConfig",
    "ExportConfig",
    "MixtureConfig",
    "SharingConfig",
    "SourceConfig",
    "TaskConfig",
    "TaskKind",
    "TrainingConfig",
    "WeightingConfig",
    "build_source",
    "config_from_dict",
    "load_config",
]
