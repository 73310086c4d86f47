"""Read every task's train/dev examples from the sources a config names."""

from __future__ import annotations

from typing import Dict, List, Tuple

from kmtl.config import build_source


def read_task_examples(config) -> Tuple[Dict[str, List], Dict[str, List]]:
    """``(train, dev)`` dicts of `Example` lists per task name (dev empty where none is given).

    ``limit`` on a task keeps its first ``limit`` examples of each split; ``dev_limit``
    overrides it for the dev split (``all``: the whole split).
    """
    train, dev = {}, {}
    for task in config.tasks:
        train[task.name] = read_split(task.train, task.limit)
        dev[task.name] = read_split(task.dev, task.dev_cap) if task.dev is not None else []
    return train, dev


def read_split(source_cfg, limit):
    """One split's examples from its validated source section, the first ``limit`` (all: ``None``)."""
    examples = build_source(source_cfg, limit=limit).read()
    return examples[:limit] if limit else examples
