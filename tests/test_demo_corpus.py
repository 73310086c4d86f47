"""The shipped demo corpus is what tools/make_demo_corpus.py builds (nothing edited by hand)."""

import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "kmtl" / "demo" / "corpus"


def _builder():
    spec = importlib.util.spec_from_file_location("make_demo_corpus", ROOT / "tools" / "make_demo_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rebuilding_the_demo_corpus_reproduces_the_shipped_files(tmp_path):
    written = _builder().write_corpus(tmp_path)
    assert written, "the builder wrote nothing"
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    shipped = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    assert names == shipped
    for name in names:
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), f"{name} differs from a rebuild"


def test_another_seed_gives_another_corpus(tmp_path):
    builder = _builder()
    builder.write_corpus(tmp_path / "a", seed=1)
    assert (tmp_path / "a" / "sentiment" / "train.tsv").read_bytes() != (CORPUS / "sentiment" / "train.tsv").read_bytes()


def test_the_builder_is_not_in_the_installed_package():
    import kmtl.demo

    assert not (Path(kmtl.demo.__file__).parent / "make_corpus.py").exists()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("kmtl.demo.make_corpus")


