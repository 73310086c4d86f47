"""Tests of kmtl.registry: one registry per plug-in family, read by both the config schema
(without TensorFlow) and the Python API."""

import inspect
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from kmtl import registry
from kmtl.config import config_from_dict, schema
from kmtl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, **sections):
    (tmp_path / "train.tsv").write_text("text\tlabel\na fine film\tpos\n", encoding="utf-8")
    return {"tasks": [{"name": "sst2", "kind": "classification", "train": {"format": "tsv", "path": "train.tsv"}}],
            **sections}


def _problems(tmp_path, **sections):
    with pytest.raises(ConfigError) as err:
        config_from_dict(_config(tmp_path, **sections), tmp_path)
    return err.value.problems


def test_schema_choices_equal_the_python_registries():
    import kmtl.data.sampling as sampling
    import kmtl.sharing as sharing
    import kmtl.tasks as tasks
    import kmtl.weighting as weighting

    def choices(model, key):
        return typing.get_args(model.model_fields[key].annotation)

    assert choices(schema.WeightingConfig, "strategy") == tuple(weighting.STRATEGIES) == (
        "static", "linear", "dwa", "uncertainty", "gradnorm", "pcgrad", "rlw")
    assert weighting.STRATEGIES["dwa"] is weighting.DynamicWeightAverage
    assert choices(schema.SharingConfig, "mode") == sharing.SHARING_MODES == (
        "full", "frozen", "lora", "adapters", "prefix", "scalar_mix", "soft", "mmoe", "progressive")
    assert sharing.SHARING_CLASSES["lora"] is sharing.LoRA
    assert choices(schema.MixtureConfig, "sampling") == tuple(sampling.SAMPLERS)
    assert sampling.SAMPLERS["temperature"] is sampling.TemperatureSampler
    built_in = {k: c for k, c in tasks.KINDS.items() if c.__module__.startswith("kmtl.tasks.")}
    assert typing.get_args(schema.TaskKind) == tuple(built_in)
    assert schema.PAIR_KINDS == tuple(k for k, c in built_in.items() if "text_pair" in c.input_fields)
    assert schema.REGRESSION_KINDS == tuple(k for k, c in built_in.items() if not c.has_labels)
    assert schema.LORA_TARGETS == sharing.BERT_TARGETS


@pytest.mark.parametrize("family", [registry.WEIGHTING, registry.SHARING, registry.SAMPLERS, registry.TASK_KINDS,
                                    registry.SOURCES])
def test_options_read_from_source_match_the_real_signatures(family):
    for name, entry in family.entries().items():
        cls = entry.load()
        params = [p for p in inspect.signature(cls).parameters.values() if p.kind not in (p.VAR_POSITIONAL,
                                                                                          p.VAR_KEYWORD)]
        assert [o.param for o in entry.parameters] == [p.name for p in params], name
        for option, param in zip(entry.parameters, params):
            if option.default not in (registry.REQUIRED, registry.COMPUTED):
                assert option.default == param.default, (name, option.param)


def test_weighting_options_are_the_union_of_the_strategies_signatures():
    fields = set(schema.WeightingConfig.model_fields) - {"strategy"}
    assert fields == {o.key for e in registry.WEIGHTING.entries().values() for o in e.options}
    assert "epochs" not in fields  # LinearWeighting's epochs comes from training.epochs (config_keys)
    assert "initial_log_variance" in fields  # read from UncertaintyWeighting.__init__, not restated
    assert set(schema.SharingConfig.model_fields) == {"mode"} | {
        o.key for e in registry.SHARING.entries().values() for o in e.options}
    assert {"lora_rank", "adapter_size", "prefix_length", "mmoe_experts"} <= set(schema.SharingConfig.model_fields)


