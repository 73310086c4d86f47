"""Teacher targets for distillation: predicted once, looked up per batch by the example's tokens.

Each teacher-covered task's training examples go through its teacher once (before training);
the soft targets (probabilities, or scores for regression) are stored in a table keyed by
what the student's pipeline feeds the model (the task index and the token ids, without
padding). `with_teachers` maps a training dataset so that ``y[task]`` becomes
``{"gold": labels, "teacher": targets}``, which every `kmtl.tasks.Task.per_example_loss`
hands to `Task.distillation_loss`. The model's train step is untouched.

Example:
    >>> table = TeacherTable.from_run("runs/baselines/sst2-3f0c...", student_task, model.tasks,
    ...                               train_examples["sst2"], preprocessor)
    >>> train_ds = with_teachers(train_ds, model.tasks, {"sst2": table})
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from kmtl.data.pipeline import eval_dataset
from kmtl.errors import KmtlError


def example_keys(x) -> tf.Tensor:
    """``[batch]`` strings ``"<task_id>:<id>,<id>,..."`` of a batch's inputs, padding left out."""
    lengths = tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1)
    ids = tf.RaggedTensor.from_tensor(tf.cast(x["token_ids"], tf.int32), lengths=lengths)
    body = tf.strings.reduce_join(tf.strings.as_string(ids), axis=1, separator=",")
    return tf.strings.as_string(tf.cast(x["task_id"], tf.int32)) + ":" + body


def _word_outputs(model, task, examples, preprocessor, batch_size):
    """Per example: raw head outputs (sentence tasks) or ``[words, C]`` at first pieces (NaN
    rows for words the teacher's max length cut off)."""
    out = []
    for x, aux in eval_dataset(task, model.tasks, examples, preprocessor, batch_size):
        outputs = np.asarray(model.predict_on_batch(x)[task.name])
        if not task.token_level:  # one target per row (span QA: per window)
            out.extend(outputs)
            continue
        first = np.asarray(aux["first_piece"])
        for row in range(len(outputs)):
            n = int(np.sum(first[row] >= 0)) if first.shape[1] else 0
            words = np.full((first.shape[1], outputs.shape[-1]), np.nan, np.float32)
            words[:n] = outputs[row, first[row, :n]]
            out.append(words)
    return out


class TeacherTable:
    """One task's teacher targets, keyed by the student's encoded inputs.

    Args:
        task: the student's task (its label order is the one targets follow).
        keys: ``[N]`` byte strings from `example_keys` of the student's encoding.
        values: ``[N, C]`` (sentence tasks, ``[N, 1]`` for regression) or ``[N, max_length, C]``
            (token tasks, at the student's first pieces) targets.
    """

    def __init__(self, task, keys: Sequence[bytes], values: np.ndarray):
        self.task = task
        unique, rows = {}, []
        for i, key in enumerate(keys):  # identical inputs: identical targets
            if key not in unique:
                unique[key] = len(rows)
                rows.append(i)
        self.keys = list(unique)
        self.values = np.asarray(values, np.float32)[rows]
        self._table = None

    @classmethod
    def from_model(cls, teacher, teacher_task, teacher_pre, task, tasks, examples, preprocessor, batch_size=64):
        """Predict ``examples`` with ``teacher`` (its head ``teacher_task``) and key the targets
        by the student's encoding (``task`` among ``tasks`` with ``preprocessor``)."""
        examples = list(examples)
        perm = _label_permutation(teacher_task, task)
        outputs = _word_outputs(teacher, teacher_task, examples, teacher_pre, batch_size)
        keys, values = [], []
        start = 0
        for x, aux in eval_dataset(task, tasks, examples, preprocessor, batch_size):
            keys.extend(k for k in example_keys(x).numpy())
            n = int(tf.shape(x["token_ids"])[0])
            if not task.one_row_per_example and len(outputs) < start + n:
                raise _windows_differ(task, teacher_pre, preprocessor)
            for i in range(start, start + n):
                target = outputs[i]
                if task.token_level:
                    target = _place_words(task, target, np.asarray(aux["first_piece"])[i - start],
                                          examples[i], preprocessor.max_length, perm)
                elif task.position_outputs:  # span QA: a row (window) per target, padded to max_length
                    target = task.teacher_targets(target[None])[0][:preprocessor.max_length]
                    target = np.pad(target, [(0, preprocessor.max_length - len(target)), (0, 0)])
                else:
                    target = task.teacher_targets(target[None])[0]
                    target = target[perm] if perm is not None else target
                values.append(target)
            start += n
        if not task.one_row_per_example and len(outputs) != start:
            raise _windows_differ(task, teacher_pre, preprocessor)
        return cls(task, keys, np.stack(values))

    @classmethod
    def from_run(cls, run_dir, task, tasks, examples, preprocessor, batch_size=64):
        """Load a finished run (`kmtl.training.load_run`) and use its head named like ``task``."""
        from kmtl.run_files import load_run

        teacher, teacher_pre, _ = load_run(run_dir)
        by_name = {t.name: t for t in teacher.tasks}
        teacher_task = by_name.get(task.name)
        if teacher_task is None or teacher_task.kind != task.kind:
            raise KmtlError(f"teachers.{task.name}: run {run_dir} has no {task.kind} task {task.name!r} "
                            f"(its tasks: {', '.join(f'{t.name} ({t.kind})' for t in teacher.tasks)})")
        return cls.from_model(teacher, teacher_task, teacher_pre, task, tasks, examples, preprocessor, batch_size)

    def build(self):
        """Create the lookup table (eagerly, before a dataset function captures it)."""
        if self._table is None:
            self._table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(self.keys, tf.string),
                                                    tf.range(len(self.keys), dtype=tf.int64)),
                default_value=-1)
            self._values = tf.constant(self.values)
        return self

    def lookup(self, x, index: int, width=None):
        """Targets of a batch's examples of task ``index``; zeros for other tasks' examples."""
        self.build()
        rows = self._table.lookup(example_keys(x))
        owned = tf.equal(tf.cast(x["task_id"], tf.int32), index)
        check = tf.debugging.assert_equal(
            tf.reduce_all(tf.logical_or(tf.logical_not(owned), rows >= 0)), True,
            message=f"an example of task {self.task.name!r} has no teacher target")
        with tf.control_dependencies([check]):
            values = tf.gather(self._values, tf.maximum(rows, 0))
        if width is not None:
            values = values[:, :width]
        mask = tf.reshape(tf.cast(owned, tf.float32), [-1] + [1] * (len(self.values.shape) - 1))
        return values * mask


