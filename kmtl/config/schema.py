"""The typed configuration: pydantic models for every section of the YAML file.

The YAML is validated once, at the edge, by :func:`kmtl.config.load_config` (or
:func:`kmtl.config.config_from_dict`); the rest of kmtl reads these frozen models, never raw
dicts. Relative paths are resolved against the folder of the YAML file, which the loader
passes as the validation context ``{"base_dir": ...}`` (without it: the working directory).

Checks that need one field and the task around it (a source that does not fit the task's
kind, a missing file, labels on a regression task) live here, as validators; checks that
cross sections (duplicate task names, ``weighting`` keys, ``early_stopping.monitor``) live in
:mod:`kmtl.config.load`, so that they run even when other parts of the file are invalid.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Dict, Literal, Optional, Tuple, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PlainValidator,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kmtl import defaults
from kmtl.registry import (
    COMPUTED,
    REQUIRED,
    SAMPLERS,
    SHARING,
    SOURCES,
    TASK_KINDS,
    WEIGHTING,
    Column,
    Family,
    FilePath,
    FolderPath,
    RegistryError,
)

_KINDS = TASK_KINDS.entries()
TaskKind = Literal[TASK_KINDS.names()]
"""The task kinds of `kmtl.registry.TASK_KINDS` (every `kmtl.tasks.Task` subclass in kmtl/tasks/ with a ``kind``)."""
PAIR_KINDS = tuple(k for k, e in _KINDS.items() if "text_pair" in e.attributes.get("input_fields", ()))
"""Kinds that read two texts (``input_fields`` holds ``text_pair``)."""
REGRESSION_KINDS = tuple(k for k, e in _KINDS.items() if not e.attributes.get("has_labels", True))
"""Kinds without a label set (``has_labels = False``)."""

CONFIG_NAME = re.compile(r"[A-Za-z0-9_-]+")  # used with fullmatch: "$" would let a trailing newline through
TASK_NAME = re.compile(r"[a-z][a-z0-9_]*")
SIGNATURE_NAMES = ("serving_default", "ids")
"""SavedModel signature names a task name must not take (`kmtl.export.saved_model.RESERVED`)."""
TAG_SCHEMES = ("bio", "iob1", "bioes", "plain")
"""Tag schemes a tagging task reads (`kmtl.tasks.tag_schemes`); kmtl converts them all to BIO."""

LOGGED_METRICS: Dict[str, Tuple[str, ...]] = {k: tuple(e.attributes.get("logged_metrics", ())) for k, e in _KINDS.items()}
"""Per task kind, the metrics the run logs as ``<task>_<metric>`` (and ``val_<task>_<metric>``
with a dev split), besides ``<task>_loss``: each kind's ``logged_metrics`` (the names of its
`kmtl.tasks.Task.metrics`), read without importing TensorFlow (a test keeps them equal)."""


def problem(message: str, key: Optional[str] = None) -> PydanticCustomError:
    """A validation error with kmtl's own message; ``key`` names a sub-key of the field.

    The loader appends ``key`` to the error's key path, so a check on ``train`` can point at
    ``tasks[0].train.text_pair``.
    """
    return PydanticCustomError("kmtl", "{message}", {"message": message, "key": key})


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """``value`` made absolute: ``~`` expanded, relative paths joined to the YAML's folder."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(base) / path
    return path.resolve()


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    path = resolve_path(value, info)
    if path.is_dir():
        raise problem(f"{path} is a folder, not a file; give the path of a data file inside it")
    if not path.is_file():
        raise problem(f"no such file: {path}")
    return path


ResolvedPath = Annotated[Path, AfterValidator(resolve_path)]
"""A path, made absolute against the YAML's folder; it need not exist."""
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
"""A path to a file that must exist, made absolute against the YAML's folder."""


def _column(value: Any) -> Union[int, str]:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, int) and value < 0:
            raise problem(f"a column index counts from 0; got {value}")
        return value
    raise problem(f"a column is a name (text) or a 0-based index (integer); got {value!r}")


ColumnChoice = Annotated[Union[int, str], PlainValidator(_column)]
"""A column of a table (a `kmtl.registry.Column` option): its header name or its 0-based index."""


