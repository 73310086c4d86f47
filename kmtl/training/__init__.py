"""Training: optimizer, strategy, run folders and the config-driven trainer."""

from kmtl.optimizer import WarmupLinearDecay, make_optimizer
from kmtl.run_files import load_run, save_run
from kmtl.training.strategy import choose_strategy
from kmtl.training.trainer import RunResult, make_tasks, train

__all__ = ["WarmupLinearDecay", "make_optimizer", "load_run", "save_run", "choose_strategy", "RunResult",
           "make_tasks", "train"]