def _windows_differ(task, teacher_pre, preprocessor) -> KmtlError:
    """The error of a windowed task whose teacher cuts the texts into other rows."""
    return KmtlError(f"teachers.{task.name}: the teacher cuts the contexts into other windows than the student "
                     f"(max_length {teacher_pre.max_length} vs {preprocessor.max_length}; the same tokenizer and "
                     "doc_stride are needed too): a span_qa teacher must share the student's backbone, max_length "
                     "and task options")


def _label_permutation(teacher_task, task):
    """Indexes that reorder the teacher's labels into the student's order (``None``: same)."""
    if not task.has_labels or teacher_task.labels == task.labels:
        return None
    missing = [label for label in task.labels if label not in teacher_task.labels]
    if missing or len(teacher_task.labels) != len(task.labels):
        raise KmtlError(f"teachers.{task.name}: the teacher's labels ({', '.join(teacher_task.labels)}) are not "
                        f"the task's ({', '.join(task.labels)})")
    return np.array([teacher_task.labels.index(label) for label in task.labels])


def _place_words(task, word_logits, first_piece, example, max_length, perm):
    """``[max_length, C]`` targets at the student's first pieces; words the teacher did not
    see get their gold tag."""
    probs = task.teacher_targets(np.nan_to_num(word_logits))
    if perm is not None:
        probs = probs[:, perm]
    gold = task.encode_labels([example])[0]
    out = np.zeros((max_length, task.num_outputs), np.float32)
    for w, pos in enumerate(first_piece):
        if pos < 0 or w >= len(gold):
            continue
        seen = w < len(word_logits) and not np.isnan(word_logits[w]).any()
        out[pos] = probs[w] if seen else np.eye(task.num_outputs, dtype=np.float32)[gold[w]]
    return out


def with_teachers(dataset: tf.data.Dataset, tasks, tables: Dict[str, TeacherTable]) -> tf.data.Dataset:
    """``dataset`` of ``(x, y, sample_weight)`` batches with ``y[task]`` replaced by
    ``{"gold": y[task], "teacher": targets}`` for every task in ``tables``."""
    index = {t.name: i for i, t in enumerate(tasks)}
    for table in tables.values():
        table.build()

    def add(x, y, w):
        y = dict(y)
        for name, table in tables.items():
            width = tf.shape(x["token_ids"])[1] if table.task.position_outputs else None  # the batch's, trimmed
            y[name] = {"gold": y[name], "teacher": table.lookup(x, index[name], width)}
        return x, y, w

    return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def load_teacher_tables(teachers: Dict[str, Path], tasks, train_examples, preprocessor, echo=print):
    """`TeacherTable` per task from ``{task: run folder}`` (the config's ``teachers``)."""
    by_name = {t.name: t for t in tasks}
    tables = {}
    for name, run_dir in teachers.items():
        echo(f"teacher for {name}: {run_dir}")
        tables[name] = TeacherTable.from_run(run_dir, by_name[name], tasks, train_examples[name], preprocessor)
    return tables
