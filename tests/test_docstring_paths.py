"""Docstring examples that name a file of this repository (or of ../shared/data) name one that exists.

A bare file name (``"reviews.csv"``) stands for the user's own file and is not checked; nor are
outputs (``runs/...``, ``saved_models/...``) and absolute paths.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PATH = re.compile(r"""["']((?:\.\./|[\w.-]+/)[\w./-]*\.(?:tsv|txt|csv|jsonl|json|yaml|yml|conll|keras|h5))["']""")
OUTPUTS = ("runs/", "saved_models/", "logs/")


def _named_paths():
    for source in sorted((ROOT / "kmtl").rglob("*.py")):
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if ">>>" in line or "..." in line.lstrip()[:4]:
                for path in PATH.findall(line):
                    if not path.startswith(OUTPUTS):
                        yield f"{source.relative_to(ROOT)}:{number}", path


def test_docstring_examples_name_files_that_exist():
    named = list(_named_paths())
    assert len(named) >= 8, "the scan found too few example paths: is the pattern broken?"
    missing = []
    for where, path in named:
        if path.startswith("../shared/data/"):
            if not SHARED.is_dir():
                continue  # a user's clone has no shared data
            target = SHARED / path[len("../shared/data/"):]
        else:
            target = ROOT / path
        if not target.exists():
            missing.append(f"{where}: {path}")
    assert not missing, "docstring examples name files that do not exist:\n" + "\n".join(missing)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here (a clone outside the project)")
def test_the_shared_data_examples_are_checked():
    assert any(p.startswith("../shared/data/") for _, p in _named_paths())
