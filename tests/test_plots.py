"""Figures (kmtl.plots): each writes a PNG that reads back, from small synthetic inputs and edge
cases; the data behind them matches the metrics; train, evaluate and compare write them."""

import json
import math
import textwrap

import numpy as np
import pytest
from PIL import Image

from kmtl.data.example import Example
from kmtl.plots import (
    confusion_data,
    curves_from_history,
    entity_f1_data,
    figure_name,
    merge_curves,
    plot_confusion,
    plot_curves,
    plot_deltas,
    plot_entity_f1,
    plot_task,
    read_history,
)
from kmtl.plots.deltas import seed_values
from kmtl.plots.events import log_name


def png_size(path):
    """(width, height) of a PNG that PIL reads back completely; no temporary file left beside it."""
    assert path.is_file() and not path.with_name("tmp." + path.name).exists()  # kmtl.files.atomic_path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        width, height = image.size
    assert 200 <= width <= 4000 and 150 <= height <= 4000, (width, height)
    return width, height


def test_confusion_counts_gold_rows_predicted_columns_and_keeps_unknown_labels(tmp_path):
    data = confusion_data(["pos", "neg", "pos", "pos"], ["pos", "pos", "neg", "other"], ["neg", "pos"])
    assert data == {"labels": ["neg", "pos", "other"], "matrix": [[0, 1, 0], [1, 1, 1], [0, 0, 0]]}
    small = png_size(plot_confusion(data, tmp_path / "c.png", title="sentiment"))
    one = png_size(plot_confusion(confusion_data(["a"] * 3, ["a"] * 3, ["a"]), tmp_path / "one.png"))
    assert one[0] <= small[0]


def test_confusion_with_40_long_labels_grows_the_image(tmp_path):
    labels = [f"category_number_{i}_with_a_rather_long_name" for i in range(40)]
    rng = np.random.default_rng(0)
    gold = list(rng.choice(labels, 400))
    data = confusion_data(gold, [g if rng.random() < 0.5 else labels[0] for g in gold], labels)
    assert np.asarray(data["matrix"]).sum() == 400
    wide = png_size(plot_confusion(data, tmp_path / "c40.png", title="topics"))
    small = png_size(plot_confusion(confusion_data(["a", "b"], ["a", "a"], ["a", "b"]), tmp_path / "c2.png"))
    assert wide[0] > 2 * small[0] and wide[1] > 2 * small[1]  # room for 40 readable tick labels


