"""The result store the quality benchmarks share: ``benchmarks/results/<name>.json`` (one row
per measured key, saved after each run, so an interrupted benchmark keeps what it measured) and
its markdown report ``<name>.md``.

    rows = measure("mlm-aux", {"no_mlm": lambda: run(None)})   # runs only the keys not stored yet
    publish("mlm-aux", "# title\\n\\n" + table(rows))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict

RESULTS = Path(__file__).resolve().parent / "results"


def measure(name: str, runs: Dict[str, Callable[[], dict]], again: bool = False) -> dict:
    """The stored rows of ``<name>.json`` with every key of ``runs`` measured: a key already
    stored is kept unless ``again``; the store is rewritten after each run."""
    RESULTS.mkdir(exist_ok=True)
    store = RESULTS / f"{name}.json"
    rows = json.loads(store.read_text()) if store.exists() else {}
    for key, run in runs.items():
        if key in rows and not again:
            continue
        rows[key] = run()
        store.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def publish(name: str, text: str) -> None:
    """Write the report ``<name>.md`` and print it."""
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
