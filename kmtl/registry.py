"""One registry per plug-in family, read without importing TensorFlow.

Design
------
kmtl's plug-ins are classes in modules that import TensorFlow (weighting strategies, sharing
modes, task kinds, samplers), but ``kmtl train bad.yaml`` must reject a bad config before TF
is imported. So each family's registry is built from the *source* of its files, parsed with
`ast` (never imported): a class is a plug-in of a family when it lives in one of the family's
files, derives (directly or through other classes of those files) from the family's base
class, and sets the family's name attribute (``name = "dwa"``; ``kind = "tagging"`` for task
kinds) to a non-empty string. Adding a plug-in is adding one file (or one class).

What the registry reads from a plug-in class, all plain literals in its source:

* its name (the YAML value: ``strategy: dwa``, ``mode: lora``, ``kind: tagging``);
* its options: the parameters of its ``__init__`` (its own or inherited), with their
  annotations and defaults. The annotations give names, types and ranges; they may use
  ``typing`` (``Optional``, ``Dict``, ``Tuple``, ``Sequence``, ``Literal``...), builtins,
  pydantic's constrained types (``PositiveFloat``, ``NonNegativeFloat``, ``PositiveInt``,
  ``Field`` inside ``Annotated``) and this module's `FilePath`, `FolderPath` and `Column`
  (which the config schema turns into path checks and column names); a default is read when it is a literal or a literal module
  constant (else it is `COMPUTED`: the class applies it);
* ``config_keys``, an optional class attribute ``{parameter: YAML key}`` for keys that differ
  from the parameter (``{"rank": "lora_rank"}``); ``None`` marks a parameter kmtl fills in
  itself (not a YAML key: ``LinearWeighting``'s ``epochs``);
* ``config_defaults``, an optional class attribute ``{YAML key: default}`` for keys whose
  default in a config differs from the Python one (a TSV's ``label`` column is ``"label"`` in
  YAML, ``None`` — unlabelled — when a notebook makes the source);
* ``choice_order``, an optional integer: where it stands in lists of choices (error messages,
  docs); plug-ins without one come after those with one, in file order;
* any other literal class attribute (``overrides_task_weights = True``), inherited through
  the classes of the family's files, in `Entry.attributes`.

Both sides read the same `Family`: the config schema (`kmtl.config.schema`) builds its
``Literal`` of names and one optional field per option from `Family.entries`, and validates
the options with `Entry.options_model`, so errors carry the YAML key path; the Python API
(`kmtl.weighting.get_weighting`, `kmtl.sharing.make_sharing`, `kmtl.data.get_sampler`)
maps names to classes with `Entry.load` (which imports the module) and validates keyword
options with the same `Entry.options_model`.

Example:
    >>> from kmtl.registry import WEIGHTING
    >>> list(WEIGHTING.entries())[:3]
    ['static', 'linear', 'dwa']
    >>> WEIGHTING.entries()["gradnorm"].validate_options({"alpha": -1})
    Traceback (most recent call last):
    ValueError: bad options for weighting strategy 'gradnorm': alpha: Input should be greater than or equal to 0 ...
"""

from __future__ import annotations

import ast
import functools
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pydantic

_KMTL = Path(__file__).resolve().parent

FilePath = typing.Annotated[str, "kmtl:file"]
"""Annotation of a plug-in option that names a data file: the config resolves it against the
YAML's folder and requires it to exist (a `Path` is accepted too)."""
FolderPath = typing.Annotated[str, "kmtl:folder"]
"""Annotation of an option that names a folder: the config resolves it against the YAML's folder."""
Column = typing.Annotated[typing.Union[int, str], "kmtl:column"]
"""Annotation of an option that names a column of a table: its header name or 0-based index."""

REQUIRED = object()
"""The `Option.default` of a parameter without a default."""
COMPUTED = object()
"""The `Option.default` of a parameter whose default is not a literal (the class computes it)."""

_TYPE_NAMES: Dict[str, Any] = {
    **{name: getattr(typing, name) for name in ("Any", "Annotated", "Dict", "List", "Literal", "Mapping",
                                                  "Optional", "Sequence", "Tuple", "Union")},
    **{t.__name__: t for t in (int, float, str, bool, dict, list, tuple)},
    "None": None,
    **{name: getattr(pydantic, name) for name in ("Field", "NonNegativeFloat", "NonNegativeInt", "PositiveFloat",
                                                    "PositiveInt", "conint", "confloat")},
    "FilePath": FilePath, "FolderPath": FolderPath, "Column": Column,
}
"""The names a plug-in's option annotations may use (the registry evaluates them without imports)."""


class RegistryError(TypeError):
    """A plug-in file the registry cannot read: the message names ``file:line`` and the fix."""


