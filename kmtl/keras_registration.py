"""Register kmtl's Keras classes as soon as Keras is imported, so `import kmtl` stays cheap.

``keras.saving.load_model("m.keras")`` finds a kmtl class by its registered name
(``"kmtl>MultiTaskModel"``) in Keras' registry, which `keras.saving.register_keras_serializable`
fills when the class's module is imported. Keras imports the modules of keras, keras-hub,
keras-cv and keras-nlp objects itself, never others' (``keras/src/saving/serialization_lib.py``,
``_retrieve_class_or_fn``), so after a bare ``import kmtl`` someone has to import kmtl's model
modules. Importing them in ``kmtl/__init__.py`` would pull TensorFlow into every ``import kmtl``
(seconds), and ``kmtl train`` rejects bad configs before TensorFlow loads.

So ``import kmtl`` calls `install`: if Keras is already imported the modules are imported at
once; otherwise a `sys.meta_path` finder waits for the ``keras`` package (and ``tensorflow``,
which imports keras in the middle of its own import) to finish importing and imports them
right after (TensorFlow is loaded by then anyway). Either way the
classes are registered before any ``keras.saving.load_model`` can run, whatever the order of
``import kmtl`` and ``import keras``.

Example:
    >>> import kmtl, keras                      # a fresh process: nothing else to import
    >>> model = keras.saving.load_model("m.keras")
"""

from __future__ import annotations

import importlib
import sys
import warnings

REGISTERING_MODULES = ("kmtl.model", "kmtl.sharing", "kmtl.metrics")
"""Modules whose import registers the classes a saved `kmtl.MultiTaskModel` names.

`kmtl.tasks` is left out (it imports scikit-learn and SciPy): the model's ``from_config``
imports it itself, and a `kmtl.tasks.Task` serialized on its own needs ``import kmtl.tasks``.
"""


def register() -> None:
    """Import `REGISTERING_MODULES` (runs their ``register_keras_serializable`` decorators)."""
    for name in REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:  # never break the user's `import keras`
            warnings.warn(f"kmtl could not register its Keras classes ({name}: {err}); "
                          f"`import {name}` before keras.saving.load_model", stacklevel=2)


WATCHED = ("keras", "tensorflow")
"""Packages whose import `register` waits for: ``keras``, and ``tensorflow``, which imports
keras half-way through its own import (kmtl's modules need TensorFlow complete)."""

_executing = set()  # the watched packages whose import is running now


class _AfterKerasImport:
    """A `sys.meta_path` finder that finds nothing itself: it wraps the loader of a `WATCHED`
    package so that, when the last watched import running ends and Keras is imported, it calls
    `register`. (Not an ``importlib.abc.MetaPathFinder`` subclass: that module imports
    ``importlib.resources``, ``tempfile``... and would triple ``import kmtl``'s time.)

    It stays installed until it has registered: a ``find_spec`` call may be a probe (TensorFlow
    asks whether keras is installed) whose loader never runs.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            _executing.add(fullname)
            try:
                exec_module(module)
            finally:
                _executing.discard(fullname)
                try:
                    del loader.exec_module  # back to the class's own method
                except AttributeError:
                    pass
            _register_when_ready()

        loader.exec_module = exec_then_register
        return spec


_FINDER = _AfterKerasImport()


_pending = False  # Keras arrived while a registering module was half-imported: see `register_pending`


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_when_ready() -> None:
    global _pending
    if _executing or "keras" not in sys.modules:
        return
    _uninstall()
    if any(_initializing(name) for name in REGISTERING_MODULES):
        # e.g. `from kmtl.sharing import Adapters` imports keras half-way through kmtl.sharing,
        # and kmtl.model (imported by `register`) needs kmtl.sharing whole: wait for its end
        _pending = True
        return
    register()


def register_pending(caller: str) -> None:
    """Register now if Keras was imported while a `REGISTERING_MODULES` module was half-imported;
    each of them calls this as its last line, with its ``__name__`` (every name it defines
    exists by then, so importing the others can take them from it)."""
    global _pending
    if _pending and not any(_initializing(name) for name in REGISTERING_MODULES if name != caller):
        _pending = False
        register()


def _uninstall() -> None:
    try:
        sys.meta_path.remove(_FINDER)
    except ValueError:
        pass


def install() -> None:
    """Register now if Keras is imported, else right after ``import keras`` (idempotent)."""
    keras = sys.modules.get("keras")
    if keras is not None and getattr(keras, "saving", None) is not None:
        register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
