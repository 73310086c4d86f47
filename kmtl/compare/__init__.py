"""Does multi-task help? Single-task baselines vs the multi-task model, Δm and reports.

| file | what |
|---|---|
| `baselines.py` | single-task configs derived from the multi-task config; the baseline cache |
| `report.py` | terminal table, ``compare.md``, ``compare.json``, TensorBoard scalars |
| `run.py` | `compare`: trains what the cache lacks and writes the reports |

Δ and Δm (Maninis et al., CVPR 2019) are computed by `kmtl.evaluation.delta`, which
`kmtl.evaluation.retention` (a task added to a trained run: old tasks before vs after) shares.

Example:
    >>> from kmtl.compare import compare
    >>> report = compare(kmtl.config.load_config("configs/compare_four_tasks.yaml"))
    >>> report["delta_m"]          # percent; positive: the multi-task model is better
"""

from kmtl.compare.baselines import BaselineCache, baseline_config, baseline_settings, settings_key
from kmtl.compare.report import format_markdown, format_text, write_reports
from kmtl.compare.run import compare, served_parameters
from kmtl.evaluation.delta import delta_m, delta_m_of, primary_metric, relative_change, task_deltas

__all__ = ["BaselineCache", "baseline_config", "baseline_settings", "settings_key", "primary_metric", "delta_m",
           "delta_m_of", "relative_change", "task_deltas", "format_markdown", "format_text", "write_reports",
           "compare", "served_parameters"]
