"""Reading a YAML config into a :class:`~kmtl.config.schema.Config`, with every problem at once.

Example:
    >>> config = load_config("configs/sst2_conll_stsb.yaml")
    >>> config.task("sentiment").train.path
    PosixPath('/abs/configs/data/train.tsv')
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple

import yaml
from pydantic import BaseModel, ValidationError

from kmtl.config.schema import LOGGED_METRICS, SOURCE_FORMATS, Config
from kmtl.errors import ConfigError
from kmtl.registry import SOURCES, WEIGHTING

Problem = Tuple[str, str]


def load_config(path) -> Config:
    """Read and validate the YAML file at ``path``; relative paths in it are resolved
    against its folder.

    Raises:
        ConfigError: listing every problem, each with its key path (or ``file:line`` for a
            file that is not valid UTF-8 or YAML).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError([("", f"{path.resolve()} is a folder, not a config file; give the YAML file's path")])
    if not path.is_file():
        raise ConfigError([("", f"no such config file: {path.resolve()}")])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError([(f"{path}:{line}", "not valid UTF-8; save the file as UTF-8")]) from None
    loader = _UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = getattr(err, "problem", None) or str(err)
        raise ConfigError([(where, f"invalid YAML: {what}")]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError([(str(path), "the file is empty; a config needs at least tasks:")])
    if not isinstance(data, dict):
        raise ConfigError([(str(path), _not_a_mapping(data))])
    duplicates = [(f"{path}:{line}:{column}", message) for line, column, message in sorted(loader.duplicates)]
    try:
        config = config_from_dict(data, path.resolve().parent)
    except ConfigError as err:
        raise ConfigError(duplicates + err.problems) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config


def config_from_dict(data: Any, base_dir) -> Config:
    """Validate already-parsed config ``data``; relative paths are resolved against ``base_dir``.

    Raises:
        ConfigError: listing every problem, each with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError([("", _not_a_mapping(data))])
    problems: List[Problem] = []
    config = None
    try:
        config = Config.model_validate(data, context={"base_dir": Path(base_dir).resolve()})
    except ValidationError as err:
        problems.extend(_describe(e) for e in err.errors())
    problems.extend(_cross_problems(data))
    if problems:
        raise ConfigError(problems)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that records repeated keys of a mapping (PyYAML keeps the last one
    silently): ``duplicates`` holds ``(line, column, message)`` for each. Keys that a merge
    (``<<: *anchor``) brings in may be overridden, as YAML intends."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: List[Tuple[int, int, str]] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                mark = key_node.start_mark
                if key in seen:
                    self.duplicates.append((mark.line + 1, mark.column + 1,
                                            f"duplicate key {key!r} (first at line {seen[key]}); YAML would keep "
                                            "only the last one: remove one of them"))
                else:
                    seen[key] = mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _not_a_mapping(data) -> str:
    return f"the top level must be a mapping of keys (name:, tasks:, ...), not a {type(data).__name__}"


def build_source(source_cfg, limit: Optional[int] = None):
    """The :mod:`kmtl.data.sources` object that reads a validated ``train``/``dev`` section
    (the class of its ``format`` in `kmtl.registry.SOURCES`).

    ``limit`` is passed on to sources that take one (TFDS reads no more); for the others
    the caller slices.
    """
    entry = SOURCES.get(source_cfg.format)
    options = source_cfg.options()
    if any(o.param == "limit" for o in entry.parameters):
        options["limit"] = limit
    return entry.load()(**options)


# --- pydantic errors into (key path, message) ------------------------------------------------


def _describe(err: dict) -> Problem:
    """One pydantic error as ``(key path, message)`` in the YAML's terms."""
    parts, holder = _locate(err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "kmtl":
        if ctx.get("key"):
            parts.append(ctx["key"])
        message = ctx["message"]
    elif kind == "extra_forbidden":
        key = str(parts[-1])
        fields = list(holder.model_fields) if holder else []
        close = difflib.get_close_matches(key, fields, n=1)
        message = (f"unknown key; did you mean {close[0]!r}?" if close
                   else f"unknown key; valid keys: {', '.join(fields)}")
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        message = f"{value!r} is not one of: {_choices(ctx['expected'])}"
    elif kind == "union_tag_invalid":
        parts.append("format")
        message = f"{ctx['tag']!r} is not one of: {', '.join(SOURCE_FORMATS)}"
    elif kind == "union_tag_not_found":
        parts.append("format")
        message = f"required key is missing; choose one of: {', '.join(SOURCE_FORMATS)}"
    elif kind in ("model_attributes_type", "model_type", "dict_type"):
        message = f"expected a mapping of keys (key: value lines), got {_short(value)}"
    else:
        msg = err["msg"].replace("Tuple", "List").replace("tuple", "list")  # YAML has lists
        message = f"{msg} (got {_short(value)})"
    return _key_path(parts), message


def _short(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."



def _locate(loc) -> Tuple[list, Optional[type]]:
    """Pydantic's ``loc`` without the discriminator tags it inserts, and the model that
    holds the last key (``None`` inside a plain mapping)."""
    parts: list = []
    models: List[type] = [Config]
    holder: Optional[type] = None
    for part in loc:
        if isinstance(part, int):
            parts.append(part)
            continue
        owner = next((m for m in models if part in m.model_fields), None)
        tagged = [m for m in models if _tag(m) == part]
        if owner is None and tagged:  # "tsv" in ('tasks', 0, 'train', 'tsv', 'path')
            models = tagged
            continue
        holder = models[0] if len(models) == 1 else None
        parts.append(part)
        models = _models_in(owner.model_fields[part].annotation) if owner else []
    return parts, holder


def _mixture_share_problems(data: dict) -> List[Problem]:
    """``tasks[i].batch_share`` / ``tasks[i].batch_size`` against each other and the mixture."""
    problems: List[Problem] = []
    tasks = [t if isinstance(t, dict) else {} for t in (data.get("tasks") if isinstance(data.get("tasks"), list) else [])]
    granularity = _section(data, "mixture").get("granularity", "joint")
    for i, task in enumerate(tasks):
        if task.get("batch_size") is not None and granularity != "alternating":
            problems.append((f"tasks[{i}].batch_size",
                             f"a task's own batch size needs mixture.granularity: alternating (it is {granularity}: "
                             "a joint batch mixes the tasks); use tasks[i].batch_share for its share of a joint batch"))
    shares = [(i, t.get("batch_share")) for i, t in enumerate(tasks)]
    given = [(i, s) for i, s in shares if isinstance(s, (int, float)) and not isinstance(s, bool)]
    if given and len(given) < len(tasks) and sum(s for _, s in given) >= 1:
        i = given[-1][0]
        listed = ", ".join(f"tasks[{j}] {s:g}" for j, s in given)
        problems.append((f"tasks[{i}].batch_share",
                         f"the batch shares add up to {sum(s for _, s in given):g} ({listed}): leave room (< 1) for "
                         "the tasks without one, or give every task a share (then they are relative weights)"))
    return problems


def _models_in(annotation) -> List[type]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _tag(model) -> Optional[str]:
    field = model.model_fields.get("format")
    return field.annotation.__args__[0] if field else None


def _choices(expected: str) -> str:
    # pydantic's "'a', 'b' or 'c'" -> "a, b, c"
    return ", ".join(re.findall(r"'([^']*)'", expected)) or expected


def _key_path(parts) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".")


# --- checks across sections, on the raw data so that they run whatever else is wrong ---------


def _cross_problems(data: dict) -> List[Problem]:
    problems: List[Problem] = []
    names: dict = {}
    tasks = data.get("tasks")
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        name = task.get("name") if isinstance(task, dict) else None
        if isinstance(name, str) and name in names:
            problems.append((f"tasks[{i}].name",
                             f"duplicate task name {name!r} (also tasks[{names[name]}].name)"))
        elif isinstance(name, str):
            names[name] = i
    if not names:
        return problems
    known = ", ".join(names)

    weighting = _section(data, "weighting")
    for key in ("weights", "start", "end"):
        for task in _section(weighting, key):
            if task not in names:
                problems.append((f"weighting.{key}.{task}",
                                 f"not a task name (tasks: {known}){_did_you_mean(task, names)}"))

    strategy = weighting.get("strategy")
    setters = [n for n, e in WEIGHTING.entries().items() if e.attributes.get("overrides_task_weights")]
    if strategy in setters:
        keepers = [n for n in WEIGHTING.names() if n not in setters]
        for i, task in enumerate(data.get("tasks") or []):
            weight = task.get("weight", 1.0) if isinstance(task, dict) else 1.0
            if isinstance(weight, (int, float)) and weight != 1.0:
                problems.append((f"tasks[{i}].weight",
                                 f"weighting strategy {strategy} sets the loss weights itself; remove the task "
                                 f"weight or use strategy {_or(keepers)}"))

    problems += _mixture_share_problems(data)
    if _section(data, "training").get("log_affinity_every") is not None and len(names) < 2:
        problems.append(("training.log_affinity_every", "the affinity figures relate tasks to each other: it needs "
                                                        "at least two tasks; remove it"))

    listed = _section(data, "sharing").get("progressive_tasks")
    for i, task in enumerate(listed if isinstance(listed, list) else []):
        if isinstance(task, str) and task not in names:
            problems.append((f"sharing.progressive_tasks[{i}]",
                             f"not a task name (tasks: {known}){_did_you_mean(task, names)}"))

    for task in _section(data, "teachers"):
        if task not in names:
            problems.append((f"teachers.{task}", f"not a task name (tasks: {known}){_did_you_mean(task, names)}"))

    monitor = _section(_section(data, "training"), "early_stopping").get("monitor")
    if isinstance(monitor, str):
        message = _monitor_problem(monitor, [t for t in tasks if isinstance(t, dict)])
        if message:
            problems.append(("training.early_stopping.monitor", message))
    return problems


def _or(words) -> str:
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def _section(data, key) -> dict:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _did_you_mean(word, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _monitor_problem(monitor: str, tasks: List[dict]) -> Optional[str]:
    """What is wrong with ``early_stopping.monitor`` for these raw task sections, or ``None``.

    The run logs ``loss``, ``<task>_loss`` and ``<task>_<metric>`` for the metrics of the task's
    kind (`LOGGED_METRICS`); with any dev split the trainer monitors the ``val_`` figure, which
    a task without a dev split never measures. Tasks whose kind is not valid (reported
    elsewhere) accept any ``<task>_...`` name.
    """
    with_dev = {t.get("name") for t in tasks if t.get("dev") is not None}
    owner, unknown = {"loss": None}, []  # logged name -> its task
    for task in tasks:
        name = task.get("name")
        if not isinstance(name, str):
            continue
        metrics = LOGGED_METRICS.get(task.get("kind")) if isinstance(task.get("kind"), str) else None
        if metrics is None:
            unknown.append(name)
        else:
            owner.update({f"{name}_{m}": name for m in ("loss",) + metrics})
    logged = list(owner)
    base = monitor[len("val_"):] if monitor.startswith("val_") else monitor
    if base not in logged and not any(base.startswith(f"{n}_") for n in unknown):
        dev = " (each also as val_..., measured on the dev splits)" if with_dev else ""
        return (f"{monitor!r} is not 'loss', 'val_loss' or a '<task>_<metric>' this run logs; monitor one "
                f"of: {', '.join(logged)}{dev}{_did_you_mean(base, logged)}")
    if monitor.startswith("val_") and not with_dev:
        return (f"{monitor!r} is only logged with a dev split, and no task has one; monitor {base!r} "
                "or add dev: to a task")
    task = owner.get(base)
    if with_dev and task is not None and task not in with_dev:
        return (f"{monitor!r} is monitored as 'val_{base}' in a run with dev splits, but task {task!r} has no "
                f"dev split, so that figure is never measured; add dev: to task {task!r} or monitor a task "
                "that has one")
    return None