@dataclass(frozen=True)
class Option:
    """One option of a plug-in: an ``__init__`` parameter and the YAML key that sets it.

    Args:
        param: the parameter's name in ``__init__``.
        key: the YAML / keyword name (``param`` unless ``config_keys`` renames it); ``None``
            for a parameter kmtl fills in itself (not a YAML key).
        annotation: the annotation's source text; ``type`` is it evaluated.
        default: the literal default, `REQUIRED`, or `COMPUTED` (not a literal: the class's own).
    """

    param: str
    key: Optional[str]
    annotation: str
    type: Any
    default: Any = REQUIRED


@dataclass(frozen=True)
class Entry:
    """One plug-in as its source declares it; `load` imports it.

    Example:
        >>> entry = SHARING.entries()["lora"]
        >>> [o.key for o in entry.options]
        ['lora_rank', 'lora_alpha', 'lora_targets']
    """

    family: str
    name: str
    class_name: str
    module: str
    where: str
    parameters: Tuple[Option, ...]
    attributes: Dict[str, Any] = field(default_factory=dict)
    constants: Dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> Tuple[Option, ...]:
        """The parameters a config sets (those with a YAML key)."""
        return tuple(o for o in self.parameters if o.key is not None)

    def load(self) -> type:
        """The class itself (imports its module, and TensorFlow with it)."""
        return getattr(importlib.import_module(self.module), self.class_name)

    @functools.cached_property
    def options_model(self) -> type:
        """A pydantic model of all ``__init__`` parameters (by YAML key, else by name), strict
        about unknown keys."""
        fields = {o.key or o.param: (o.type, ... if o.default is REQUIRED else o.default) for o in self.parameters}
        return pydantic.create_model(f"{self.class_name}Options", __config__=pydantic.ConfigDict(extra="forbid"),
                                     **fields)

    def validate_options(self, options: Dict[str, Any], values: bool = True) -> Dict[str, Any]:
        """``options`` (by YAML key) checked against the signature and turned into the
        constructor's keyword arguments (by parameter); ``ValueError`` names each bad one
        and the valid options. With ``values=False`` only the names are checked (the class
        checks the values itself).

        Example:
            >>> SHARING.get("lora").validate_options({"lora_rank": 4})
            {'rank': 4}
        """
        by_key = {o.key or o.param: o.param for o in self.parameters}
        valid = ", ".join(by_key) or "none"
        unknown = [k for k in options if k not in by_key]
        if unknown and not values:
            raise ValueError(f"bad options for {self.family} {self.name!r}: {', '.join(map(repr, unknown))}; "
                             f"its options are: {valid}")
        if values:
            try:
                self.options_model(**options)
            except pydantic.ValidationError as err:
                bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
                raise ValueError(f"bad options for {self.family} {self.name!r}: {bad}; its options are: {valid}") from None
        return {by_key[k]: v for k, v in options.items()}


@dataclass(frozen=True)
class Family:
    """A plug-in family: the files its plug-ins live in, their base class and name attribute.

    Args:
        title: what one plug-in is called in messages (``"weighting strategy"``).
        sources: ``(path, module)`` pairs: a folder (every ``*.py`` in it but ``__init__.py``,
            modules ``<module>.<stem>``) or one file (module ``module``).
        base: the name of the base class.
        attribute: the class attribute holding a plug-in's name.

    Example:
        >>> Family("sampler", ((Path("kmtl/data/sampling.py"), "kmtl.data.sampling"),), "Sampler").names()
        ('proportional', 'temperature', 'uniform', 'annealed')
    """

    title: str
    sources: Tuple[Tuple[Path, str], ...]
    base: str
    attribute: str = "name"

    def entries(self) -> Dict[str, Entry]:
        """``{name: Entry}`` in choice order."""
        return _scan(self)

    def names(self) -> Tuple[str, ...]:
        """The plug-in names, in choice order."""
        return tuple(self.entries())

    def get(self, name: str) -> Entry:
        """The entry called ``name``; ``ValueError`` listing the choices if there is none."""
        entries = self.entries()
        if name not in entries:
            raise ValueError(f"unknown {self.title} {name!r}; choose one of: {', '.join(entries)}")
        return entries[name]


# --- reading the source -----------------------------------------------------------------------


@dataclass
class _Class:
    node: ast.ClassDef
    module: str
    path: Path
    constants: Dict[str, Any]


@functools.lru_cache(maxsize=None)
def _scan(family: Family) -> Dict[str, Entry]:
    classes: Dict[str, _Class] = {}
    for path, module in _files(family.sources):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        constants = _constants(tree)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, _Class(node, module, path, constants))
    found = []
    for index, (name, cls) in enumerate(classes.items()):
        attributes = _attributes(name, classes)
        plugin_name = _attributes(name, {name: cls}).get(family.attribute)  # set in the class itself, not inherited
        if name == family.base or not plugin_name or not _derives(name, family.base, classes):
            continue
        if not isinstance(plugin_name, str):
            raise RegistryError(f"{cls.path}:{cls.node.lineno}: {name}.{family.attribute} must be a string")
        found.append((attributes.get("choice_order", 10**6), index, plugin_name, name, attributes))
    entries: Dict[str, Entry] = {}
    for _, _, plugin_name, name, attributes in sorted(found, key=lambda f: f[:2]):
        cls = classes[name]
        where = f"{cls.path}:{cls.node.lineno}"
        if plugin_name in entries:
            raise RegistryError(f"{where}: {family.title} {plugin_name!r} is taken by {entries[plugin_name].where}; "
                                f"give {name} another {family.attribute}")
        entries[plugin_name] = Entry(family.title, plugin_name, name, cls.module, where,
                                     _options(name, classes, attributes.get("config_keys") or {}),
                                     attributes, cls.constants)
    return entries


