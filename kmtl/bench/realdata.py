"""The real-data benchmark mixture: SST-2, CoNLL-2003, STS-B and AG News from ``../shared/data``.

Four tasks, one head each, as a user would mix them: sentiment (SST-2 ``train.tsv``), named
entities (CoNLL-2003 ``train.txt``), similarity (STS-B ``train.tsv``, sentence pairs) and topic
(AG News ``dev.tsv``, the split meant for training). The first ``limit`` examples of each file
are taken, texts as they come (no length filter; longer ones are truncated to ``max_length``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from kmtl.errors import KmtlError

DEFAULT_LIMIT = 2000
ENV_DATA_DIR = "KMTL_SHARED_DATA"
FILES = {
    "sst2": "sst2/train.tsv",
    "conll": "conll2003/train.txt",
    "stsb": "stsb/train.tsv",
    "ag_news": "ag_news/dev.tsv",
}


def default_data_dir() -> Path:
    """``$KMTL_SHARED_DATA`` if set, else ``../shared/data`` from the current directory."""
    return Path(os.environ.get(ENV_DATA_DIR, "../shared/data"))


def check_data_dir(data_dir) -> Path:
    """The folder, or a `KmtlError` naming the files that are missing."""
    data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser()
    missing = [rel for rel in FILES.values() if not (data_dir / rel).is_file()]
    if missing:
        raise KmtlError(f"--data real needs {', '.join(missing)} under {data_dir}; point --data-dir (or "
                        f"${ENV_DATA_DIR}) at the shared data folder, or use --data fixed")
    return data_dir


def real_tasks_and_examples(data_dir=None, limit: Optional[int] = DEFAULT_LIMIT) -> Tuple[List, Dict[str, list], float]:
    """``(tasks, train examples by task, seconds spent reading)`` for the four-task mixture.

    Args:
        data_dir: the shared data folder (`default_data_dir` when ``None``).
        limit: first ``limit`` examples of each file (``None``: whole files).

    Example:
        >>> tasks, examples, seconds = real_tasks_and_examples("../shared/data", limit=200)
        >>> [t.name for t in tasks]
        ['sst2', 'conll', 'stsb', 'ag_news']
    """
    if limit is not None and limit < 0:
        raise KmtlError(f"--limit must be 0 (whole files) or more, got {limit}")
    data_dir = check_data_dir(data_dir)
    from kmtl.data.sources import ConllSource, TsvSource
    from kmtl.tasks import Classification, PairRegression, Tagging

    sources = {
        "sst2": TsvSource(data_dir / FILES["sst2"], text="sentence", label="label"),
        "conll": ConllSource(data_dir / FILES["conll"]),
        "stsb": TsvSource(data_dir / FILES["stsb"], text="sentence1", text_pair="sentence2", label="score"),
        "ag_news": TsvSource(data_dir / FILES["ag_news"], text=0, label=1, header=False),
    }
    start = time.perf_counter()
    examples = {name: src.read()[:limit] if limit else src.read() for name, src in sources.items()}
    seconds = time.perf_counter() - start
    tasks = [Classification("sst2", ["0", "1"]), Tagging("conll"), PairRegression("stsb"), Classification("ag_news")]
    for task in tasks:
        task.fit_labels(examples[task.name])
    return tasks, examples, seconds
