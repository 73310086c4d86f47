"""Does multi-task help? Single-task baselines vs the multi-task model, Δm and reports.

| file | what |
|---|---|
| `baselines.py` | single-task configs derived from the multi-task config; the baseline cache |
| `chance.py` | each task's chance level (a constant predictor's dev score) and the at-chance flag |
| `report.py` | terminal table, ``compare.md``, ``compare.json``, TensorBoard scalars, figures |
| `run.py` | `compare`: trains what the cache lacks (once per seed) and writes the reports |
| `stats.py` | seeds: which ones run; mean, standard deviation, Student-t 95 % interval, verdict |

Δ and Δm (Maninis et al., CVPR 2019) are computed by `kmtl.evaluation.delta`, which
`kmtl.evaluation.retention` (a task added to a trained run: old tasks before vs after) shares.

Example:
    >>> from kmtl.compare import compare
    >>> report = compare(kmtl.config.load_config("configs/compare_four_tasks.yaml"))
    >>> report["delta_m"]          # percent; positive: the multi-task model is better
    >>> report = compare(config, seeds=3)                 # training.seed s, s+1, s+2
    >>> report["delta_m_ci95"], report["tasks"]["sst2"]["verdict"]     # e.g. "within noise"
"""

from kmtl.compare.baselines import BaselineCache, baseline_config, baseline_settings, settings_key
from kmtl.compare.chance import at_chance, chance_levels
from kmtl.compare.report import format_markdown, format_text, write_reports
from kmtl.compare.run import aggregate_seeds, compare, seed_config, served_parameters
from kmtl.compare.stats import resolve_seeds, summary, t_interval
from kmtl.evaluation.delta import delta_m, delta_m_of, primary_metric, relative_change, task_deltas

__all__ = ["BaselineCache", "baseline_config", "baseline_settings", "settings_key", "primary_metric", "delta_m",
           "delta_m_of", "relative_change", "task_deltas", "format_markdown", "format_text", "write_reports",
           "compare", "served_parameters", "aggregate_seeds", "seed_config", "at_chance", "chance_levels",
           "resolve_seeds", "summary", "t_interval"]
