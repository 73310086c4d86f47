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
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    if not models:
        raise ValueError("give at least one model")
    # TF Serving's own proto and printer: names and paths with quotes, backslashes or
    # non-ASCII characters are escaped as the server's parser expects.
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in models.items():
        config.model_config_list.config.add(name=str(name), base_path=str(base), model_platform="tensorflow")
    return text_format.MessageToString(config, as_utf8=True)


def write_models_config(path, models: Dict[str, str]) -> Path:
    """Write ``models.config`` atomically; use it with ``--model_config_file=PATH``.

    ``models`` maps each model name to the folder holding its integer versions, as the
    server will see it (e.g. the path inside the container).
    """
    return write_atomic(path, models_config_text(models))
