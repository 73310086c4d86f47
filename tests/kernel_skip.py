"""`kernel_or_skip`: kmtl's kernels for tests, which skip where they do not build."""

import pytest


def kernel_or_skip(name: str):
    """`kmtl.kernels`' ``name`` (``adamw``: the op; ``dropout``: the library), or skip the test
    where it does not build (no C++ compiler, or ``KMTL_KERNELS=0``)."""
    from kmtl import kernels

    kernel = getattr(kernels, name)()
    if kernel is None:
        pytest.skip(f"kmtl's {name} kernel does not build here (no C++ compiler, or KMTL_KERNELS=0)")
    return kernel
