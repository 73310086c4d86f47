"""kmtl's own TensorFlow kernels (C++ next to this file), compiled on first use with the machine's compiler.

TensorFlow has no kernel for some passes a training step makes, so they run as several
TensorFlow ops, each a full pass over memory. The kernels here do them in one:

- ``adamw.cc``: AdamW's decoupled weight decay and Adam's update of one variable, the gradient
  multiplied by the global-norm clip's scale as it is read (`kmtl.optimizer.FusedAdamUpdate`), in
  place of the clip's ``Mul``, the decay's ``Mul`` + ``AssignSubVariableOp`` and
  ``ResourceApplyAdam``: four passes become one; an embedding table's update from its
  gradient's rows without the dense gradient (``KmtlApplyAdamWRows``). Measured 2026-12-03 (Intel(R)
  Xeon(R) Processor, 2 vCPUs, idle; MiniLM-L6's 22.5 M decayed weights, `python
  benchmarks/optimizer_update.py`): 14 ms against 30 ms, the same figures to the bit.
- ``dropout.cc``: `kmtl.dropout`'s mask from TensorFlow's own Philox stream, the compare, the
  scale and the select in one pass, and its gradient in one.
- ``layer_norm.cc``: `kmtl.layer_norm` forward in one pass (float32 inside, the row's mean and
  rstd kept) and its closed-form gradient in one pass, in place of a dozen full-size ops each way.
- ``softmax.cc``: the gradient of the attention softmax, ``(dy - Σ dy·y)·y``, in one pass instead
  of TensorFlow's Mul, Sum, Sub, Mul (`kmtl.attention.softmax`).

``rows.h`` holds what the row-wise kernels share (bfloat16 conversions, row sums in a fixed order).

Build: ``g++`` (or ``$CXX``) with `tf.sysconfig`'s compile and link flags, ``-O3
-ffp-contract=off`` (no fused multiply-add: TensorFlow's own rounding) ``-fno-math-errno``
(vectorized square roots); the hot loop is compiled for AVX-512, AVX2 and plain x86-64 and chosen
when the library loads. About 5-20 s each, once: the library is kept in ``$KMTL_KERNEL_DIR`` (default
``~/.cache/kmtl/kernels``) under a name that changes with the source, TensorFlow's version and
the flags. Where there is no compiler, the build fails or the library does not load, `adamw`,
`dropout`, `layer_norm` and `softmax` return None after one warning and kmtl uses TensorFlow's ops (the same
figures, slower; the layer norm's and the softmax gradient's within float rounding: their sums
add in another order). They
also return None while an XLA-compiled function is traced (`in_xla_function`: XLA has no kernel
for kmtl's ops). ``KMTL_KERNELS=0`` turns the kernels off.

Example:
    >>> apply = adamw()          # None where it cannot be built
    >>> ops = dropout()          # the same
    >>> norm = layer_norm()      # the same
    >>> grad = softmax()         # the same
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
FLAGS = ("-shared", "-fPIC", "-O3", "-ffp-contract=off", "-fno-math-errno", "-w")


def kernel_dir() -> Path:
    """Where built kernels are kept: ``$KMTL_KERNEL_DIR``, else ``~/.cache/kmtl/kernels``."""
    return Path(os.environ.get("KMTL_KERNEL_DIR") or Path.home() / ".cache" / "kmtl" / "kernels")


def enabled() -> bool:
    """False when ``KMTL_KERNELS`` is ``0`` (or ``false``, ``off``, ``no``)."""
    return os.environ.get("KMTL_KERNELS", "1").strip().lower() not in ("0", "false", "off", "no")


def in_xla_function() -> bool:
    """True while tracing inside an XLA-compiled function (``tf.function(jit_compile=True)``, Keras'
    ``jit_compile``): XLA cannot compile kmtl's ops, so `adamw`, `dropout`, `layer_norm` and `softmax` give None there.

    Example:
        >>> in_xla_function()
        False
    """
    import tensorflow as tf

    try:  # TensorFlow's own test for it (tf.function's OptionalXlaContext); private, hence the guard
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # pragma: no cover - a TensorFlow without it: assume XLA only where asked
        return False
    return bool(GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _warn(name: str, why: str) -> None:
    warnings.warn(f"kmtl: the {name} kernel is not used ({why}); TensorFlow's ops run instead, slower. "
                  f"Set KMTL_KERNELS=0 to skip the build.", RuntimeWarning, stacklevel=4)


def build(name: str) -> Path:
    """The shared library of ``<name>.cc``, compiled unless already in `kernel_dir`; raises
    ``RuntimeError`` (with the compiler's last lines) where it cannot be built."""
    import tensorflow as tf

    source = HERE / f"{name}.cc"
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r} on PATH")
    flags = [*FLAGS, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    headers = [header.read_text() for header in sorted(HERE.glob("*.h"))]  # included by the sources (rows.h)
    key = hashlib.sha1("\n".join([source.read_text(), *headers, tf.__version__, compiler, *flags]).encode()
                       ).hexdigest()[:16]
    target = kernel_dir() / f"{name}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # compiled under a temporary name, then renamed: a reader never sees half a library
    fd, partial = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, str(source), "-o", partial, *flags], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"{compiler} failed on {source.name}: {tail}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _library(name: str):
    """The loaded library of ``<name>.cc`` where kmtl's kernels can run here and now, else None."""
    return None if in_xla_function() else _load(name)


