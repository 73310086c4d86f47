"""TF Serving's ``models.config``: serve several exported models from one server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict


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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(models_config_text(models), encoding="utf-8")
    os.replace(tmp, path)
    return path
