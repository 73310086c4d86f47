"""`kmtl compare` (Δm, baseline cache, reports, CLI errors), teacher annealing and `init_from`.

Cheap by design: the cache and report tests use a stand-in trainer (what matters there is
which configs get trained, not the training), and the one real training run (distillation +
adding a task to a finished run) takes a few steps of the tiny backbone, run eagerly (tracing
the train step costs more than those steps).
"""

import json
import math
import os
import textwrap

import numpy as np
import pytest

from kmtl.cli import main
from kmtl.evaluation.delta import delta_m, relative_change, task_deltas

SENTENCES = ["the film was good", "a great story", "fine acting", "the film was bad", "an awful plot",
             "poor acting", "good and great", "bad and poor"]


def write_data(folder):
    """A classification TSV, a CoNLL file and a pair-regression TSV, a few dozen lines each."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["sentence\tlabel"] + [f"{SENTENCES[i % 8]} {i}\t{'positive' if i % 8 in (0, 1, 2, 6) else 'negative'}"
                                  for i in range(24)]
    (folder / "sent.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    conll = []
    for i in range(24):
        conll += [f"{['john', 'mary', 'paul'][i % 3]} B-PER", "lives O", "in O",
                  f"{['paris', 'rome'][i % 2]} B-LOC", ". O", ""]
    (folder / "ner.conll").write_text("\n".join(conll) + "\n", encoding="utf-8")
    rows = ["s1\ts2\tscore"] + [f"a film {i}\tthe film {i % 3}\t{i % 5}" for i in range(24)]
    (folder / "sts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


SENTIMENT = """
  - name: sentiment
    kind: classification
    limit: {limit}
    train: {{format: tsv, path: sent.tsv, text: sentence, label: label}}
    dev: {{format: tsv, path: sent.tsv, text: sentence, label: label}}"""
NER = """
  - name: ner
    kind: tagging
    limit: 16
    train: {format: conll, path: ner.conll}
    dev: {format: conll, path: ner.conll}"""
SCORE = """
  - name: score
    kind: pair_regression
    limit: 16
    train: {format: tsv, path: sts.tsv, text: s1, text_pair: s2, label: score}
    dev: {format: tsv, path: sts.tsv, text: s1, text_pair: s2, label: score}"""


def write_config(folder, name="small", tasks=None, extra="", limit=16):
    tasks = tasks if tasks is not None else SENTIMENT.format(limit=limit) + NER
    text = textwrap.dedent(f"""\
        name: {name}
        backbone: tiny
        max_length: 16
        tasks:""") + tasks + textwrap.dedent("""
        mixture: {batch_size: 8}
        training: {epochs: 1, steps_per_epoch: 2, learning_rate: 1.0e-3, warmup_ratio: 0.0}
        export: {enabled: false}
        """) + textwrap.dedent(extra)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- Δm


def test_delta_m_signs_follow_metric_direction_against_hand_computation():
    # the PyTorch figures: accuracy, accuracy, Pearson, entity F1 (all higher-better)
    st = {"sst2": 0.828, "agnews": 0.883, "stsb": 0.786, "conll": 0.469}
    mt = {"sst2": 0.768, "agnews": 0.857, "stsb": 0.794, "conll": 0.273}
    hand = 100 * ((0.768 - 0.828) / 0.828 + (0.857 - 0.883) / 0.883 + (0.794 - 0.786) / 0.786
                  + (0.273 - 0.469) / 0.469) / 4
    assert delta_m(mt, st) == pytest.approx(hand)
    assert delta_m(mt, st) == pytest.approx(-12.7, abs=0.05)  # the figure the issue quotes
    # lower is better: an error that halves is +50 %, one that grows is negative
    assert relative_change(0.1, 0.2, lower_better=True) == pytest.approx(50.0)
    assert delta_m({"a": 0.9, "err": 0.3}, {"a": 0.8, "err": 0.2}, {"err": True}) == pytest.approx(
        (12.5 - 50.0) / 2)
    assert math.isnan(relative_change(0.5, 0.0))


def test_task_deltas_pick_one_primary_metric_per_kind():
    single = {"s": {"kind": "classification", "accuracy": 0.8, "macro_f1": 0.1},
              "n": {"kind": "tagging", "entity_f1": 0.5, "word_accuracy": 0.9},
              "r": {"kind": "pair_regression", "pearson": 0.5, "mse": 1.0},
              "m": {"kind": "multilabel", "micro_f1": 0.4}}
    multi = {"s": {"accuracy": 0.9}, "n": {"entity_f1": 0.4}, "r": {"pearson": 0.55}, "m": {"micro_f1": 0.4}}
    d = task_deltas(multi, single)
    assert [d[t]["metric"] for t in "snrm"] == ["accuracy", "entity_f1", "pearson", "micro_f1"]
    assert d["s"]["difference"] == pytest.approx(0.1) and d["n"]["relative_percent"] == pytest.approx(-20.0)
    # an explicit lower-is-better primary metric flips the sign
    d = task_deltas({"r": {"mse": 0.5}}, {"r": single["r"]}, primary={"r": "mse"})
    assert d["r"]["lower_is_better"] and d["r"]["difference"] == pytest.approx(0.5)
    assert d["r"]["relative_percent"] == pytest.approx(50.0)


# ------------------------------------------------------------------ the cache and the reports


@pytest.fixture(scope="module")
def stand_in_model():
    import kmtl
    from kmtl.backbone import tiny_encoder

    return kmtl.build_model(tiny_encoder(seed=1), [kmtl.tasks.Classification("x", ["a", "b"])])


def stand_in_trainer(calls, model, reruns=None):
    """Records each config it is asked to train (and its rerun mode in ``reruns``); metrics
    depend on the task kind."""
    from kmtl.training import RunResult

    def trainer(config, verbose=0, export=None, echo=print, rerun="auto"):
        calls.append(config)
        if reruns is not None:
            reruns.append(rerun)
        config.run_dir.mkdir(parents=True, exist_ok=True)
        multi = len(config.tasks) > 1
        metrics = {}
        for t in config.tasks:
            value = {"sentiment": 0.8, "ner": 0.5}[t.name] + (0.1 if multi and t.name == "sentiment" else 0.0)
            key = "accuracy" if t.kind == "classification" else "entity_f1"
            metrics[t.name] = {"kind": t.kind, "examples": 16, key: value}
        return RunResult(config.run_dir, metrics, {}, None, 2.0 if multi else 1.0, model, None)

    return trainer


def test_compare_caches_baselines_and_writes_reports(tmp_path, stand_in_model):
    from kmtl.compare import compare
    from kmtl.config import load_config

    write_data(tmp_path)
    calls, reruns = [], []
    trainer = stand_in_trainer(calls, stand_in_model, reruns)
    lines = []
    report = compare(load_config(write_config(tmp_path)), trainer=trainer, echo=lines.append)
    assert [len(c.tasks) for c in calls] == [1, 1, 2]
    base = calls[0]  # the single-task config keeps the schedule, drops the other task
    assert base.task_names == ("sentiment",) and base.training == calls[2].training
    assert base.mixture.batch_size == 8 and base.task("sentiment").limit == 16 and not base.export.enabled
    assert report["tasks"]["sentiment"]["difference"] == pytest.approx(0.1)
    assert report["delta_m"] == pytest.approx((12.5 + 0.0) / 2)
    served = report["parameters"]
    assert served["single_task_total"] == 2 * served["multi_task"] > 0
    assert report["seconds"] == {"single_task": {"sentiment": 1.0, "ner": 1.0}, "single_task_total": 2.0,
                                 "multi_task": 2.0}

    folder = tmp_path / "runs" / "small" / "compare"
    saved = json.loads((folder / "compare.json").read_text())
    assert {"tasks", "delta_m", "seconds", "parameters", "metrics", "cached", "command", "date"} <= set(saved)
    assert set(saved["tasks"]["ner"]) == {"metric", "lower_is_better", "single_task", "multi_task", "difference",
                                          "relative_percent"}
    md = (folder / "compare.md").read_text()
    assert "| task | metric | single-task | multi-task | Δ (points) | Δ (relative) |" in md
    assert "| sentiment | accuracy ↑ | 0.8000 | 0.9000 | +10.00 | +12.50 % |" in md
    assert "Δm = +6.25 %" in md and "Δm = +6.25 %" in "\n".join(lines)
    assert list((folder / "logs").glob("events.out.tfevents.*"))

    # again: nothing retrains; the cache is keyed by settings, so another run name reuses it too
    calls.clear()
    report = compare(load_config(write_config(tmp_path)), trainer=trainer, echo=lines.append)
    assert calls == [] and all(report["cached"].values())
    # the same data with a new modification time (a copy, a fresh clone) keeps the cache
    stamp = (tmp_path / "ner.conll").stat().st_mtime_ns + 10**10
    os.utime(tmp_path / "ner.conll", ns=(stamp, stamp))
    report = compare(load_config(write_config(tmp_path)), trainer=trainer, echo=lines.append)
    assert calls == [] and all(report["cached"].values())
    # one task's settings change: only its baseline (and the multi-task model) retrain
    report = compare(load_config(write_config(tmp_path, limit=12)), trainer=trainer, echo=lines.append)
    assert [c.task_names for c in calls] == [("sentiment",), ("sentiment", "ner")]
    assert report["cached"] == {"sentiment": False, "ner": True, "multi_task": False}
    # a data file that changed on disk counts as a change as well; --retrain ignores the cache
    calls.clear()
    with open(tmp_path / "ner.conll", "a", encoding="utf-8") as f:
        f.write("\n")
    compare(load_config(write_config(tmp_path, limit=12)), trainer=trainer, echo=lines.append)
    assert [c.task_names for c in calls] == [("ner",), ("sentiment", "ner")]
    calls.clear()
    compare(load_config(write_config(tmp_path, limit=12)), trainer=trainer, echo=lines.append, retrain=True)
    assert len(calls) == 3 and set(reruns) == {"auto"}  # a crashed run resumes
    # --restart: the runs that train start from step 0 (a stale backup is replaced, not resumed)
    reruns.clear()
    calls.clear()
    compare(load_config(write_config(tmp_path, limit=10)), trainer=trainer, echo=lines.append, restart=True)
    assert len(reruns) == len(calls) >= 2 and set(reruns) == {"overwrite"}


def test_finetune_adds_mt_dnns_second_stage_and_caches_it(tmp_path, stand_in_model):
    """`--finetune`: each task trained alone from the multi-task run (init_from), reported in a
    second table against the baselines, cached like the other runs, per seed with --seeds."""
    from kmtl.compare import compare
    from kmtl.config import load_config

    write_data(tmp_path)
    calls = []
    plain = stand_in_trainer(calls, stand_in_model)

    def trainer(config, **kwargs):  # a fine-tuned task scores 0.05 above its baseline
        result = plain(config, **kwargs)
        if config.init_from is not None:
            for metrics in result.metrics.values():
                for key in ("accuracy", "entity_f1"):
                    if key in metrics:
                        metrics[key] += 0.05
        return result

    lines = []
    report = compare(load_config(write_config(tmp_path)), trainer=trainer, echo=lines.append, finetune=True)
    assert [(c.task_names, c.init_from is not None) for c in calls] == [
        (("sentiment",), False), (("ner",), False), (("sentiment", "ner"), False),
        (("sentiment",), True), (("ner",), True)]
    multi_dir = tmp_path / "runs" / "small"
    assert all(c.init_from == multi_dir for c in calls[3:])
    assert calls[3].run_dir == multi_dir / "compare" / "finetune" / "sentiment"
    stage = report["finetuned"]
    assert stage["tasks"]["ner"]["finetuned"] == pytest.approx(0.55)
    assert stage["tasks"]["sentiment"]["difference"] == pytest.approx(0.05)
    assert stage["delta_m"] == pytest.approx(100 * (0.05 / 0.8 + 0.05 / 0.5) / 2)
    text = "\n".join(lines)
    assert "Second stage (MT-DNN" in text and "Δm after fine-tuning = +8.13 % (multi-task alone: +6.25 %)" in text
    md = (multi_dir / "compare" / "compare.md").read_text()
    assert "| sentiment | accuracy ↑ | 0.8000 | 0.9000 | 0.8500 | +5.00 | +6.25 % |" in md

    calls.clear()  # again: everything from the cache
    assert compare(load_config(write_config(tmp_path)), trainer=trainer, echo=lines.append,
                   finetune=True)["finetuned"]["delta_m"] == pytest.approx(stage["delta_m"])
    assert calls == []
    two = compare(load_config(write_config(tmp_path)), trainer=trainer, echo=lines.append, finetune=True, seeds=2)
    assert len(calls) == 5  # the second seed's baselines, multi-task model and two fine-tuned runs
    assert two["finetuned"]["delta_m_per_seed"] == pytest.approx([stage["delta_m"]] * 2)
    assert two["finetuned"]["tasks"]["ner"]["per_seed"]["finetuned"] == pytest.approx([0.55, 0.55])


def test_compare_cli_user_errors_exit_2_without_traceback(tmp_path, capsys):
    write_data(tmp_path)
    one_task = write_config(tmp_path, name="one", tasks=SENTIMENT.format(limit=8))
    assert main(["compare", str(one_task)]) == 2
    err = capsys.readouterr().err
    assert "kmtl compare: error: compare needs at least two tasks" in err and "Traceback" not in err
    assert main(["compare", str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    bad = write_config(tmp_path, name="bad", extra="teachers: {sentimnt: .}\n")
    assert main(["compare", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "teachers.sentimnt: not a task name" in err and "did you mean 'sentiment'" in err
    no_dev = write_config(tmp_path, name="nodev", tasks=NER + """
  - name: sentiment
    kind: classification
    train: {format: tsv, path: sent.tsv, text: sentence, label: label}""")
    assert main(["compare", str(no_dev)]) == 2
    assert "add `dev:` to tasks[1] (sentiment)" in capsys.readouterr().err


# ------------------------------------------------------------------------- teacher annealing


def test_teacher_annealing_lambda_rises_linearly_with_the_optimizer_step():
    import keras

    from kmtl.distill import TeacherAnnealing

    annealing = TeacherAnnealing(total_steps=8)
    assert [annealing.value_at(s) for s in (0, 2, 4, 8, 20)] == [0.0, 0.25, 0.5, 1.0, 1.0]

    class Stub:  # what the callback reads from the model
        optimizer = type("O", (), {"iterations": keras.Variable(6, dtype="int64", trainable=False)})()
        teacher_lambda = keras.Variable(1.0, trainable=False)

    annealing.set_model(Stub())
    annealing.on_train_batch_begin(0)
    assert float(Stub.teacher_lambda.numpy()) == pytest.approx(0.75)
    with pytest.raises(TypeError, match="MultiTaskModel"):
        annealing.set_model(object())


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("kind", ["classification", "tagging", "pair_regression", "multilabel"])
def test_distillation_loss_mixes_gold_and_teacher(kind):
    import keras

    from kmtl.tasks import KINDS

    rng = np.random.default_rng(0)
    labels = None if kind == "pair_regression" else ["a", "b", "c"]
    task = KINDS[kind]("t", labels=labels)
    shape = {"classification": (4, 3), "tagging": (4, 5, 3), "pair_regression": (4, 1), "multilabel": (4, 3)}[kind]
    logits = rng.normal(size=shape).astype("float32")
    if kind in ("classification", "tagging"):
        gold = rng.integers(0, 3, size=shape[:-1]).astype("int32")
        teacher = np.exp(_log_softmax(rng.normal(size=shape))).astype("float32")
        soft = -(teacher * _log_softmax(logits)).sum(-1)  # soft cross-entropy, by hand
    elif kind == "multilabel":
        gold = (rng.random(shape) > 0.5).astype("float32")
        teacher = rng.random(shape).astype("float32")
        p = 1 / (1 + np.exp(-logits))
        soft = -(teacher * np.log(p) + (1 - teacher) * np.log(1 - p)).mean(-1)
    else:
        gold = rng.normal(size=shape).astype("float32")
        teacher = rng.normal(size=shape).astype("float32")
        soft = ((logits - teacher) ** 2).mean(-1)
    y = {"gold": gold, "teacher": teacher}
    lam = keras.Variable(0.0, trainable=False)
    np.testing.assert_allclose(np.asarray(task.distillation_loss(y, logits, lam)), soft, rtol=1e-4, atol=1e-5)
    lam.assign(1.0)  # λ = 1: the ordinary loss against the gold labels
    np.testing.assert_allclose(np.asarray(task.distillation_loss(y, logits, lam)),
                               np.asarray(task.per_example_loss(gold, logits)), rtol=1e-4, atol=1e-5)
    if kind == "classification":  # cross-entropy is linear in the target: λ = 0.5 is the mean
        lam.assign(0.5)
        hard = np.asarray(task.per_example_loss(gold, logits))
        np.testing.assert_allclose(np.asarray(task.distillation_loss(y, logits, lam)), 0.5 * hard + 0.5 * soft,
                                   rtol=1e-4, atol=1e-5)


# --------------------------------------------------------- a finished run: teachers, init_from


@pytest.fixture
def eager():
    """Run Keras' train/predict functions eagerly: a few tiny steps cost less than tracing."""
    import tensorflow as tf

    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(before)


