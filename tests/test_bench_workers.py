"""`kmtl bench train --workers N` (issue 14), with the tiny backbone: the 1-worker baseline, two
worker processes on loopback and two CPU devices in one process all run, and the figures are one
JSON object on the last stdout line. A benchmark, not a timed test: the figures must exist and be sane."""

import json

import pytest

from kmtl.bench.workers import threads_per_worker
from kmtl.cli import main

CASES = ("single", "workers", "mirrored")
CASE_KEYS = {"examples_per_sec", "step_seconds", "compute_seconds", "allreduce_seconds", "scaling_efficiency",
             "overhead_vs_single_seconds", "global_batch", "replicas", "processes", "threads"}


@pytest.mark.slow  # CI time: four TensorFlow processes, 80-110 s on 2 loaded cores
def test_two_workers_against_one_prints_the_scaling_as_one_json_object_last(capsys):
    code = main(["bench", "train", "--workers", "2", "--backbone", "tiny", "--batch-size", "4", "--seq-len", "16",
                 "--steps", "2", "--repeats", "1", "--warmup", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert {"examples_per_sec", "scaling_efficiency", "allreduce_method", "settings", "machine", *CASES} <= set(result)
    for case in CASES:
        assert CASE_KEYS <= set(result[case]), case
        assert result[case]["examples_per_sec"] > 0 and result[case]["step_seconds"] > 0
    assert result["scaling_efficiency"] > 0 and result["scaling_efficiency"] == result["workers"]["scaling_efficiency"]
    assert result["single"]["scaling_efficiency"] == pytest.approx(1.0)
    assert (result["single"]["global_batch"], result["workers"]["global_batch"], result["mirrored"]["global_batch"]) \
        == (4, 8, 8)  # weak scaling
    assert (result["workers"]["processes"], result["mirrored"]["processes"]) == (2, 1)
    assert result["workers"]["allreduce_seconds"] > 0 and result["single"]["allreduce_seconds"] == 0
    assert "all-reduce" in out and "efficiency" in out  # the table


def test_threads_per_worker_share_the_cores():
    assert [threads_per_worker(n, cores=2) for n in (1, 2, 3)] == [2, 1, 1]
    assert threads_per_worker(4, cores=16) == 4


def test_bad_worker_counts_are_one_clear_message(capsys):
    for argv, message in ((["--workers", "0"], "--workers must be at least 1"),
                          (["--workers", "2", "--data", "real"], "leave out --data real and --jit"),
                          (["--workers", "2", "--batch-size", "0"], "--batch-size must be at least 1")):
        assert main(["bench", "train", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