def _files(sources):
    for path, module in sources:
        path = Path(path)
        if path.is_dir():
            for file in sorted(path.glob("*.py")):
                if file.name != "__init__.py":
                    yield file, f"{module}.{file.stem}"
        else:
            yield path, module


def _literal(node, constants):
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return ast.literal_eval(node)


def _constants(tree) -> Dict[str, Any]:
    constants = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(
            node, "target", None) if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and node.value is not None:
            try:
                constants[target.id] = _literal(node.value, constants)
            except (ValueError, TypeError, SyntaxError):
                pass
    return constants


def _bases(cls: _Class):
    return [b.id if isinstance(b, ast.Name) else getattr(b, "attr", None) for b in cls.node.bases]


def _chain(name, classes):
    """``name`` and its ancestors among ``classes``, nearest first (depth first, like a simple MRO)."""
    seen, order = set(), []

    def visit(n):
        if n in classes and n not in seen:
            seen.add(n)
            order.append(n)
            for base in _bases(classes[n]):
                visit(base)

    visit(name)
    return order


def _derives(name, base, classes) -> bool:
    return any(base in _bases(classes[n]) for n in _chain(name, classes))


def _attributes(name, classes) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for n in reversed(_chain(name, classes)):
        cls = classes[n]
        for node in cls.node.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(
                node, "target", None) if isinstance(node, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
                try:
                    values[target.id] = _literal(node.value, cls.constants)
                except (ValueError, TypeError, SyntaxError):
                    values.pop(target.id, None)
    return values


def _options(name, classes, config_keys) -> Tuple[Option, ...]:
    for n in _chain(name, classes):
        cls = classes[n]
        init = next((f for f in cls.node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        if init is not None:
            break
    else:
        return ()
    args = init.args
    positional = args.posonlyargs + args.args
    defaults = [REQUIRED] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults))[1:] + list(zip(args.kwonlyargs, args.kw_defaults))
    options = []
    for arg, default in pairs:
        key = config_keys.get(arg.arg, arg.arg)
        where = f"{cls.path}:{arg.lineno}"
        text = ast.unparse(arg.annotation) if arg.annotation is not None else "Any"
        try:
            kind = eval(text, {"__builtins__": {}}, {**_TYPE_NAMES, **cls.constants})  # noqa: S307 (names only)
        except Exception as err:
            raise RegistryError(f"{where}: cannot read the annotation {text!r} of {name}'s option {arg.arg!r} "
                                f"({err}); use typing, builtins or pydantic types "
                                f"({', '.join(sorted(_TYPE_NAMES))})") from None
        if default not in (REQUIRED, None):
            try:
                default = _literal(default, cls.constants)
            except (ValueError, TypeError, SyntaxError):
                default = COMPUTED
        options.append(Option(arg.arg, key, text, kind, default))
    return tuple(options)


def _family(title, relative, module, base, attribute="name") -> Family:
    return Family(title, ((_KMTL / relative, module),), base, attribute)


WEIGHTING = _family("weighting strategy", "weighting", "kmtl.weighting", "TaskWeighting")
"""Loss-weighting strategies (`kmtl.weighting`): YAML ``weighting.strategy``."""
SHARING = _family("sharing mode", "sharing", "kmtl.sharing", "Sharing")
"""Ways tasks share the backbone (`kmtl.sharing`): YAML ``sharing.mode``."""
TASK_KINDS = _family("task kind", "tasks", "kmtl.tasks", "Task", attribute="kind")
"""Task kinds (`kmtl.tasks`): YAML ``tasks[i].kind``."""
SAMPLERS = _family("sampling", "data/sampling.py", "kmtl.data.sampling", "Sampler")
"""Task samplers of the mixture (`kmtl.data.sampling`): YAML ``mixture.sampling``."""
SOURCES = _family("source format", "data/sources", "kmtl.data.sources", "Source", attribute="format")
"""Data sources (`kmtl.data.sources`): YAML ``tasks[i].train.format`` / ``dev.format``."""


__all__ = ["COMPUTED", "Column", "Entry", "Family", "FilePath", "FolderPath", "Option", "REQUIRED", "RegistryError",
           "SAMPLERS", "SHARING", "SOURCES", "TASK_KINDS", "WEIGHTING"]