@pytest.mark.parametrize("sections, where, message", [
    ({"weighting": {"strategy": "dwa", "window_steps": 0}}, "weighting.window_steps", "greater than or equal to 1"),
    ({"weighting": {"strategy": "uncertainty", "initial_log_variance": "big"}}, "weighting.initial_log_variance",
     "valid number"),
    ({"weighting": {"strategy": "gradnorm", "layer": 3}}, "weighting.layer", "valid string"),
    ({"weighting": {"strategy": "pcgrad", "seed": True}}, "weighting.seed", "expected a number"),
    ({"weighting": {"strategy": "rlw", "temperature": 2}}, "weighting.temperature",
     "only used when strategy is dwa (strategy is rlw); remove it or set strategy: dwa"),
    ({"weighting": {"strategy": "dwa", "tempreature": 2}}, "weighting.tempreature", "did you mean 'temperature'"),
    ({"sharing": {"mode": "lora", "lora_alpha": 0}}, "sharing.lora_alpha", "greater than 0"),
    ({"sharing": {"mode": "lora", "lora_targets": "query"}}, "sharing.lora_targets", "valid list"),
    ({"sharing": {"mode": "adaptors"}}, "sharing.mode", "is not one of: full, frozen, lora, adapters"),
    ({"weighting": {"strategy": "rlw"}, "tasks_weight": 2}, "tasks[0].weight",
     "remove the task weight or use strategy static, linear or pcgrad"),
])
def test_option_errors_name_the_key_path(tmp_path, sections, where, message):
    data = _config(tmp_path, **{k: v for k, v in sections.items() if k != "tasks_weight"})
    if "tasks_weight" in sections:
        data["tasks"][0]["weight"] = sections["tasks_weight"]
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, tmp_path)
    assert [(k, m) for k, m in err.value.problems if k == where and message in m], err.value.problems


def test_python_api_validates_options_from_the_signature():
    from kmtl.sharing import make_sharing
    from kmtl.weighting import get_weighting

    with pytest.raises(ValueError, match="bad options for weighting strategy 'gradnorm': layer: Input should be a "
                                         "valid string; its options are: alpha, learning_rate, layer"):
        get_weighting("gradnorm", layer=3)
    assert get_weighting("uncertainty", initial_log_variance=0.5).initial_log_variance == 0.5
    with pytest.raises(ValueError, match="unknown sharing option 'lora_rnk'"):
        make_sharing("lora", lora_rnk=4)
    assert make_sharing("full", lora_rank=8, adapter_size=64).name == "full"  # other modes' options: ignored


HALVE = '''
"""A test plug-in: halves every task weight each epoch."""
from typing import Optional

from pydantic import PositiveFloat

from kmtl.weighting.base import TaskWeighting


class Halve(TaskWeighting):
    """Multiply the weights by ``factor`` every epoch."""

    name = "halve"
    overrides_task_weights = True

    def __init__(self, factor: PositiveFloat = 0.5, label: Optional[str] = None):
        super().__init__()
        self.factor, self.label = factor, label
'''

SCRIPT = '''
import json, sys
from pathlib import Path
import kmtl.registry as registry
plugins = Path(sys.argv[1])
registry.WEIGHTING = registry.Family("weighting strategy", registry.WEIGHTING.sources + ((plugins / "myplugins",
                                     "myplugins"),), "TaskWeighting")
from kmtl.config import config_from_dict
from kmtl.errors import ConfigError
train = plugins / "train.tsv"
train.write_text("text\\tlabel\\na\\tpos\\n")
def config(weighting):
    return {"tasks": [{"name": "t", "kind": "classification", "train": {"format": "tsv", "path": str(train)}}],
            "weighting": weighting}
out = {"options": config_from_dict(config({"strategy": "halve", "factor": 0.25}), plugins).weighting.options()}
for bad in ({"strategy": "halve", "factor": 0}, {"strategy": "dwa", "factor": 0.5}, {"strategy": "halvee"}):
    try:
        config_from_dict(config(bad), plugins)
    except ConfigError as err:
        out.setdefault("problems", []).extend(err.problems)
out["tf_before_api"] = "tensorflow" in sys.modules
sys.path.insert(0, str(plugins))
import kmtl.weighting
callback = kmtl.weighting.get_weighting("halve", **out["options"])
out["api"] = [type(callback).__name__, callback.factor, "halve" in kmtl.weighting.STRATEGIES]
print(json.dumps(out))
'''