def _leaf_types(annotation) -> set:
    """The types (and literal values) a field's values are made of, through
    ``Optional``/``Union``/``Annotated``/``Tuple`` and the values of a ``Dict``."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    if typing.get_origin(annotation) in (Annotated, dict):
        args = args[-1:] if typing.get_origin(annotation) is dict else args[:1]
    return set().union(*(_leaf_types(arg) for arg in args))


def _has_bool(value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    return isinstance(value, (list, tuple)) and any(_has_bool(v) for v in value)


class _Model(BaseModel):
    """Base of the config models: frozen, and unknown keys are errors (typos get caught).

    A YAML boolean (``true``, ``yes``, ``on``...) where a number is expected is an error too:
    pydantic would read ``batch_size: true`` as 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data):
        # a model validator: a field validator in "before" mode cannot sit on the sources'
        # discriminator field `format`
        for key, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is not None and _has_bool(value):
                types = _leaf_types(field.annotation)
                if types & {int, float} and not types & {bool, str}:  # columns (int or str) say it themselves
                    raise problem(f"expected a number, got {value!r} (YAML reads true/false, yes/no and "
                                  "on/off as booleans); give a number", key)
        return data


# --- sources ------------------------------------------------------------------------------


def _yaml_type(annotation):
    """A source option's annotation with kmtl's marker types (`kmtl.registry.FilePath`,
    `FolderPath`, `Column`) replaced by their checked config types, through ``Optional``."""
    marked = {FilePath: ExistingFile, FolderPath: ResolvedPath, Column: ColumnChoice}
    for marker, config_type in marked.items():
        if annotation == marker:
            return config_type
    if typing.get_origin(annotation) is Union:
        return Union[tuple(_yaml_type(arg) for arg in typing.get_args(annotation))]
    return annotation


