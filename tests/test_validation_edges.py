"""Validation at the edge (issue 15): CLI overrides, early-stopping monitors, names, YAML keys,
booleans for numbers, folders given as files — each refused before any training, the same way
for the YAML file and for command-line flags."""

import textwrap

import pytest
import yaml

from kmtl.cli import _config_with_outputs, main
from kmtl.config import config_from_dict, load_config
from kmtl.config.schema import LOGGED_METRICS, SIGNATURE_NAMES
from kmtl.errors import ConfigError


@pytest.fixture
def base(tmp_path):
    """A folder with a tiny TSV and a tiny CoNLL file."""
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na fine film\tpositive\nbad\tnegative\n")
    (tmp_path / "ner.conll").write_text("Paris B-LOC\nis O\n\n")
    return tmp_path


def sst2(**extra):
    return {"name": "sst2", "kind": "classification",
            "train": {"format": "tsv", "path": "train.tsv", "text": "sentence"}, **extra}


def ner(**extra):
    return {"name": "ner", "kind": "tagging", "train": {"format": "conll", "path": "ner.conll"}, **extra}


DEV = {"format": "tsv", "path": "train.tsv", "text": "sentence"}


def problems(data, base_dir) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, base_dir)
    return str(info.value)


def write_config(folder, text, name="config.yaml"):
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- CLI overrides go through the same validation as the YAML ---------------------------------


