"""Distillation from single-task teachers with teacher annealing.

Clark et al., "BAM! Born-Again Multi-Task Networks for Natural Language Understanding",
ACL 2019: each task's single-task model teaches the multi-task student; the student's target
is ``λ·gold + (1-λ)·teacher`` with λ rising linearly from 0 to 1 over training. Teachers'
soft targets are softmax probabilities (classification, tagging; soft cross-entropy),
sigmoid probabilities (multi-label) or scores (regression; squared error).

From a config: ``teachers: {sst2: runs/sst2_single, conll: runs/conll_single}`` (finished run
folders), or ``kmtl compare CONFIG --teachers`` to distil from the compare baselines.

Example:
    >>> tables = load_teacher_tables({"sst2": "runs/sst2"}, model.tasks, train_examples, pre)
    >>> annealing = TeacherAnnealing(total_steps)
    >>> model.compile(optimizer, weighted_metrics=gold_metrics(model.tasks))
    >>> model.fit(with_teachers(train_ds, model.tasks, tables), epochs=2, callbacks=[annealing])
"""

from kmtl.distill.annealing import GoldMetric, TeacherAnnealing, gold_metrics
from kmtl.distill.teachers import TeacherTable, example_keys, load_teacher_tables, with_teachers

__all__ = ["GoldMetric", "TeacherAnnealing", "gold_metrics", "TeacherTable", "example_keys",
           "load_teacher_tables", "with_teachers"]
