"""Shared fixtures: the real datasets beside the repo, and a tiny random backbone."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# training.precision: auto resolves to float32 in the tests, whatever the CPU (bfloat16 on CPUs with
# AVX512-BF16/AMX would loosen the tolerances of exactness tests); tests of auto itself unset it
os.environ.setdefault("KMTL_PRECISION", "float32")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real public datasets); skips where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found (only CI and dev machines have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny():
    """A tiny random 2-layer BERT encoder with a small vocabulary (fast), shared by the session.

    Read-only: a test that trains must build its own (``kmtl.backbone.tiny_encoder()``), or
    later tests see its changed weights.
    """
    from kmtl.backbone import tiny_encoder

    return tiny_encoder(seed=0)


def write(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) creating parent folders; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
