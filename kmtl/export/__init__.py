"""Export: versioned SavedModels for TF Serving."""

from kmtl.export.saved_model import ServingModule, export_saved_model
from kmtl.export.versions import atomic_version_dir, existing_versions, next_version

saved_model = export_saved_model

__all__ = ["ServingModule", "export_saved_model", "saved_model", "atomic_version_dir", "existing_versions", "next_version"]