def test_source_sections_are_the_source_classes_signatures():
    """A YAML ``format:`` is a Source subclass in kmtl/data/sources/; its keys are its
    ``__init__`` parameters (less those kmtl fills in), and its ``fields`` name real options."""
    from kmtl.data import sources

    assert schema.SOURCE_FORMATS == ("tsv", "csv", "jsonl", "conll", "tfds") + tuple(
        f for f in schema.SOURCE_FORMATS if f not in ("tsv", "csv", "jsonl", "conll", "tfds"))
    assert registry.SOURCES.get("tsv").load() is sources.TsvSource
    for fmt, model in schema.SOURCE_MODELS.items():
        entry = registry.SOURCES.get(fmt)
        filled_in = {o.param for o in entry.parameters if o.key is None}  # config_keys: None
        params = set(inspect.signature(entry.load()).parameters) - filled_in
        assert set(model.model_fields) - {"format"} == params, fmt
        for field, keys in entry.attributes.get("fields", {"text": ("text",)}).items():
            assert keys is True or set(keys) <= params, (fmt, field)
    # YAML defaults that differ from the Python ones (a TSV is labelled, its columns named)
    assert schema.SOURCE_MODELS["tsv"].model_fields["label"].default == "label"
    assert inspect.signature(sources.TsvSource).parameters["label"].default is None


def test_a_new_plugin_file_is_accepted_by_the_schema_and_the_python_api(tmp_path):
    package = tmp_path / "myplugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "halve.py").write_text(HALVE)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["options"] == {"factor": 0.25}
    problems = [tuple(p) for p in out["problems"]]
    assert ("weighting.factor", "Input should be greater than 0 (got 0)") in problems
    assert ("weighting.factor", "only used when strategy is halve (strategy is dwa); remove it or set "
                                "strategy: halve") in problems
    assert any(k == "weighting.strategy" and m.endswith("gradnorm, pcgrad, rlw, halve") for k, m in problems)
    assert out["tf_before_api"] is False  # the schema read the new file without importing it (or TF)
    assert out["api"] == ["Halve", 0.25, True]


def _family(folder, source):
    folder.mkdir(exist_ok=True)
    (folder / "plug.py").write_text(textwrap.dedent(source))
    return registry.Family("widget", ((folder / "plug.py", "plug"),), "Base")


def test_unreadable_plugins_are_reported_with_file_and_line(tmp_path):
    bad = _family(tmp_path, """
        class Base:
            pass

        class A(Base):
            name = "a"

            def __init__(self, x: numpy.float32 = 1.0):
                pass
        """)
    with pytest.raises(registry.RegistryError, match=r"plug.py:8: cannot read the annotation 'numpy.float32'"):
        bad.entries()
    taken = _family(tmp_path / "taken", """
        class Base:
            name = "base"

        class A(Base):
            name = "a"

        class B(A):
            name = "a"
        """)
    with pytest.raises(registry.RegistryError, match=r"widget 'a' is taken by .*plug.py:5; give B another name"):
        taken.entries()


def test_an_option_key_with_two_types_is_refused(tmp_path):
    family = _family(tmp_path, """
        class Base:
            pass

        class A(Base):
            name = "a"

            def __init__(self, seed: int = 0):
                pass

        class B(Base):
            name = "b"
            choice_order = 0

            def __init__(self, seed: str = "x"):
                pass
        """)
    assert family.names() == ("b", "a")  # choice_order first, then file order
    with pytest.raises(registry.RegistryError, match="option 'seed' of widget 'a' is int, but .* declares it str"):
        schema._plugin_section("WidgetConfig", family, "kind", "a", "doc")