def saved_run(folder, tasks):
    """A finished run folder of an untrained tiny model (what teachers and init_from read)."""
    import kmtl
    from kmtl.training import save_run

    folder.mkdir(parents=True, exist_ok=True)
    model = kmtl.build_model(kmtl.load_backbone("tiny", seed=3), tasks, name="old")
    save_run(folder, model, 16, {"name": "old"})
    return model


def test_tagging_teacher_targets_sit_on_the_students_first_pieces(tmp_path):
    import kmtl
    from kmtl.data.sources import ConllSource
    from kmtl.distill import TeacherTable, example_keys

    write_data(tmp_path)
    examples = ConllSource(tmp_path / "ner.conll").read()[:6]
    tasks = [kmtl.tasks.Tagging("ner", ["O", "B-PER", "B-LOC"])]
    teacher = saved_run(tmp_path / "old", tasks)
    pre = kmtl.load_backbone("tiny").preprocessor(16)
    table = TeacherTable.from_model(teacher, tasks[0], pre, tasks[0], tasks, examples, pre)
    x, aux = next(iter(kmtl.data.pipeline.eval_dataset(tasks[0], tasks, examples, pre)))
    assert table.keys == [k for k in example_keys(x).numpy()][: len(table.keys)]
    logits = np.asarray(teacher.predict_on_batch(x)["ner"])
    first = np.asarray(aux["first_piece"])
    for row in range(len(examples)):
        for pos in first[row][first[row] >= 0]:
            np.testing.assert_allclose(table.values[row, pos], np.exp(_log_softmax(logits[row, pos])), atol=1e-5)
        others = np.setdiff1d(np.arange(16), first[row])
        assert not table.values[row, others].any()  # nothing where the student has no word


