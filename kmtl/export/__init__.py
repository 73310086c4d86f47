"""Export: versioned SavedModels for TF Serving, and ONNX files of the ids → outputs graph."""

from kmtl.export.decode import decode, rows_from_outputs
from kmtl.export.models_config import models_config_text, write_models_config
from kmtl.export.onnx import export_onnx
from kmtl.export.saved_model import ServingGraph, export_saved_model
from kmtl.export.versions import atomic_version_dir, existing_versions, next_version
from kmtl.export.warmup import write_warmup

saved_model = export_saved_model

__all__ = ["decode", "rows_from_outputs", "ServingGraph", "export_saved_model", "export_onnx", "saved_model",
           "atomic_version_dir", "existing_versions", "next_version", "write_warmup", "models_config_text", "write_models_config"]
