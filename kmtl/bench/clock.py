"""`StepClock`: a Keras callback that times groups of training steps inside one `fit`."""

from __future__ import annotations

import time
from typing import Callable, List, Optional

import keras


class StepClock(keras.callbacks.Callback):
    """Times ``repeats`` windows of ``steps`` train steps after ``warmup`` steps, in one `fit`.

    A window runs from the end of the step before it to the end of its last step, so it
    includes waiting for the input pipeline. Steps are synchronous on CPU (a TensorFlow
    function call returns when its ops have run). ``between`` (if given) is called after each
    window but the last; its time is not counted (the side-by-side comparison runs the peer
    framework's repeat there).

    Args:
        warmup: steps before the first window (excluded).
        steps: steps per window.
        repeats: windows.
        between: ``between(index)`` after window ``index``.

    Example:
        >>> clock = StepClock(warmup=3, steps=20, repeats=3)
        >>> model.fit(data, steps_per_epoch=63, callbacks=[clock], verbose=0)
        >>> clock.seconds          # three window lengths
    """

    def __init__(self, warmup: int, steps: int, repeats: int, between: Optional[Callable[[int], None]] = None):
        super().__init__()
        self.warmup, self.steps, self.repeats, self.between = warmup, steps, repeats, between
        self.seconds: List[float] = []
        self._start = None

    def on_train_begin(self, logs=None):
        self.seconds = []
        self._start = time.perf_counter() if self.warmup == 0 else None

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1 - self.warmup
        if done < 0:
            return
        now = time.perf_counter()
        if done > 0 and done % self.steps == 0 and len(self.seconds) < self.repeats:
            self.seconds.append(now - self._start)
            if self.between is not None and len(self.seconds) < self.repeats:
                self.between(len(self.seconds) - 1)
            now = time.perf_counter()
        if done % self.steps == 0:
            self._start = now


def interleaved_ms(steps: dict, inputs: tuple, rounds: int, per_round: int, warmup: int = 5):
    """Median-ready timings of several callables on the same ``inputs``, interleaved: each round
    calls every step ``per_round`` times in turn, so load from other jobs hits them alike (the
    micro-benchmarks' A/B loop). Returns ``({name: [ms per call, one per round]}, (load before,
    load after))``, the 1-min load averages.

    Example:
        >>> times, load = interleaved_ms({"a": fa, "b": fb}, (x,), rounds=5, per_round=20)
    """
    import os

    import tensorflow as tf

    for step in steps.values():
        for _ in range(warmup):
            step(*inputs)
    times = {name: [] for name in steps}
    load0 = os.getloadavg()[0]
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                out = step(*inputs)
            [v.numpy() for v in tf.nest.flatten(out)]  # wait for the last call's results
            times[name].append((time.perf_counter() - start) / per_round * 1e3)
    return times, (load0, os.getloadavg()[0])


def times_lines(times: dict) -> list:
    """`interleaved_ms`' timings as lines: each candidate's median over rounds, then every round.

    Example:
        >>> times_lines({"plain": [2.0, 3.0, 2.5]})
        ['  plain    2.500 ms   rounds 2.00 3.00 2.50']
    """
    import statistics

    width = max(len(name) for name in times)
    return [f"  {name:<{width}}  {statistics.median(t):7.3f} ms   rounds {' '.join(f'{v:.2f}' for v in t)}"
            for name, t in times.items()]
