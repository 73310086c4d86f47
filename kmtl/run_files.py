"""A run folder: what it holds and how to rebuild the trained model from it."""

from __future__ import annotations

import json
from pathlib import Path

from kmtl.errors import KmtlError
from kmtl.files import atomic_path, write_atomic

RUN_FILE = "run.json"
WEIGHTS_FILE = "model.weights.h5"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


def save_run(run_dir: Path, model, max_length: int, extra: dict = None) -> None:
    """Save the trained weights and what is needed to rebuild the model (tasks, labels...).

    ``model.weights.h5`` holds the model's weights only, not the optimizer's state: its
    readers (`load_run`: ``kmtl evaluate`` / ``export`` / ``init_from`` / teachers) build an
    uncompiled model, and resuming reads the step backup (`kmtl.training.backup`), so Adam's
    two moments per weight would only triple the file.

    Example:
        >>> save_run(Path("runs/demo"), model, 128, {"name": "demo"})
    """
    import keras

    run_dir = Path(run_dir)
    optimizer = getattr(model, "optimizer", None)
    with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
        keras.saving.save_weights(model, str(tmp), objects_to_skip=[optimizer] if optimizer is not None else None)
    info = {
        "backbone": model.encoder_spec,
        "max_length": max_length,
        "pooling": model.pooling,
        "sharing": model.sharing,
        "sharing_options": getattr(model, "sharing_options", {}),  # kmtl.sharing.sharing_from_config
        "tasks": [t.get_config() for t in model.tasks],
        **(extra or {}),
    }
    write_atomic(run_dir / RUN_FILE, json.dumps(info, indent=2) + "\n")


def load_run(run_dir):
    """Rebuild ``(model, preprocessor, info)`` from a finished run folder.

    Example:
        >>> model, pre, info = load_run("runs/demo")
    """
    from kmtl import tasks as task_kinds
    from kmtl.backbone import load_backbone
    from kmtl.model import build_model
    from kmtl.sharing import sharing_from_config

    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file() or not (run_dir / WEIGHTS_FILE).is_file():
        raise KmtlError(
            f"{run_dir} is not a finished kmtl run (no {RUN_FILE} / {WEIGHTS_FILE}); give the folder "
            "that `kmtl train` wrote (<output_dir>/<name>)"
        )
    info = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    encoder = load_backbone(info["backbone"])
    tasks = [task_kinds.from_config(t) for t in info["tasks"]]
    # runs written before sharing_options existed record the mode and lora_rank only
    sharing = (sharing_from_config(info["sharing"], info["sharing_options"]) if "sharing_options" in info
               else info["sharing"])
    old = {"lora_rank": info["lora_rank"]} if "sharing_options" not in info and "lora_rank" in info else {}
    model = build_model(encoder, tasks, pooling=info["pooling"], sharing=sharing, name=info.get("name", "kmtl"),
                        max_length=info["max_length"], **old)
    model.load_weights(str(run_dir / WEIGHTS_FILE))
    return model, model.preprocessor, info
