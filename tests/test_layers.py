"""Lower layers never import higher ones: the package's import graph follows `LAYERS`.

A part may import itself and the parts of lower layers, never a part of a higher layer (not
even inside a function). Adding a part means placing it here.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "kmtl"

LAYERS = [
    {"errors", "files", "keras_registration", "progress", "registry", "tf_startup", "defaults",
     "activations", "dropout", "layer_norm", "attention", "dense", "tape", "kernels"},  # leaves (the last
    # seven: float32 activations, 16-bit dropout, LayerNorm's backward, matmul attention, fused inference dense,
    # "in training?", C++ ops)
    {"data", "config"},                                                 # examples, sources, tf.data; the YAML schema
    {"tasks", "metrics"},                                               # task kinds, their metrics
    {"backbone", "sharing", "optimizer"},   # the encoder, how tasks share it; AdamW (finds the heads' layers)
    {"model"},                                                          # MultiTaskModel
    {"weighting", "distill", "run_files", "export", "evaluation", "plots"},
    {"serving", "training"},
    {"compare", "bench", "demo"},
    {"cli", "callbacks", "__init__", "__main__"},   # callbacks: the kmtl.callbacks.X facade
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    return module.split(".")[1] if module.startswith("kmtl.") else module


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("kmtl"):
            if node.module == "kmtl":
                yield from (f"kmtl.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("kmtl."))


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert parts - set(RANK) == set(), "place these parts in LAYERS"


def test_no_part_imports_a_higher_layer():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        part = relative.parts[0].removesuffix(".py")
        for module in _imports(path):
            target = _part(module)
            if target in RANK and part in RANK and RANK[target] > RANK[part]:
                upward.append(f"kmtl/{relative}: {part} imports {module}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
