"""The machine's matrix-multiply peak, measured on the spot with `tf.matmul`.

`kmtl bench train` divides the model's achieved GFLOP/s by this figure, measured in the
step's compute dtype (float32, or bfloat16 under ``mixed_bfloat16``): it says how much of
what the CPU can do on a large, square, well-blocked matmul the training step gets.
"""

from __future__ import annotations

import statistics
import time

CHAIN = 8  # matmuls per timed call, so that per-call overhead is negligible


def matmul_peak(size: int = 1024, seconds: float = 1.0, repeats: int = 3, dtype: str = "float32") -> dict:
    """Peak GFLOP/s of ``size × size`` matmuls (``2·size³`` FLOPs each) with TensorFlow.

    The matmuls run in a `tf.function` chain of ``CHAIN`` dependent products with the
    session's thread settings (TensorFlow's default: one thread per logical CPU); one
    warm-up call is excluded, then each repeat runs calls back to back for ``seconds``.

    Args:
        size: matrix side (1024: 2.1 GFLOP a product, large enough to reach the peak on CPUs).
        seconds: length of each timed window.
        repeats: timed windows.
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``.

    Returns:
        ``{"gflops": best, "median_gflops": median, "repeats": [...], "size": size, "dtype": dtype,
        "seconds": seconds}``:
        the best repeat is the peak (other jobs on a shared machine only ever slow it down).

    Example:
        >>> matmul_peak(256, seconds=0.1, repeats=1)["gflops"] > 0
        True
    """
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal([size, size], seed=[1, 2], dtype=tf.float32) / (size ** 0.5), dtype)
    b = tf.cast(tf.random.stateless_normal([size, size], seed=[3, 4], dtype=tf.float32) / (size ** 0.5), dtype)

    @tf.function
    def chain(x, w):
        for _ in range(CHAIN):
            x = tf.matmul(x, w)
        return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

    chain(a, b).numpy()  # warm-up: tracing, oneDNN primitive creation
    flops = 2.0 * size ** 3 * CHAIN
    runs = []
    for _ in range(max(1, repeats)):
        calls = 0
        start = time.perf_counter()
        while True:
            chain(a, b).numpy()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        runs.append(flops * calls / elapsed / 1e9)
    return {"gflops": max(runs), "median_gflops": statistics.median(runs), "repeats": runs, "size": size,
            "dtype": dtype, "seconds": seconds}