def test_init_from_and_teachers_end_to_end(tmp_path, eager):
    import kmtl
    from kmtl.config import load_config
    from kmtl.distill import TeacherTable, with_teachers
    from kmtl.training import load_run, make_tasks, train
    from kmtl.training.data import read_task_examples
    from kmtl.training.warm_start import warm_start

    write_data(tmp_path)
    old_run = tmp_path / "runs" / "old"
    saved_run(old_run, [kmtl.tasks.Classification("sentiment", ["negative", "positive"])])
    grown = load_config(write_config(tmp_path, name="grown", tasks=SENTIMENT.format(limit=16) + SCORE,
                                     extra=f"init_from: {old_run}\nteachers: {{sentiment: {old_run}}}\n"))

    # warm start: the old head and the encoder carry over exactly; the new head is fresh
    old_model, pre, _ = load_run(old_run)
    train_ex, _ = read_task_examples(grown)
    tasks = make_tasks(grown, train_ex)
    fresh = kmtl.build_model(kmtl.load_backbone("tiny"), tasks)
    done = warm_start(fresh, old_model)
    assert done["heads"] == ["sentiment"] and "score/kernel" in done["fresh"]
    old_vars = {v.path: v for v in old_model.weights}
    carried = [v for v in fresh.weights if not v.path.startswith(("score/", "loss_weight"))]
    assert len(carried) == len(old_vars) - 1  # all but the old loss weight
    for v in carried:
        np.testing.assert_array_equal(v.numpy(), old_vars[v.path].numpy())

    # batches carry the teacher's probabilities for the examples the task owns, zeros elsewhere
    table = TeacherTable.from_model(old_model, old_model.tasks[0], pre, tasks[0], tasks, train_ex["sentiment"], pre)
    ds = kmtl.data.mixture(tasks, train_ex, pre, batch_size=8, steps_per_epoch=2)
    x, y, w = next(iter(with_teachers(ds, tasks, {"sentiment": table})))
    owned = np.asarray(x["task_id"]) == 0
    assert set(y["sentiment"]) == {"gold", "teacher"}
    np.testing.assert_allclose(np.asarray(y["sentiment"]["teacher"]).sum(-1), owned.astype(float), atol=1e-5)

    # kmtl train with init_from + teachers: distils with annealing, reports retention
    result = train(grown, verbose=0, echo=lambda *a: None)
    assert result.history["teacher_lambda"] == [pytest.approx(0.5)]  # 2 steps: λ = 0, then 0.5
    retention = json.loads((result.run_dir / "retention.json").read_text())
    assert set(retention["old_tasks"]) == {"sentiment"} and set(retention["new_tasks"]) == {"score"}
    old_sentiment = retention["old_tasks"]["sentiment"]
    assert 0 <= old_sentiment["before"] <= 1 and old_sentiment["after"] == result.metrics["sentiment"]["accuracy"]
    assert "| score (new) | pearson |" in (result.run_dir / "retention.md").read_text()


