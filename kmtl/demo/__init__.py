"""The bundled demo: a small synthetic three-task corpus and its config (`kmtl demo`)."""

from pathlib import Path

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
