"""Tests of kmtl.config: YAML -> typed Config, and one ConfigError listing every problem."""

from pathlib import Path

import pytest
import yaml

from kmtl.config import build_source, config_from_dict, load_config
from kmtl.errors import ConfigError


@pytest.fixture
def base(tmp_path):
    """A folder with tiny data files, as a config's folder would hold them."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\na fine film\tpositive\n", encoding="utf-8")
    (data / "pairs.jsonl").write_text('{"text": "a", "text_pair": "b", "label": 0.5}\n')
    (data / "ner.txt").write_text("Paris B-LOC\n\n")
    (tmp_path / "backbone").mkdir()
    return tmp_path


def minimal(**task):
    """A minimal valid config dict with one classification task (overridden by ``task``)."""
    return {"tasks": [{"name": "sentiment", "kind": "classification",
                       "train": {"format": "tsv", "path": "data/train.tsv", "text": "sentence"},
                       **task}]}


def write(folder: Path, data, name="config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def problems(data, base_dir) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, base_dir)
    return str(info.value)


FULL = """
name: demo
backbone: ./backbone
max_length: 64
pooling: cls
sharing: {mode: lora, lora_rank: 4}
tasks:
  - name: sentiment
    kind: classification
    labels: [negative, positive]
    weight: 2.0
    train: {format: tsv, path: data/train.tsv, text: sentence, label: label}
    dev: {format: csv, path: data/train.tsv, text: 0, label: 1, header: true}
    limit: 10
  - name: similarity
    kind: pair_regression
    train: {format: jsonl, path: data/pairs.jsonl, text_pair: text_pair}
  - name: ner
    kind: tagging
    train: {format: conll, path: data/ner.txt, tag_column: 1}
    dev: {format: tfds, name: conll2003, split: validation, tokens: tokens, tags: ner,
          data_dir: tfds}
mixture: {sampling: temperature, temperature: 3, granularity: alternating, batch_size: 8}
training:
  epochs: 2
  steps_per_epoch: 5
  learning_rate: 3e-5
  clipnorm: null
  strategy: default
  early_stopping: {monitor: val_sentiment_accuracy, patience: 1, mode: max}