class _SourceSection(_Model):
    """Base of the source models: one per `kmtl.registry.SOURCES` format (`_source_model`).

    With ``header: false`` a column option must be an index: names need a header.
    """

    _columns: ClassVar[Tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _names_need_header(self):
        if getattr(self, "header", True) is False:
            for key in self._columns:
                if isinstance(getattr(self, key), str):
                    raise problem("with header: false, give columns as 0-based indexes", key)
        return self

    def options(self) -> Dict[str, Any]:
        """The source class's keyword arguments (by parameter name)."""
        entry = SOURCES.get(self.format)
        by_key = {o.key: o.param for o in entry.options}
        return {by_key[key]: getattr(self, key) for key in by_key}


def _source_model(entry):
    defaults = entry.attributes.get("config_defaults") or {}
    fields = {"format": (Literal[entry.name], ...)}
    for option in entry.options:
        default = defaults.get(option.key, option.default)
        if default is REQUIRED:
            default = ...
        elif default is COMPUTED:
            default = None
        fields[option.key] = (_yaml_type(option.type), default)
    model = create_model(f"{entry.class_name}Config", __base__=_SourceSection, __module__=__name__,
                         __doc__=f"A ``format: {entry.name}`` source (`{entry.module}.{entry.class_name}`).",
                         **fields)
    model._columns = tuple(o.key for o in entry.options if Column in (o.type, *typing.get_args(o.type)))
    return model


SOURCE_MODELS = {name: _source_model(entry) for name, entry in SOURCES.entries().items()}
"""``{format: pydantic model}``, one per `kmtl.registry.SOURCES` entry: a class in
kmtl/data/sources/ that sets ``format``; its keys are its ``__init__`` parameters."""
SourceConfig = Annotated[Union[tuple(SOURCE_MODELS.values())], Field(discriminator="format")]
"""A ``train``/``dev`` section: one of the source models, chosen by its ``format`` key."""
SOURCE_FORMATS = tuple(SOURCE_MODELS)
"""The ``format`` values: ``tsv``, ``csv``, ``jsonl``, ``conll``, ``tfds``, and any source added."""


def _given_fields(fmt: str, source=None) -> set:
    """The fields a ``fmt`` source gives (with ``source``: as configured; without: at best)."""
    fields = SOURCES.get(fmt).attributes.get("fields") or {}
    return {name for name, keys in fields.items()
            if keys is True or source is None or any(getattr(source, key, None) is not None for key in keys)}


def _needed_fields(kind: str) -> tuple:
    """The fields a kind reads: its ``input_fields`` and its ``label_field`` (if any)."""
    attrs = _KINDS[kind].attributes
    label = attrs.get("label_field", "label")
    return tuple(attrs.get("input_fields", ("text",))) + ((label,) if label else ())


def source_problem(kind: str, source) -> Optional[Tuple[str, str]]:
    """``(key, message)`` when ``source`` cannot feed a task of ``kind``, else ``None``.

    A kind reads its ``input_fields`` and its ``label_field`` (`kmtl.tasks.Task`); a source
    gives the fields its ``fields`` map to options that are set (`kmtl.data.sources.Source`).
    """
    needed = _needed_fields(kind)
    fmt = source.format

    def feeds(f, reader=kind):
        return reader in (SOURCES.get(f).attributes.get("kinds") or (reader,))

    able = [f for f in SOURCE_FORMATS if feeds(f) and set(needed) <= _given_fields(f)]
    if not feeds(fmt):
        return ("format", f"{fmt} sources feed {_or(SOURCES.get(fmt).attributes['kinds'])} tasks; "
                          f"a {kind} task reads {_or(able)} sources")
    fields = SOURCES.get(fmt).attributes.get("fields") or {}
    given = _given_fields(fmt, source)
    for field in needed:
        if field in given:
            continue
        if field not in fields:
            return ("format", f"a {kind} task reads {_or(able)} sources, not {fmt}")
        return (fields[field][0], f"a {kind} task needs {_and(needed)}; set {fields[field][0]}")
    for field in sorted(given - set(needed)):
        if fields.get(field) is not True:
            readers = [k for k in _KINDS if field in _needed_fields(k) and feeds(fmt, k) and set(_needed_fields(k)) <= given]
            hint = f"; did you mean kind: {_or(readers)}?" if readers else ""
            return (fields[field][0], f"a {kind} task does not read {field}: remove it{hint}")
    return None


def _and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _or(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# --- tasks --------------------------------------------------------------------------------


class TaskEarlyStoppingConfig(_Model):
    """``tasks[i].early_stopping``: the task leaves training when its own figure stops improving
    (`kmtl.training.early_stopping.TaskEarlyStopping`).

    ``monitor``: one of the figures the task's kind logs (``accuracy``, ``entity_f1``...) or
    ``loss``, measured on the task's dev split when it has one (default: the kind's main metric
    where it is logged during training, else the first it logs).
    """

    monitor: Optional[str] = None
    patience: int = Field(2, ge=1)
    min_delta: NonNegativeFloat = 0.0
    mode: Literal["auto", "min", "max"] = "auto"


class _TaskSection(_Model):
    """The keys of a task that every kind has; `TaskConfig` adds the kinds' own options."""

    name: str
    kind: TaskKind
    labels: Optional[Tuple[str, ...]] = None
    weight: NonNegativeFloat = 1.0
    head_learning_rate: Optional[float] = Field(None, gt=0, description="this task's head's peak rate "
                                                "(default: training.head_learning_rate)")
    batch_share: Optional[float] = Field(None, gt=0, lt=1, description="this task's fixed share of the "
                                         "examples (joint) or batches (alternating); default: mixture.sampling's")
    batch_size: Optional[int] = Field(None, ge=1, description="alternating batches: this task's batch size "
                                      "(default: mixture.batch_size)")
    early_stopping: Optional[TaskEarlyStoppingConfig] = None
    train: SourceConfig
    dev: Optional[SourceConfig] = None
    limit: Optional[int] = Field(None, ge=1)
    dev_limit: Optional[Union[Annotated[int, Field(ge=1)], Literal["all"]]] = None
    _kind_users: ClassVar[Dict[str, Tuple[str, ...]]] = {}
    _kind_params: ClassVar[Dict[str, Dict[str, str]]] = {}

    @property
    def dev_cap(self) -> Optional[int]:
        """How many dev examples to read (``None``: all of them)."""
        if self.dev_limit == "all":
            return None
        return self.dev_limit if self.dev_limit is not None else self.limit

    @field_validator("name")
    @classmethod
    def _identifier(cls, value):
        if not TASK_NAME.fullmatch(value):
            raise problem(
                f"{value!r} is not a valid task name: use a lowercase letter, then a-z, 0-9 "
                "or _ (it becomes a Keras output name)"
            )
        if value in SIGNATURE_NAMES:
            raise problem(f"{value!r} is the name of a SavedModel signature ({', '.join(SIGNATURE_NAMES)}); "
                          "give the task another name")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _int_labels_as_text(cls, value):
        # labels: [0, 1] means the strings that a data file holds
        if isinstance(value, (list, tuple)):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value, info):
        if value is None:
            return value
        if info.data.get("kind") in REGRESSION_KINDS:
            raise problem(f"a {info.data['kind']} task has no labels; remove this key")
        if not value:
            raise problem("list at least one label, or leave labels out to infer them")
        repeated = sorted({label for label in value if value.count(label) > 1})
        if repeated:
            raise problem(f"labels must be unique; repeated: {', '.join(repeated)}")
        return value

    @field_validator("early_stopping")
    @classmethod
    def _own_figure(cls, value, info):
        kind = info.data.get("kind")
        if value is None or kind not in LOGGED_METRICS:
            return value
        logged = LOGGED_METRICS[kind]
        if value.monitor is None:
            primary = _KINDS[kind].attributes.get("primary_metric")
            return value.model_copy(update={"monitor": primary if primary in logged else logged[0]})
        name = info.data.get("name") or "task"
        bare = value.monitor.removeprefix("val_").removeprefix(f"{name}_")
        if bare not in ("loss",) + logged:
            raise problem(f"{value.monitor!r} is not a figure a {kind} task logs; monitor one of: "
                          f"{', '.join(('loss',) + logged)} (this task's own, on its dev split when it has one)",
                          "monitor")
        return value.model_copy(update={"monitor": bare})

    def kind_options(self) -> dict:
        """The options set for this task's kind (validated above), as keyword arguments of
        the kind's class; an option left out takes the class's default."""
        params = self._kind_params.get(self.kind, {})
        return {param: getattr(self, key) for key, param in params.items() if getattr(self, key) is not None}

    @field_validator("*")
    @classmethod
    def _read_by_the_kind(cls, value, info):
        readers = cls._kind_users.get(info.field_name)
        kind = info.data.get("kind")
        if readers and value is not None and kind and kind not in readers:
            raise problem(f"only {' and '.join(readers)} tasks read {info.field_name} (this task is {kind}); "
                          "remove it")
        return value

    @field_validator("outside_tag", check_fields=False)
    @classmethod
    def _an_outside_tag(cls, value):
        if value is not None:
            prefix, dash, rest = value.partition("-")
            if not value.strip() or value != value.strip() or (dash and prefix in ("B", "I", "E", "S")):
                raise problem(f"{value!r} cannot be the outside tag: give the tag your data puts on words "
                              "outside entities, such as O")
        return value

    @field_validator("train", "dev")
    @classmethod
    def _fits_kind(cls, value, info):
        kind = info.data.get("kind")
        found = source_problem(kind, value) if value is not None and kind else None
        if found:
            raise problem(found[1], found[0])
        return value


# --- the other sections -------------------------------------------------------------------


def _option_fields(family: Family, skip=()) -> Tuple[Dict[str, Any], Dict[str, Tuple[str, ...]]]:
    """One optional field per option key of ``family``'s plug-ins (typed from their signatures;
    ``None`` or, for mappings, ``{}`` means "the plug-in's own default"), and the plug-ins that
    read each key; parameters named in ``skip`` are left out."""
    fields: Dict[str, Any] = {}
    users: Dict[str, Tuple[str, ...]] = {}
    annotations: Dict[str, Tuple[str, str]] = {}
    for entry in family.entries().values():
        for option in entry.options:
            if option.param in skip:
                continue
            seen = annotations.setdefault(option.key, (option.annotation, entry.where))
            if seen[0] != option.annotation:
                raise RegistryError(f"{entry.where}: option {option.key!r} of {family.title} {entry.name!r} is "
                                    f"{option.annotation}, but {seen[1]} declares it {seen[0]}; give one the same "
                                    "type or another key (config_keys)")
            users[option.key] = users.get(option.key, ()) + (entry.name,)
            if option.key in fields:
                continue
            if typing.get_origin(option.type) is dict:
                fields[option.key] = (option.type, Field(default_factory=dict))
            else:
                fields[option.key] = (Optional[option.type], None)
    return fields, users


_COMMON_TASK_PARAMS = ("name", "labels")  # every kind's first parameters: keys of _TaskSection


def _task_config():
    fields, users = _option_fields(TASK_KINDS, skip=_COMMON_TASK_PARAMS)
    model = create_model("TaskConfig", __base__=_TaskSection, __module__=__name__, __doc__=_TASK_DOC, **fields)
    model._kind_users = {key: kinds for key, kinds in users.items() if len(kinds) < len(_KINDS)}
    model._kind_params = {kind: {o.key: o.param for o in entry.options if o.param not in _COMMON_TASK_PARAMS}
                          for kind, entry in _KINDS.items()}
    return model


_TASK_DOC = """One task: its head's kind, its label set, its loss weight and its data.

    ``labels`` is ``None`` when it is to be inferred from the train split. ``limit`` caps
    the examples read from ``train`` and from ``dev``; ``dev_limit`` caps ``dev`` on its own
    (a number, or ``all`` to evaluate on the whole dev split whatever ``limit`` says).

    The other keys are the options of the task kinds (`kmtl.registry.TASK_KINDS`: each kind's
    ``__init__`` after ``name`` and ``labels``), each valid for the kinds that read it:
    ``dropout`` (every kind); tagging: ``tag_scheme`` (``bio``, ``iob1``, ``bioes``, or
    ``plain`` for tags without chunk prefixes such as POS tags; detected from the train split
    when left out) and ``outside_tag`` (the data's tag for words outside entities, ``O`` by
    default; kmtl reads every scheme as BIO with ``O``, `kmtl.tasks.tag_schemes`); and the
    options of other kinds (``threshold`` of multilabel...).
    """


class _PluginSection(_Model):
    """Base of a section that picks one plug-in (``_selector``) and sets its options.

    The subclass is built by `_plugin_section` from a `kmtl.registry.Family`; an option set
    for a plug-in that does not read it is an error at its key path.
    """

    _selector: ClassVar[str] = ""
    _users: ClassVar[Dict[str, Tuple[str, ...]]] = {}

    @field_validator("*")
    @classmethod
    def _fits_selection(cls, value, info):
        wanted = cls._users.get(info.field_name)
        chosen = info.data.get(cls._selector)
        if wanted and value not in (None, {}) and chosen and chosen not in wanted:
            key = cls._selector
            raise problem(f"only used when {key} is {' or '.join(wanted)} ({key} is {chosen}); "
                          f"remove it or set {key}: {wanted[0]}")
        return value

    def options(self) -> Dict[str, Any]:
        """The options this section sets for the chosen plug-in, by key (the keyword arguments
        of its factory: `kmtl.sharing.make_sharing`, `kmtl.weighting.get_weighting`)."""
        chosen = getattr(self, self._selector)
        return {k: getattr(self, k) for k, users in self._users.items()
                if chosen in users and getattr(self, k) not in (None, {})}


def _plugin_section(name: str, family: Family, selector: str, default: str, doc: str, base=_PluginSection):
    fields, users = _option_fields(family)
    model = create_model(name, __base__=base, __doc__=doc, __module__=__name__,
                         **{selector: (Literal[family.names()], default)}, **fields)
    model._selector, model._users = selector, users
    return model


LORA_TARGETS = SHARING.get("lora").constants["BERT_TARGETS"]
"""Layers of a keras-hub transformer layer that LoRA can adapt (`kmtl.sharing.BERT_TARGETS`)."""


class _SharingSection(_PluginSection):
    @field_validator("lora_targets", check_fields=False)
    @classmethod
    def _known_targets(cls, value):
        # the config builds keras-hub BERT backbones, whose layer names are known; the Python API
        # (`kmtl.sharing.LoRA`) takes any layer name and checks it against the backbone
        if value is None:
            return value
        if not value:
            raise problem(f"list at least one layer; choose from: {', '.join(LORA_TARGETS)}")
        unknown = [name for name in value if name not in LORA_TARGETS]
        if unknown:
            raise problem(f"not a layer LoRA can adapt: {', '.join(map(repr, unknown))}; choose from: "
                          f"{', '.join(LORA_TARGETS)}")
        if len(set(value)) != len(value):
            raise problem("layer names must be unique")
        return value


_SHARING_DOC = """How tasks share the backbone (`kmtl.sharing`): ``full`` (fine-tune everything),
    ``frozen`` (train the heads only), ``lora`` (low-rank updates shared by the tasks:
    ``lora_rank`` (8), ``lora_alpha`` (default: the rank), ``lora_targets`` (``query``,
    ``value``)) or ``adapters`` (per-task bottleneck adapters ``adapter_size`` (64) wide in
    every transformer layer). An option set for a mode that does not read it is an error.

    Modes and their options come from `kmtl.registry.SHARING` (each mode's ``__init__``).
    """
SharingConfig = _plugin_section("SharingConfig", SHARING, "mode", "full", _SHARING_DOC, base=_SharingSection)
TaskConfig = _task_config()


class MixtureConfig(_Model):
    """How batches draw from tasks.

    ``sampling`` picks tasks in proportion to their size, to size**(1/temperature), uniformly,
    or annealed from proportional to uniform; ``granularity`` is ``joint`` (mixed batches)
    or ``alternating`` (one task per batch). ``length_buckets`` pads each batch to the
    smallest listed length that holds it (a bounded number of shapes, for XLA);
    ``group_by_length`` batches examples of similar length together (less padding: the
    real-data speed lever, see README "Performance"; buckets default to every 16 pieces).
    """

    sampling: Literal[SAMPLERS.names()] = "proportional"  # kmtl.registry.SAMPLERS
    temperature: float = Field(2.0, gt=0)
    granularity: Literal["joint", "alternating"] = "joint"
    batch_size: int = Field(32, ge=1)
    length_buckets: Optional[Tuple[Annotated[int, Field(ge=1)], ...]] = None
    group_by_length: bool = False

    @field_validator("group_by_length")
    @classmethod
    def _joint_only(cls, value, info):
        if value and info.data.get("granularity") == "alternating":
            raise problem("group_by_length works with granularity: joint only; remove it or set granularity: joint")
        return value


class EarlyStoppingConfig(_Model):
    """Stop when ``monitor`` (``loss``, ``val_loss`` or ``<task>_<metric>``) stops improving."""

    monitor: str = "loss"
    patience: int = Field(2, ge=0)
    mode: Literal["auto", "min", "max"] = "auto"


TPU_UNSUPPORTED = (
    "TensorFlow 2.19 was the last release with TPU support and kmtl runs on TF 2.21, which has none; "
    "use strategy: auto (GPUs or CPU), or a TF 2.19 environment for TPUs (kmtl's fixed-shape mode, "
    "mixture.length_buckets with training.jit_compile: true, is the XLA-ready path: README \"TPUs\")")
"""Why ``strategy: tpu`` is refused at config time."""


class TrainingConfig(_Model):
    """The optimizer, schedule and distribution settings of a run.

    ``precision``: ``auto`` (default: ``mixed_bfloat16`` on a CPU with native bfloat16,
    AMX-BF16 or AVX512-BF16, ``float32`` elsewhere; `kmtl.model.precision.resolve_precision`,
    the run's summary line and ``run.json`` say which), ``float32``, ``mixed_bfloat16`` or
    ``mixed_float16`` (Keras' mixed-precision policies; heads and losses stay float32, float16
    with loss scaling).

    ``head_learning_rate``: the peak learning rate of the task heads (default:
    `kmtl.defaults.head_rate`, 1e-3 or ``learning_rate`` if that is larger); the encoder,
    adapters and LoRA factors train at ``learning_rate``.
    """

    epochs: int = Field(3, ge=1)
    steps_per_epoch: Optional[int] = Field(None, ge=1)
    learning_rate: float = Field(defaults.LEARNING_RATE, gt=0)
    head_learning_rate: Optional[float] = Field(None, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: NonNegativeFloat = 0.01
    clipnorm: Optional[float] = Field(1.0, gt=0, description="max global norm of the gradient summed over replicas; null: off")
    seed: int = 0
    strategy: Literal["auto", "default", "mirrored", "multi_worker", "tpu"] = "auto"
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    jit_compile: bool = False
    early_stopping: Optional[EarlyStoppingConfig] = None
    backup_every: int = Field(100, ge=1, description="steps between the backups a rerun resumes from "
                                                     "(and one at every epoch end)")
    log_affinity_every: Optional[int] = Field(None, ge=1, description="probe every pair of tasks' gradient cosine "
                                              "and lookahead affinity every N steps (kmtl.callbacks.TaskAffinity; "
                                              "TensorBoard grad_cosine/ and affinity/); null: off")

    @field_validator("strategy")
    @classmethod
    def _no_tpu(cls, value):
        if value == "tpu":
            raise problem(TPU_UNSUPPORTED)
        return value

    @property
    def head_rate(self) -> float:
        """The task heads' peak learning rate (`kmtl.defaults.head_rate`)."""
        return defaults.head_rate(self.learning_rate, self.head_learning_rate)


_WEIGHTING_DOC = """How the per-task loss weights are set during training (`kmtl.weighting`).

    ``strategy``: ``static`` (task weights, overridden by ``weights``), ``linear``
    (interpolated from ``start`` at epoch 0 to ``end`` at the last epoch; a task left out of
    either uses its task weight), ``dwa`` (Dynamic Weight Average: ``temperature``,
    ``window_steps``), ``uncertainty`` (learned log-variances: ``learning_rate``,
    ``initial_log_variance``), ``gradnorm`` (``alpha``, ``learning_rate``, ``layer``),
    ``pcgrad`` (gradient surgery: ``seed``; task weights still apply) or ``rlw`` (random
    weights: ``seed``). An option set for a strategy that does not read it is an error.

    Strategies and their options come from `kmtl.registry.WEIGHTING` (each class's ``__init__``).
    """
WeightingConfig = _plugin_section("WeightingConfig", WEIGHTING, "strategy", "static", _WEIGHTING_DOC)


def default_weighting(data: Dict[str, Any]) -> str:
    """The weighting strategy a config gets when ``weighting.strategy`` is not set:
    `kmtl.defaults.MULTI_TASK_WEIGHTING` for two or more tasks, ``static`` when the config sets
    loss weights itself (a task's ``weight`` other than 1, or ``weighting.weights``) or has one
    task (nothing to weigh).

    Example:
        >>> default_weighting({"tasks": [{"name": "a"}, {"name": "b"}]})
        'uncertainty'
        >>> default_weighting({"tasks": [{"name": "a", "weight": 0.1}, {"name": "b"}]})
        'static'
    """
    tasks = data.get("tasks")
    tasks = list(tasks) if isinstance(tasks, (list, tuple)) else []
    weighting = data.get("weighting")
    weighting = weighting if isinstance(weighting, dict) else {}

    def weight(task):
        return task.get("weight", 1.0) if isinstance(task, dict) else getattr(task, "weight", 1.0)

    if len(tasks) < 2 or weighting.get("weights") or any(weight(t) != 1.0 for t in tasks):
        return "static"
    return defaults.MULTI_TASK_WEIGHTING


def default_sharing(data: Dict[str, Any]) -> str:
    """The sharing mode a config gets when ``sharing.mode`` is not set:
    `kmtl.defaults.MULTI_TASK_SHARING` for two or more tasks, ``full`` for one task (nothing to
    share), for a run that starts from another (``init_from``: it keeps the encoder it is given)
    or when the section sets options only another mode reads (the mode they belong to is then
    named in the error).

    Example:
        >>> default_sharing({"tasks": [{"name": "a"}, {"name": "b"}]})
        'soft'
        >>> default_sharing({"tasks": [{"name": "a"}]})
        'full'
    """
    tasks = data.get("tasks")
    tasks = list(tasks) if isinstance(tasks, (list, tuple)) else []
    section = data.get("sharing")
    options = set(section) if isinstance(section, dict) else set()
    own = {o.key for o in SHARING.get(defaults.MULTI_TASK_SHARING).options}
    if len(tasks) < 2 or data.get("init_from") or options - own:
        return "full"
    return defaults.MULTI_TASK_SHARING


class ExportConfig(_Model):
    """Whether and where to export the trained model (``<dir>/<name>/<version>/``), and in what
    precision: ``float32`` (default: runs at full speed on any serving CPU) or ``training`` (the
    precision the run trained in: a bfloat16 SavedModel served 1.6x faster at batch 32 than the
    float32 one on AMD EPYC with AVX512-BF16, 2026-12-02, README "Performance", but is emulated,
    and slow, on CPUs without native bfloat16)."""

    enabled: bool = True
    dir: ResolvedPath = Field(Path("saved_models"), validate_default=True)
    precision: Literal["float32", "training"] = "float32"
    xla_max_batch: int = Field(0, ge=0)
    """Requests of at most this many rows run XLA-compiled (batch-1 latency 9.6 -> 6.9 ms on
    MiniLM-L6; `kmtl.export.ServingGraph`); 0 (default): never. TF Serving must then be started
    with ``--xla_cpu_compilation_enabled=true``, which is why it is not the default."""


def _section():
    # The default is a dict validated like user input, so that default paths inside it are
    # resolved against the YAML's folder (validation context), not at import time.
    return Field(default_factory=dict, validate_default=True)


class Config(_Model):
    """A whole run: backbone, tasks, data mixture, training, weighting, output and export.

    Build it with :func:`kmtl.config.load_config` or :func:`kmtl.config.config_from_dict`,
    which also check references between sections (task names in ``weighting`` and
    ``training.early_stopping.monitor``, duplicate task names).

    ``backbone`` is a preset name (``"minilm-l6"``, ``"tiny"``, a keras-hub preset) or, when
    it looks like a path, an absolute folder path; :attr:`backbone_dir` tells which.
    """

    name: str = "kmtl"
    backbone: str = "minilm-l6"
    max_length: int = Field(128, ge=8, le=512)
    pooling: Literal["mean", "cls"] = "mean"
    sharing: SharingConfig = _section()
    tasks: Tuple[TaskConfig, ...]
    mixture: MixtureConfig = _section()
    training: TrainingConfig = _section()
    weighting: WeightingConfig = _section()
    output_dir: ResolvedPath = Field(Path("runs"), validate_default=True)
    export: ExportConfig = _section()
    teachers: Dict[str, ResolvedPath] = Field(default_factory=dict)
    """Distillation teachers: ``{task: finished run folder}`` (`kmtl.distill`, BAM! teacher annealing)."""
    init_from: Optional[ResolvedPath] = None
    """A finished run whose backbone and heads this run starts from (adding a task later)."""

    @model_validator(mode="before")
    @classmethod
    def _plugin_defaults(cls, data):
        # a sharing section without a mode, or a weighting section without a strategy (or none at
        # all), gets `default_sharing`'s / `default_weighting`'s choice; a section given as a config
        # object (what `kmtl compare` gives its baselines) is taken as it is
        for section, key, choose in (("sharing", "mode", default_sharing), ("weighting", "strategy", default_weighting)):
            if not isinstance(data, dict) or not isinstance(data.get(section) or {}, dict):
                continue
            given = dict(data.get(section) or {})
            if key not in given:
                data = {**data, section: {**given, key: choose(data)}}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value):
        if not CONFIG_NAME.fullmatch(value):
            raise problem(f"{value!r} is not a valid name: use letters, digits, _ and - only")
        return value

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value, info):
        if not looks_like_path(value):
            return value
        path = resolve_path(Path(value), info)
        if path.is_file():
            raise problem(f"{path} is a file, not a folder; give the backbone's folder (config.json, "
                          "vocab.txt, ...)")
        if not path.is_dir():
            raise problem(f"no such folder: {path}")
        return str(path)

    @field_validator("teachers")
    @classmethod
    def _teacher_runs(cls, value):
        for task, path in value.items():
            if not (path / "run.json").is_file():
                raise problem(f"{path} is not a finished kmtl run (no run.json); give a folder that "
                              "`kmtl train` or `kmtl compare` wrote", task)
        return value

    @field_validator("init_from")
    @classmethod
    def _init_run(cls, value):
        if value is not None and not (value / "run.json").is_file():
            raise problem(f"{value} is not a finished kmtl run (no run.json); give a folder that "
                          "`kmtl train` wrote (<output_dir>/<name>)")
        return value

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, value):
        if not value:
            raise problem("list at least one task")
        return value

    @property
    def backbone_dir(self) -> Optional[Path]:
        """The local backbone folder, or ``None`` when ``backbone`` is a preset name."""
        return Path(self.backbone) if looks_like_path(self.backbone) else None

    @property
    def run_dir(self) -> Path:
        """Where this run writes: ``<output_dir>/<name>``."""
        return self.output_dir / self.name

    @property
    def task_names(self) -> Tuple[str, ...]:
        """The task names, in config order."""
        return tuple(task.name for task in self.tasks)

    def task(self, name: str) -> TaskConfig:
        """The task called ``name``; ``KeyError`` naming the known tasks if there is none."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r}; tasks are: {', '.join(self.task_names)}")

    def to_yaml_dict(self) -> Dict[str, Any]:
        """The resolved config as plain JSON/YAML data (paths as absolute strings)."""
        return self.model_dump(mode="json")


def looks_like_path(backbone: str) -> bool:
    """Whether a ``backbone`` value names a local folder rather than a preset or a URL."""
    if "://" in backbone:
        return False
    return "/" in backbone or backbone.startswith((".", "~"))
