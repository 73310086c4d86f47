"""TF Serving's ``models.config``: serve several exported models from one server."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from kmtl.files import write_atomic


def models_config_text(models: Dict[str, str]) -> str:
    """The text-format ``ModelServerConfig`` for ``{model name: base path}``.

    Example:
        >>> print(models_config_text({"demo": "/models/demo"}))
        model_config_list {
          config {
            name: "demo"
            base_path: "/models/demo"
            model_platform: "tensorflow"
          }
        }
    """
    if not models:
        raise ValueError("give at least one model")
    lines = ["model_config_list {"]
    for name, base in models.items():
        lines += ["  config {", f'    name: "{name}"', f'    base_path: "{base}"',
                  '    model_platform: "tensorflow"', "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def write_models_config(path, models: Dict[str, str]) -> Path:
    """Write ``models.config`` atomically; use it with ``--model_config_file=PATH``.

    ``models`` maps each model name to the folder holding its integer versions, as the
    server will see it (e.g. the path inside the container).
    """
    return write_atomic(path, models_config_text(models))