# ------------------------------------------------------------------------ baselines of modes
@pytest.mark.parametrize("sharing, expected", [
    ("{mode: progressive, progressive_tasks: [ner], column_size: 8}",
     {"sentiment": ("full", None), "ner": ("progressive", ["ner"])}),
    ("{mode: adapters, adapter_size: 8, task_relation: learned}",
     {"sentiment": ("adapters", "none"), "ner": ("adapters", "none")}),
    ("{mode: soft, task_relation: given, relation_matrix: {sentiment: {ner: 1.0}}}",
     {"sentiment": ("full", None), "ner": ("full", None)}),
])
def test_a_baseline_keeps_only_what_its_sharing_mode_means_for_one_task(tmp_path, sharing, expected):
    """A baseline of a progressive config trains (a column for a listed task, plain fine-tuning for
    another; before, it had an empty mixture), and one of a task-relation config builds (one task
    relates to nothing; before, 'needs at least 2 tasks')."""
    from kmtl.compare.baselines import baseline_config
    from kmtl.config import load_config
    from kmtl.sharing import make_sharing

    write_data(tmp_path)
    config = load_config(write_config(tmp_path, extra=f"sharing: {sharing}\n"))
    for task, (mode, option) in expected.items():
        base = baseline_config(config, task)
        built = make_sharing(base.sharing.mode, **base.sharing.options())
        assert built.name == mode
        if mode == "progressive":
            assert built.tasks == option and built.frozen_tasks([task]) == []
        elif option is not None:
            assert built.relation == option and getattr(built, "relation_matrix", None) is None


def test_a_tasks_weight_and_batch_share_leave_its_baseline_cached(tmp_path):
    """Trying mixtures (a task's share of the batch, its loss weight) retrains the multi-task model only."""
    from kmtl.compare.baselines import baseline_settings, settings_key
    from kmtl.config import load_config

    write_data(tmp_path)
    config = load_config(write_config(tmp_path))
    first = config.tasks[0]
    mixed = config.model_copy(update={"tasks": (first.model_copy(update={"batch_share": 0.4, "weight": 2.0}),)
                                      + config.tasks[1:]})
    for task in config.task_names:
        assert settings_key(baseline_settings(mixed, task)) == settings_key(baseline_settings(config, task))
    limited = config.model_copy(update={"tasks": (first.model_copy(update={"limit": 8}),) + config.tasks[1:]})
    assert settings_key(baseline_settings(limited, first.name)) != settings_key(baseline_settings(config, first.name))
