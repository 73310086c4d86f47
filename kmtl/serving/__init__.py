"""Using an exported SavedModel: load it and predict from raw text."""