@functools.lru_cache(maxsize=None)
def _load(name: str):
    if not enabled():
        return None
    try:
        import tensorflow as tf

        return tf.load_op_library(str(build(name)))
    except Exception as error:  # no compiler, a failed build, a library that does not load: TF's ops instead
        _warn(name, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return None


def for_dtype(name: str, dtype):
    """The library of ``<name>.cc`` where it serves tensors of ``dtype`` here, else None: float32,
    bfloat16 or float16, and no GPU visible (kmtl's kernels are CPU-only: with a GPU, the
    TensorFlow ops, which TensorFlow can place anywhere).

    Example:
        >>> ops = for_dtype("layer_norm", "float32")   # None on a GPU machine or without a compiler
    """
    import tensorflow as tf

    if tf.as_dtype(dtype) not in (tf.float32, tf.bfloat16, tf.float16) or tf.config.list_logical_devices("GPU"):
        return None
    return _library(name)  # None inside an XLA-compiled step too


def adamw() -> Optional[callable]:
    """The ``KmtlApplyAdamW`` op (``adamw.cc``): ``(var, m, v, beta1_power, beta2_power, lr, beta1,
    beta2, epsilon, decay, grad, grad_scale)``, the first three resource handles, the rest float32
    (``grad_scale`` multiplies ``grad``: the global-norm clip's scale, 1 without); None where
    the kernel cannot be built, is turned off or is traced into an XLA-compiled function."""
    library = _library("adamw")
    return None if library is None else library.kmtl_apply_adam_w


def adamw_rows() -> Optional[callable]:
    """The ``KmtlApplyAdamWRows`` op (``adamw.cc``): `adamw`'s update of a table whose gradient is
    given as rows, each index once: ``(var, m, v, beta1_power, beta2_power, lr, beta1, beta2,
    epsilon, decay, rows, indices, grad_scale)``; the table's other rows get a zero gradient (they
    still decay and move with their moments). None where `adamw` is None."""
    library = _library("adamw")
    return None if library is None else library.kmtl_apply_adam_w_rows


def dropout():
    """The library of ``dropout.cc``, ops ``kmtl_dropout(x, seed, scale, threshold=...)`` -> ``(y,
    keep)`` and ``kmtl_dropout_grad(dy, keep, scale)`` -> ``dx`` (``x``, ``scale``: float32,
    bfloat16 or float16; ``seed``: int32 or int64 ``[2]``); None where the kernel cannot be built,
    is turned off or is traced into an XLA-compiled function."""
    return _library("dropout")


def layer_norm():
    """The library of ``layer_norm.cc``, ops ``kmtl_layer_norm(x, gamma, beta, epsilon=...)`` ->
    ``(y, mean, rstd)`` and ``kmtl_layer_norm_grad(dy, x, gamma, mean, rstd)`` -> ``(dx, dgamma,
    dbeta)`` (``x``, ``dy``: float32, bfloat16 or float16; the rest float32); None where the kernel
    cannot be built, is turned off or is traced into an XLA-compiled function."""
    return _library("layer_norm")


def softmax():
    """The library of ``softmax.cc``, op ``kmtl_softmax_grad(y, dy)`` -> ``dx``, the gradient of a
    softmax over the last axis (``y``: its output; float32, bfloat16 or float16); None where the
    kernel cannot be built, is turned off or is traced into an XLA-compiled function."""
    return _library("softmax")
