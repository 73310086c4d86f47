"""README "From Python" runs as written: the tiny backbone and 40 examples a split, on ../shared/data."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _block(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here (a clone outside the project)")
def test_the_from_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = _block("## From Python (a notebook)")
    for old, new in [('kmtl.load_backbone("minilm-l6")', 'kmtl.load_backbone("tiny")'),
                     ("N = 2000", "N = 40"), ('DATA = "../shared/data"', f"DATA = {str(SHARED)!r}")]:
        assert old in code, f"README's example no longer has {old!r}: update this test with it"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(code, "README.md (From Python)", "exec"), namespace)

    out = capsys.readouterr().out
    assert "sentiment" in out and "entity_f1" in out  # the metrics table
    history = namespace["model"].history.history
    assert {"val_ner_entity_f1", "val_sentiment_macro_f1", "val_similarity_pearson", "loss_weight_ner"} <= set(history)
    assert os.path.isfile("mymodel.keras") and (tmp_path / "saved_models" / "mymodel" / "1" / "saved_model.pb").is_file()
    assert namespace["again"].tasks[2].labels == namespace["model"].tasks[2].labels