def test_epochs_zero_on_the_command_line_is_refused_before_anything_is_written(base, capsys):
    cfg = write_config(base, f"""
        name: run
        backbone: tiny
        tasks: [{{name: sst2, kind: classification, train: {{format: tsv, path: train.tsv, text: sentence}}}}]
        output_dir: {base}/runs
        export: {{dir: {base}/saved_models}}
        """)
    code = main(["train", str(cfg), "--epochs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--epochs (training.epochs): Input should be greater than or equal to 1" in err
    assert not (base / "runs").exists() and not (base / "saved_models").exists()


def test_command_line_overrides_are_applied_and_validated(base):
    cfg = write_config(base, yaml.safe_dump({"tasks": [sst2()], "training": {"epochs": 3}}))
    config = _config_with_outputs(cfg, output_dir=base / "elsewhere", export_dir=base / "exports", epochs=1)
    assert config.training.epochs == 1 and config.output_dir == base / "elsewhere"
    assert config.export.dir == base / "exports"
    assert config.task("sst2").train.path == base / "train.tsv"  # the YAML's relative paths stay resolved
    with pytest.raises(ConfigError, match=r"--epochs \(training.epochs\)"):
        _config_with_outputs(cfg, epochs=-2)


# --- early_stopping.monitor against the names the run will log --------------------------------


@pytest.mark.parametrize("tasks, monitor, expected", [
    ([sst2()], "sst2_f1_score", "'sst2_f1_score' is not 'loss', 'val_loss' or a '<task>_<metric>' this run logs; "
                                "monitor one of: loss, sst2_loss, sst2_accuracy, sst2_macro_f1"),
    ([sst2()], "accuracy", "monitor one of: loss, sst2_loss, sst2_accuracy"),  # one task: prefixed too
    ([sst2(), ner()], "ner_macro_f1", "ner_entity_f1"),  # another kind's metric
    ([sst2()], "val_sst2_accuracy", "'val_sst2_accuracy' is only logged with a dev split, and no task has one"),
    ([sst2(dev=DEV), ner()], "ner_entity_f1",
     "is monitored as 'val_ner_entity_f1' in a run with dev splits, but task 'ner' has no dev split"),
])
def test_monitor_that_the_run_would_not_log_is_refused(base, tasks, monitor, expected):
    data = {"tasks": tasks, "training": {"early_stopping": {"monitor": monitor}}}
    text = problems(data, base)
    assert f"training.early_stopping.monitor: '{monitor}' " in text and expected in text


@pytest.mark.parametrize("tasks, monitor", [
    ([sst2()], "sst2_macro_f1"),
    ([sst2()], "loss"),
    ([sst2(dev=DEV)], "val_sst2_accuracy"),
    ([sst2(dev=DEV), ner()], "sst2_loss"),
    ([sst2(dev=DEV), ner()], "val_loss"),
    ([ner()], "ner_entity_f1"),
])
def test_monitor_that_the_run_logs_is_accepted(base, tasks, monitor):
    data = {"tasks": tasks, "training": {"early_stopping": {"monitor": monitor}}}
    assert config_from_dict(data, base).training.early_stopping.monitor == monitor


def test_metric_table_matches_the_metrics_each_kind_logs(tiny):
    """LOGGED_METRICS (TF-free, for config checks) names what Task.metrics() logs, and a
    one-task model logs them as <task>_<metric>, as multi-task models do."""
    import numpy as np

    import kmtl
    from kmtl.tasks import KINDS

    for kind, names in LOGGED_METRICS.items():
        task = KINDS[kind]("t", labels=["a", "b"] if KINDS[kind].has_labels else None)
        assert tuple(m.name for m in task.metrics()) == names, kind
    model = kmtl.build_model(tiny, [kmtl.tasks.Classification("sst2", ["neg", "pos"])])
    model.compile(optimizer="sgd")
    x = {"token_ids": np.array([[2, 5, 3], [2, 6, 3]], "int32"), "segment_ids": np.zeros((2, 3), "int32"),
         "padding_mask": np.ones((2, 3), "int32")}
    logs = model.evaluate(x, {"sst2": np.array([0, 1], "int32")}, verbose=0, return_dict=True)
    assert {"sst2_loss"} | {f"sst2_{m}" for m in LOGGED_METRICS["classification"]} <= set(logs)


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIGNATURE_NAMES)
def test_task_named_like_a_signature_is_refused_at_load_time(base, name):
    assert f"tasks[0].name: {name!r} is the name of a SavedModel signature" in problems(
        {"tasks": [sst2(name=name)]}, base)


def test_signature_names_match_the_export():
    from kmtl.export.saved_model import RESERVED

    assert tuple(RESERVED) == SIGNATURE_NAMES


def test_names_with_a_trailing_newline_are_refused(base):
    cfg = write_config(base, """
        name: "demo\\n"
        tasks:
          - name: |
              sst2
            kind: classification
            train: {format: tsv, path: train.tsv, text: sentence}
        """)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    text = str(info.value)
    assert "name: 'demo\\n' is not a valid name" in text
    assert "tasks[0].name: 'sst2\\n' is not a valid task name" in text


# --- YAML: repeated keys, booleans where numbers go -------------------------------------------


def test_duplicate_yaml_keys_are_refused_with_their_lines(base):
    cfg = write_config(base, """\
        tasks:
          - name: sst2
            kind: classification
            train: {format: tsv, path: train.tsv, text: sentence}
            kind: tagging
        training:
          epochs: 2
          epochs: 0
        """)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert info.value.problems == [
        (f"{cfg}:5:5", "duplicate key 'kind' (first at line 3); YAML would keep only the last one: remove one of them"),
        (f"{cfg}:8:3", "duplicate key 'epochs' (first at line 7); YAML would keep only the last one: remove one of them"),
        # the rest is checked too, on what YAML kept (the last value)
        ("tasks[0].train.format", "a tagging task reads conll or tfds sources, not tsv"),
        ("training.epochs", "Input should be greater than or equal to 1 (got 0)"),
    ]


def test_merge_keys_may_override_what_they_bring_in(base):
    cfg = write_config(base, """\
        defaults: &train {format: tsv, path: train.tsv, text: sentence, label: label}
        tasks:
          - name: sst2
            kind: classification
            train: {<<: *train, label: label}
        """)
    with pytest.raises(ConfigError, match="defaults: unknown key"):  # only the unknown key, no duplicate
        load_config(cfg)


@pytest.mark.parametrize("change, expected", [
    ({"mixture": {"batch_size": True}}, "mixture.batch_size: expected a number, got True"),
    ({"training": {"epochs": "yes"}}, None),  # a string stays pydantic's own error
    ({"training": {"learning_rate": True}}, "training.learning_rate: expected a number, got True"),
    ({"mixture": {"length_buckets": [16, True]}}, "mixture.length_buckets: expected a number, got [16, True]"),
    ({"weighting": {"weights": {"sst2": False}}}, "weighting.weights: expected a number"),
    ({"tasks": [sst2(limit=True)]}, "tasks[0].limit: expected a number, got True"),
])
def test_yaml_booleans_are_not_numbers(base, change, expected):
    text = problems({"tasks": [sst2()], **change}, base)
    assert expected is None or expected in text


def test_booleans_still_set_boolean_keys(base):
    config = config_from_dict({"tasks": [sst2()], "mixture": {"group_by_length": True},
                               "training": {"jit_compile": True}}, base)
    assert config.mixture.group_by_length is True and config.training.jit_compile is True


# --- folders given where a file goes ----------------------------------------------------------


def test_a_folder_given_as_a_data_file_says_so(base):
    (base / "data").mkdir()
    text = problems({"tasks": [sst2(train={"format": "tsv", "path": "data", "text": "sentence"})]}, base)
    assert f"tasks[0].train.path: {base / 'data'} is a folder, not a file" in text
    assert "no such file" not in text


def test_a_folder_given_as_the_config_file_says_so(base, capsys):
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(base)
    assert main(["train", str(base)]) == 2
    assert "is a folder, not a config file" in capsys.readouterr().err


def test_a_file_given_as_the_backbone_folder_says_so(base):
    text = problems({"tasks": [sst2()], "backbone": "./train.tsv"}, base)
    assert "backbone: " in text and "is a file, not a folder" in text