def test_entity_f1_data_matches_seqeval_per_type_and_an_empty_set_still_draws(tmp_path):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    data = entity_f1_data(gold, pred)
    assert set(data) == {"PER", "LOC", "ORG"}  # no micro/macro rows
    assert data["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert data["LOC"]["recall"] == 0.0 and data["LOC"]["support"] == 1
    assert data["ORG"]["precision"] == 0.5 and data["ORG"]["f1"] == pytest.approx(2 / 3)
    png_size(plot_entity_f1(data, tmp_path / "e.png", title="ner"))
    assert entity_f1_data([["O", "O"]], [["O", "O"]]) == {}
    png_size(plot_entity_f1({}, tmp_path / "none.png", title="ner"))  # a task with no entities


def test_deltas_with_nan_and_with_seeds(tmp_path):
    assert seed_values(float("nan")) == [] and seed_values(None) == [] and seed_values(1.5) == [1.5]
    assert seed_values([1.0, None, float("nan"), 2.0]) == [1.0, 2.0]
    one_seed = {"sst2": {"metric": "accuracy", "lower_is_better": False, "relative_percent": -3.2},
                "conll": {"metric": "entity_f1", "lower_is_better": False, "relative_percent": math.nan},
                "stsb": {"metric": "mse", "lower_is_better": True, "relative_percent": None}}
    png_size(plot_deltas(one_seed, tmp_path / "d1.png", delta_m=math.nan))
    seeds = {"sst2": {"metric": "accuracy", "relative_percent": [-3.2, -1.0, -2.5]},
             "stsb": {"metric": "pearson", "relative_percent": [1.1, 2.0, 0.3]}}
    alone = png_size(plot_deltas(seeds, tmp_path / "d3.png", delta_m=[-1.0, 0.5, -1.1]))
    png_size(plot_deltas({}, tmp_path / "d0.png"))
    # --finetune: a second (hatched) bar per task and for Δm, so the figure is wider; a task without one is n/a
    tuned = {"sst2": {"relative_percent": [1.0, 2.5, 0.4]}}
    both = png_size(plot_deltas(seeds, tmp_path / "d3f.png", delta_m=[-1.0, 0.5, -1.1], finetuned=tuned,
                                finetuned_delta_m=[2.0, 2.9, 2.7]))
    assert both[0] > alone[0] and both[1] == alone[1]


def test_curves_group_by_task_and_a_task_without_dev_has_train_lines_only(tmp_path):
    history = {"loss": [2.0, 1.0], "val_loss": [2.1, 1.5], "loss_weight_ner": [1.0, 1.0],
               "ner_loss": [1.2, 0.8], "val_ner_loss": [1.0, 0.9], "ner_entity_f1": [0.1, 0.3],
               "ner_extra_loss": [0.5, 0.4], "ner_extra_accuracy": [0.6, 0.7]}
    curves = curves_from_history(history)
    assert list(curves) == ["ner", "ner_extra"]  # "ner_extra_*" is not a metric of "ner"
    assert curves["ner"] == {"loss": {"train": [1.2, 0.8], "dev": [1.0, 0.9]}, "entity_f1": {"train": [0.1, 0.3]}}
    assert list(curves["ner_extra"]) == ["loss", "accuracy"] and "dev" not in curves["ner_extra"]["loss"]
    both = merge_curves(curves_from_history(history, ["ner"], run="single-task"),
                        curves_from_history(history, ["ner"], run="multi-task"))
    assert set(both["ner"]["loss"]) == {"single-task train", "single-task dev", "multi-task train", "multi-task dev"}
    png_size(plot_curves(curves, tmp_path / "curves.png"))
    png_size(plot_curves(both, tmp_path / "both.png"))
    png_size(plot_curves({"ner": {"loss": {"train": [math.nan]}}}, tmp_path / "nan.png"))
    png_size(plot_curves({}, tmp_path / "empty.png"))


def test_read_history_reads_every_epoch_of_keras_and_grouped_tags(tmp_path):
    import tensorflow as tf

    for split, prefix in (("train", ""), ("validation", "")):
        writer = tf.summary.create_file_writer(str(tmp_path / split))
        with writer.as_default():
            for epoch in range(12):  # more than EventAccumulator keeps by default (10)
                tf.summary.scalar(f"{prefix}epoch_loss", 1.0 / (epoch + 1), step=epoch)
                tf.summary.scalar("ner/accuracy", epoch / 12, step=epoch)
                tf.summary.scalar("loss_weights/ner", 1.0, step=epoch)
                tf.summary.scalar("ner/batch_loss", 5.0, step=epoch)  # batch-level: left out
                tf.summary.scalar("evaluation_vs_iterations/ner/loss", 5.0, step=epoch)
            tf.summary.text("run/notes", "not a number", step=0)
        writer.close()
    history = read_history(tmp_path)
    assert set(history) == {"loss", "ner_accuracy", "loss_weight_ner", "val_loss", "val_ner_accuracy",
                            "val_loss_weight_ner"}
    assert len(history["loss"]) == 12 and history["ner_accuracy"][11] == pytest.approx(11 / 12)
    assert read_history(tmp_path / "missing") == {}
    assert log_name("epoch_ner_loss") == log_name("ner/loss") == "ner_loss"
    assert log_name("run/learning_rate") == "learning_rate" and log_name("ner/batch_loss") is None


def test_plot_task_picks_the_figure_of_the_task_kind(tmp_path):
    from kmtl.tasks import Classification, PairRegression, Tagging, bio_labels

    sentiment = Classification("sentiment", labels=["negative", "positive"])
    examples = [Example(text="a", label="positive"), Example(text="b", label=" negative ")]
    path = plot_task(sentiment, examples, [{"label": "positive"}, {"label": "positive"}], tmp_path)
    assert path == tmp_path / "sentiment_confusion.png" and png_size(path)
    ner = Tagging("ner", labels=bio_labels(["PER"]), tag_scheme="bio")
    tagged = [Example(tokens=("Ann", "ran"), label=("B-PER", "O"))]
    path = plot_task(ner, tagged, [{"tags": ["B-PER", "O"]}], tmp_path)
    assert path == tmp_path / "ner_entity_f1.png" and png_size(path)
    assert figure_name(PairRegression("sim")) is None
    assert plot_task(PairRegression("sim"), [Example(text="a", text_pair="b", label=1.0)], [{}], tmp_path) is None
    assert plot_task(sentiment, [], [], tmp_path / "none") is None and not (tmp_path / "none").exists()


def test_compare_figures_deltas_always_curves_from_the_runs_logs(tmp_path):
    import tensorflow as tf

    from kmtl.compare.report import write_reports

    def run_logs(run, tasks):
        for split in ("train", "validation"):
            writer = tf.summary.create_file_writer(str(tmp_path / run / "logs" / split))
            with writer.as_default():
                for epoch in range(3):
                    for task in tasks:
                        tf.summary.scalar(f"epoch_{task}_loss", 1.0 - 0.1 * epoch, step=epoch)
                        tf.summary.scalar(f"epoch_{task}_accuracy", 0.5 + 0.1 * epoch, step=epoch)
            writer.close()

    run_logs("single_a", ["a"])
    run_logs("multi", ["a", "b"])
    report = {"name": "x", "command": "kmtl compare x", "date": "today", "backbone": "tiny", "delta_m": math.nan,
              "tasks": {t: {"metric": "accuracy", "lower_is_better": False, "single_task": 0.5, "multi_task": 0.6,
                            "difference": 0.1, "relative_percent": 20.0 if t == "a" else math.nan} for t in "ab"},
              "seconds": {"single_task": {"a": 1.0, "b": 1.0}, "single_task_total": 2.0, "multi_task": 1.5},
              "parameters": {"single_task": {"a": 10, "b": 10}, "single_task_total": 20, "multi_task": 12},
              "cached": {"a": False, "b": False, "multi_task": False},
              "runs": {"single_task": {"a": str(tmp_path / "single_a"), "b": str(tmp_path / "gone")},
                       "multi_task": str(tmp_path / "multi")}}
    paths = write_reports(report, tmp_path / "compare")
    png_size(paths["deltas"])
    png_size(paths["curves"])
    markdown = (tmp_path / "compare" / "compare.md").read_text()
    assert "(deltas.png)" in markdown and "(curves.png)" in markdown
    report["runs"] = {"single_task": {"a": str(tmp_path / "gone")}, "multi_task": str(tmp_path / "gone")}
    paths = write_reports(report, tmp_path / "nologs")
    assert "curves" not in paths and not (tmp_path / "nologs" / "curves.png").exists()
    assert "(curves.png)" not in (tmp_path / "nologs" / "compare.md").read_text()


def test_train_and_evaluate_write_the_figures(tmp_path, capsys):
    from kmtl.cli import main
    from kmtl.demo import DEMO_CONFIG

    corpus = DEMO_CONFIG.parent / "corpus"
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""
        name: small
        backbone: tiny
        max_length: 32
        tasks:
          - name: sentiment
            kind: classification
            limit: 16
            train: {{format: tsv, path: {corpus}/sentiment/train.tsv, text: sentence, label: label}}
            dev: {{format: tsv, path: {corpus}/sentiment/dev.tsv, text: sentence, label: label}}
          - name: entities
            kind: tagging
            limit: 16
            train: {{format: conll, path: {corpus}/entities/train.conll}}
        mixture: {{batch_size: 8}}
        training: {{epochs: 2, steps_per_epoch: 2}}
        output_dir: {tmp_path}/runs
        export: {{enabled: false}}
        """), encoding="utf-8")
    assert main(["train", str(config), "--verbose", "0"]) == 0
    run = tmp_path / "runs" / "small"
    assert (run / "metrics.json").is_file()
    png_size(run / "sentiment_confusion.png")
    assert not (run / "entities_entity_f1.png").exists()  # no dev split: no evaluation figure
    png_size(run / "curves.png")
    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval" / "m.json")]) == 0
    assert json.loads((tmp_path / "eval" / "m.json").read_text())["sentiment"]["examples"] == 16
    png_size(tmp_path / "eval" / "sentiment_confusion.png")
    assert f"figures in {tmp_path / 'eval'}: sentiment_confusion.png" in capsys.readouterr().out