weighting: {strategy: linear, start: {sentiment: 1.0}, end: {ner: 0.5}}
output_dir: out
export: {enabled: false, dir: ~/exports}
"""


def test_full_config(base):
    config = load_config(write(base, FULL))
    assert config.name == "demo" and config.pooling == "cls" and config.max_length == 64
    assert config.backbone == str(base / "backbone") and config.backbone_dir == base / "backbone"
    assert config.sharing.mode == "lora" and config.sharing.lora_rank == 4
    assert config.task_names == ("sentiment", "similarity", "ner")
    sentiment = config.task("sentiment")
    assert sentiment.labels == ("negative", "positive") and sentiment.limit == 10
    assert sentiment.train.path == base / "data" / "train.tsv"
    assert sentiment.dev.format == "csv" and sentiment.dev.quoting is True
    assert sentiment.dev.text == 0 and sentiment.dev.label == 1
    assert config.task("similarity").train.text == "text"  # jsonl default
    ner = config.task("ner")
    assert ner.train.tag_column == 1 and ner.dev.data_dir == base / "tfds"
    assert config.mixture.temperature == 3.0 and config.mixture.granularity == "alternating"
    assert config.training.learning_rate == 3e-5 and config.training.clipnorm is None
    assert config.training.early_stopping.monitor == "val_sentiment_accuracy"
    assert config.weighting.end == {"ner": 0.5}
    assert config.run_dir == base / "out" / "demo"
    assert config.export.dir == Path("~/exports").expanduser().resolve()
    with pytest.raises(KeyError, match="sentiment, similarity, ner"):
        config.task("nope")


def test_defaults_and_round_trip(base):
    config = load_config(write(base, minimal()))
    assert (config.name, config.backbone, config.backbone_dir) == ("kmtl", "minilm-l6", None)
    assert config.max_length == 128 and config.pooling == "mean"
    assert config.sharing.mode == "full" and config.mixture.sampling == "proportional"
    assert config.mixture.batch_size == 32 and config.training.epochs == 3
    assert config.training.warmup_ratio == 0.1 and config.training.early_stopping is None
    assert config.weighting.strategy == "static" and config.weighting.weights == {}  # one task: nothing to weigh
    task = config.task("sentiment")
    assert task.labels is None and task.weight == 1.0 and task.dev is None
    assert task.train.label == "label" and task.train.quoting is False
    # default paths resolve against the YAML folder too, and need not exist
    assert config.output_dir == base / "runs" and config.export.dir == base / "saved_models"
    saved = config.to_yaml_dict()
    assert saved["tasks"][0]["train"]["path"] == str(base / "data" / "train.tsv")
    yaml.safe_dump(saved)  # plain data
    assert config_from_dict(saved, "/elsewhere") == config


def test_relative_paths_resolve_against_yaml_folder(base, monkeypatch):
    sub = base / "configs"
    sub.mkdir()
    data = minimal(train={"format": "tsv", "path": "../data/train.tsv", "text": "sentence"})
    monkeypatch.chdir(base / "data")  # the working directory does not matter
    config = load_config(write(sub, data))
    assert config.task("sentiment").train.path == base / "data" / "train.tsv"
    assert config.output_dir == sub / "runs"


def test_int_labels_become_strings(base):
    assert config_from_dict(minimal(labels=[0, 1]), base).task("sentiment").labels == ("0", "1")


def test_config_is_frozen(base):
    config = config_from_dict(minimal(), base)
    with pytest.raises(Exception):
        config.name = "other"


@pytest.mark.parametrize("change, expected", [
    ({"mixture": {"sampling": "temprature"}},
     "mixture.sampling: 'temprature' is not one of: proportional, temperature, uniform, annealed"),
    ({"tasks": [{**minimal()["tasks"][0], "lables": ["a"]}]},
     "tasks[0].lables: unknown key; did you mean 'labels'?"),
    ({"trainig": {}}, "trainig: unknown key; did you mean 'training'?"),
    ({"tasks": [{**minimal()["tasks"][0], "train": {"format": "tsv", "path": "data/train.tsv",
                                                     "text": "sentence", "delimter": ","}}]},
     "tasks[0].train.delimter: unknown key"),
    ({"tasks": [{**minimal()["tasks"][0], "train": {"format": "tsvv", "path": "x"}}]},
     "tasks[0].train.format: 'tsvv' is not one of: tsv, csv, jsonl, conll, tfds"),
    ({"tasks": [{**minimal()["tasks"][0], "kind": "clf"}]},
     "tasks[0].kind: 'clf' is not one of: classification, pair_classification, "),
    ({"tasks": [{**minimal()["tasks"][0], "name": "Sentiment"}]},
     "tasks[0].name: 'Sentiment' is not a valid task name"),
    ({"name": "my demo"}, "name: 'my demo' is not a valid name"),
    ({"max_length": 4}, "max_length: Input should be greater than or equal to 8"),
    ({"training": {"warmup_ratio": 1}}, "training.warmup_ratio: Input should be less than 1"),
    ({"tasks": []}, "tasks: list at least one task"),
    ({"tasks": [{**minimal()["tasks"][0], "train": {"format": "tsv", "path": "data/nope.tsv"}}]},
     "tasks[0].train.path: no such file: "),
    ({"backbone": "models/nope"}, "backbone: no such folder: "),
    ({"weighting": {"weights": {"sentimnt": 2}}},
     "weighting.weights.sentimnt: not a task name (tasks: sentiment); did you mean 'sentiment'?"),
    ({"weighting": {"strategy": "linear", "start": {"x": 1}}}, "weighting.start.x: not a task name"),
    ({"weighting": {"weights": {"sentiment": 2}, "strategy": "linear"}},
     "weighting.weights: only used when strategy is static"),
    ({"weighting": {"strategy": "gradnrm"}},
     "weighting.strategy: 'gradnrm' is not one of: static, linear, dwa, uncertainty, gradnorm, pcgrad, rlw"),
    ({"weighting": {"strategy": "dwa", "alpha": 1.0}},
     "weighting.alpha: only used when strategy is gradnorm (strategy is dwa)"),
    ({"weighting": {"strategy": "gradnorm", "learning_rate": 0}},
     "weighting.learning_rate: Input should be greater than 0"),
    ({"weighting": {"strategy": "uncertainty"}, "tasks": [{**minimal()["tasks"][0], "weight": 2.0}]},
     "tasks[0].weight: weighting strategy uncertainty sets the loss weights itself"),
    ({"training": {"early_stopping": {"monitor": "sentimnt_accuracy"}}},
     "training.early_stopping.monitor: 'sentimnt_accuracy' is not 'loss', 'val_loss'"),
    ({"training": {"log_affinity_every": 5}}, "training.log_affinity_every: the affinity figures relate tasks to "
                                              "each other: it needs at least two tasks"),
    ({"tasks": [{**minimal()["tasks"][0], "batch_size": 8}]},
     "tasks[0].batch_size: a task's own batch size needs mixture.granularity: alternating (it is joint"),
    ({"tasks": [{**minimal()["tasks"][0], "batch_share": 1.5}]}, "tasks[0].batch_share: Input should be less than 1"),
    ({"tasks": [{**minimal()["tasks"][0], "batch_share": 0.6}, {**minimal()["tasks"][0], "name": "b",
                                                                  "batch_share": 0.5}, {**minimal()["tasks"][0],
                                                                                        "name": "c"}]},
     "tasks[1].batch_share: the batch shares add up to 1.1 (tasks[0] 0.6, tasks[1] 0.5): leave room"),
])
def test_bad_values(base, change, expected):
    data = {**minimal(), **change}
    assert expected in problems(data, base)


@pytest.mark.parametrize("task, expected", [
    ({"kind": "tagging"}, "tasks[0].train.format: a tagging task reads conll or tfds sources"),
    ({"kind": "tagging", "train": {"format": "tfds", "name": "conll2003", "split": "train",
                                   "tokens": "tokens"}},
     "tasks[0].train.tags: a tagging task needs tokens and tags; set tags"),
    ({"kind": "pair_classification"}, "tasks[0].train.text_pair: a pair_classification task needs"),
    ({"dev": {"format": "conll", "path": "data/ner.txt"}},
     "tasks[0].dev.format: a classification task reads tsv, csv, jsonl or tfds sources, not conll"),
    ({"train": {"format": "tsv", "path": "data/train.tsv", "text_pair": "b"}},
     "tasks[0].train.text_pair: a classification task does not read text_pair: remove it; did you mean kind: "
     "pair_classification or pair_regression?"),
    ({"train": {"format": "tfds", "name": "glue/sst2", "split": "train", "label": "label"}},
     "tasks[0].train.text: a classification task needs text and label; set text"),
    ({"kind": "regression", "labels": ["a"]}, "tasks[0].labels: a regression task has no labels"),
    ({"labels": ["a", "a"]}, "tasks[0].labels: labels must be unique; repeated: a"),
    ({"train": {"format": "tsv", "path": "data/train.tsv", "header": False, "text": 0}},
     "tasks[0].train.label: with header: false, give columns as 0-based indexes"),
    ({"train": {"format": "semeval", "path": "data/train.tsv"}},
     "tasks[0].train.format: semeval sources feed relation tasks; a classification task reads tsv, csv, jsonl"),
    ({"no_relation_label": "none"},
     "tasks[0].no_relation_label: only relation tasks read no_relation_label (this task is classification)"),
    ({"kind": "regression", "tag_scheme": "bio"}, "tasks[0].tag_scheme: only tagging tasks read tag_scheme"),
    ({"kind": "tagging", "tag_scheme": "bilou"}, "tasks[0].tag_scheme: 'bilou' is not one of: bio, iob1, bioes, plain"),
    ({"dropout": 1.5}, "tasks[0].dropout: Input should be less than 1"),
    ({"kind": "span_qa", "train": {"format": "tsv", "path": "data/train.tsv", "text_pair": "b"}},
     "tasks[0].train.format: a span_qa task reads squad or qa_jsonl sources, not tsv"),
    ({"train": {"format": "squad", "path": "data/train.tsv"}},
     "tasks[0].train.format: squad sources feed span_qa tasks; a classification task reads tsv"),
    ({"kind": "span_qa", "doc_stride": 0, "train": {"format": "squad", "path": "data/train.tsv"}},
     "tasks[0].doc_stride: Input should be greater than or equal to 1"),
])
def test_task_does_not_fit_its_source(base, task, expected):
    assert expected in problems(minimal(**task), base)


def test_kind_options_reach_the_task_class(base):
    """A kind's own options (its class's __init__ after name and labels) are task keys."""
    config = config_from_dict(minimal(dropout=0.3), base)
    assert config.tasks[0].kind_options() == {"dropout": 0.3}
    tagging = config_from_dict(minimal(kind="tagging", tag_scheme="iob1", outside_tag="OUT",
                                       train={"format": "conll", "path": "data/train.tsv"}), base)
    assert tagging.tasks[0].kind_options() == {"tag_scheme": "iob1", "outside_tag": "OUT"}


def test_duplicate_task_names(base):
    data = {"tasks": minimal()["tasks"] * 2}
    assert "tasks[1].name: duplicate task name 'sentiment' (also tasks[0].name)" in problems(
        data, base)


def test_all_problems_reported_at_once(base):
    data = minimal(lables=["a"], train={"format": "tsv", "path": "data/missing.tsv"})
    data["mixture"] = {"sampling": "temprature"}
    data["weighting"] = {"weights": {"sentimnt": 1}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, base)
    paths = [path for path, _ in info.value.problems]
    assert sorted(paths) == ["mixture.sampling", "tasks[0].lables", "tasks[0].train.path",
                             "weighting.weights.sentimnt"]
    assert str(info.value).startswith("4 configuration problems:")


@pytest.mark.parametrize("content, expected", [
    (b"tasks: [\n  {name: a\n", "config.yaml:3:1: invalid YAML"),
    (b"name: demo\nbackbone: caf\xe9\n", "config.yaml:2: not valid UTF-8"),
    (b"", "the file is empty"),
    (b"# only a comment\n", "the file is empty"),
    (b"- a\n- b\n", "the top level must be a mapping"),
])
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="1 configuration problem:") as info:
        load_config(path)
    assert expected in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_build_source(base):
    """Each format's class from the registry, with the section's keys as its arguments."""
    config = load_config(write(base, FULL))
    sentiment, ner = config.task("sentiment"), config.task("ner")
    tsv = build_source(sentiment.train, limit=3)
    assert type(tsv).__name__ == "TsvSource"
    assert (tsv.path, tsv.text, tsv.text_pair, tsv.label, tsv.header, tsv.quoting, tsv.delimiter) == (
        str(base / "data" / "train.tsv"), "sentence", None, "label", True, False, "\t")
    csv = build_source(sentiment.dev)
    assert type(csv).__name__ == "CsvSource" and csv.quoting is True and csv.delimiter == ","
    assert type(build_source(config.task("similarity").train)).__name__ == "JsonlSource"
    conll = build_source(ner.train)
    assert type(conll).__name__ == "ConllSource"
    assert (conll.path, conll.token_column, conll.tag_column, conll.delimiter) == (
        str(base / "data" / "ner.txt"), 0, 1, None)
    tfds = build_source(ner.dev, limit=7)
    assert type(tfds).__name__ == "TfdsSource" and tfds.limit == 7 and tfds.name == "conll2003"


def test_build_source_with_real_sources(base):
    config = load_config(write(base, FULL))
    examples = build_source(config.task("sentiment").train).read()
    assert [(e.text, e.label) for e in examples] == [("a fine film", "positive")]
    assert build_source(config.task("ner").train).read()[0].tokens == ("Paris",)
    assert build_source(config.task("similarity").train).read()[0].text_pair == "b"


@pytest.mark.parametrize("weighting, kind, attrs", [
    ({}, "StaticWeighting", {"weights": {"sentiment": 1.0}}),
    ({"strategy": "gradnorm", "alpha": 0.5}, "GradNorm", {"alpha": 0.5, "learning_rate": 0.025}),
    ({"strategy": "dwa", "window_steps": 10}, "DynamicWeightAverage", {"window_steps": 10, "temperature": 2.0}),
    ({"strategy": "uncertainty", "learning_rate": 0.01}, "UncertaintyWeighting", {"learning_rate": 0.01}),
    ({"strategy": "pcgrad", "seed": 7}, "PCGrad", {"seed": 7}),
    ({"strategy": "rlw"}, "RandomLossWeighting", {"seed": 0}),
])
def test_weighting_section_builds_its_callback(base, weighting, kind, attrs):
    from kmtl.training.trainer import weighting_callback

    callback = weighting_callback(config_from_dict({**minimal(), "weighting": weighting}, base))
    assert type(callback).__name__ == kind
    for name, value in attrs.items():
        assert getattr(callback, name) == value


def test_mixture_length_options_reach_the_mixture(base):
    from kmtl.training.trainer import _length_options

    config = config_from_dict({**minimal(), "max_length": 40, "mixture": {"group_by_length": True}}, base)
    assert _length_options(config) == {"length_buckets": (16, 32, 40), "group_by_length": True}
    config = config_from_dict({**minimal(), "mixture": {"length_buckets": [32, 64]}}, base)
    assert _length_options(config) == {"length_buckets": (32, 64), "group_by_length": False}
    assert "mixture.group_by_length: group_by_length works with granularity: joint only" in problems(
        {**minimal(), "mixture": {"granularity": "alternating", "group_by_length": True}}, base)


def two_tasks(**extra):
    """``minimal()`` with a second classification task, and ``extra`` top-level keys."""
    data = minimal()
    second = {**data["tasks"][0], "name": "topic"}
    return {"tasks": [data["tasks"][0], second], **extra}


@pytest.mark.parametrize("data, expected", [
    (two_tasks(), "uncertainty"),                                       # the measured multi-task default
    (two_tasks(weighting={"learning_rate": 0.1}), "uncertainty"),       # its options without naming it
    (minimal(), "static"),                                              # one task: nothing to weigh
    (two_tasks(weighting={"weights": {"topic": 0.5}}), "static"),       # weights of the user's own
    (two_tasks(weighting={"strategy": "dwa"}), "dwa"),                  # a named strategy is kept
])
def test_default_weighting_strategy(base, data, expected):
    assert load_config(write(base, data)).weighting.strategy == expected


def test_a_task_weight_keeps_static_weighting(base):
    data = two_tasks()
    data["tasks"][1] = {**data["tasks"][1], "weight": 0.1}  # a masked-LM auxiliary's lambda, say
    config = load_config(write(base, data))
    assert config.weighting.strategy == "static" and config.task("topic").weight == 0.1


def test_an_option_of_another_strategy_names_the_fix(base):
    with pytest.raises(ConfigError, match=r"weighting.alpha.*strategy: gradnorm"):
        load_config(write(base, two_tasks(weighting={"alpha": 1.5})))


def test_default_learning_rates(base):
    training = load_config(write(base, minimal())).training
    from kmtl import defaults

    assert training.learning_rate == defaults.LEARNING_RATE
    assert training.head_rate == defaults.HEAD_LEARNING_RATE == 1e-3
    bigger = load_config(write(base, minimal(), name="b.yaml")).training.model_copy(update={"learning_rate": 3e-3})
    assert bigger.head_rate == 3e-3  # never below the encoder's own rate
