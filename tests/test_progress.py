"""Progress output (bars on a terminal, one line per phase elsewhere, nothing with --quiet) and
TensorFlow's start-up lines at the command line."""

import io
import re
import subprocess
import sys

import pytest

from kmtl import progress
from kmtl.progress import Progress, phase
from kmtl.tf_startup import filter_lines


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def default_mode_restored():
    yield
    progress.set_default_mode("auto")


def test_bar_on_a_terminal_one_line_elsewhere_nothing_when_off():
    tty, plain, off = Terminal(), io.StringIO(), Terminal()
    for stream, mode in ((tty, None), (plain, None), (off, "off")):
        with Progress("evaluate s", total=3, unit="examples", stream=stream, mode=mode, min_interval=0) as bar:
            for _ in range(3):
                bar.update()
    drawn = tty.getvalue()
    assert drawn.count("\r") == 5 and "0/3 examples" in drawn and drawn.endswith("3/3 examples (0.0 s)\x1b[K\n")
    assert "[========================] 3/3" in drawn
    assert plain.getvalue().count("\n") == 1 and plain.getvalue().startswith("evaluate s: 3 examples in ")
    assert "\r" not in plain.getvalue()
    assert off.getvalue() == ""


def test_default_mode_off_silences_and_phase_prints_its_duration():
    stream = io.StringIO()
    with phase("load run", stream=stream):
        pass
    assert stream.getvalue().startswith("load run: ") and stream.getvalue().endswith(" s\n")
    progress.set_default_mode("off")
    with phase("load run", stream=Terminal()) as p:
        assert p.mode == "off"
    with pytest.raises(ValueError, match="not one of: auto, bar, lines, off"):
        progress.set_default_mode("loud")


def test_evaluate_tasks_shows_each_task_progress(tiny, monkeypatch):
    import kmtl
    from kmtl.data import Example
    from kmtl.evaluation import evaluate_tasks

    model = kmtl.build_model(tiny, [kmtl.tasks.Classification("s", labels=["a", "b"])], max_length=16)
    dev = {"s": [Example(text=f"text number {i}", label="ab"[i % 2]) for i in range(5)]}
    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    report = evaluate_tasks(model, dev, model.preprocessor, batch_size=2)
    assert report["s"]["examples"] == 5
    assert "evaluate s [" in tty.getvalue() and tty.getvalue().rstrip().endswith("\x1b[K")
    assert "5/5 examples" in tty.getvalue() and "2/5 examples" in tty.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    evaluate_tasks(model, dev, model.preprocessor, progress="off")
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("command", [["train", "c.yaml"], ["demo"], ["compare", "c.yaml"], ["evaluate", "run"],
                                     ["export", "run"]])
def test_quiet_flag_on_every_command_that_prints(command):
    from kmtl.cli import _keras_verbose, build_parser

    args = build_parser().parse_args([*command, "--quiet"])
    assert args.quiet
    if hasattr(args, "verbose"):
        assert _keras_verbose(args) == 0
        assert _keras_verbose(build_parser().parse_args(command)) == 1  # compare too: a bar by default


def test_compare_quiet_prints_the_report_only(tmp_path):
    from test_compare import stand_in_trainer, write_config, write_data

    import kmtl
    from kmtl.backbone import tiny_encoder
    from kmtl.compare import compare
    from kmtl.config import load_config

    model = kmtl.build_model(tiny_encoder(seed=1), [kmtl.tasks.Classification("x", ["a", "b"])])
    write_data(tmp_path)
    lines = []
    compare(load_config(write_config(tmp_path)), trainer=stand_in_trainer([], model), echo=lines.append)
    # elapsed seconds depend on the machine's load: compare the lines with them blanked
    shown = [re.sub(r"\d+ s\b", "N s", line.strip()) for line in lines[:3]]
    assert shown == ["== [1/3] single-task baseline: sentiment (N s in) ==",
                     "[1/3] baseline sentiment: trained in N s",
                     "== [2/3] single-task baseline: ner (N s in) =="]
    progress.set_default_mode("off")
    quiet = []
    compare(load_config(write_config(tmp_path, limit=12)), trainer=stand_in_trainer([], model), echo=quiet.append)
    assert not any("==" in line or "baseline" in line for line in quiet)
    assert any("Δm" in line for line in quiet) and quiet[-1].startswith("TensorBoard: ")


# ------------------------------------------------------------------ TensorFlow's start-up lines

STARTUP = b"""WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796144627.279922   11355 port.cc:153] oneDNN custom operations are on. You may see slightly different
I0000 00:00:1796144627.281505   11355 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796144630.738376   11355 port.cc:153] oneDNN custom operations are on. You may see slightly different
I0000 00:00:1796144630.739297   11355 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
a Python warning
"""


def test_filter_keeps_one_copy_of_what_informs():
    kept = filter_lines(STARTUP).decode().splitlines()
    assert len(kept) == 2 and "cudart_stub.cc:31] Could not find cuda drivers" in kept[0]
    assert kept[1] == "a Python warning"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kmtl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_start_up_lines(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ntasks: []\n")
    for args in (["--help"], ["train", "bad.yaml"]):  # rejected before TensorFlow is imported: no start-up line
        out = run_cli(*args, cwd=tmp_path)
        assert "I0000" not in out.stderr and "InitializeLog" not in out.stderr
    assert run_cli("train", "bad.yaml", cwd=tmp_path).stderr.count("\n") == 2  # the error and its one problem

    (tmp_path / "notrun").mkdir()  # imports TensorFlow (load_run), then stops with exit 2
    out = run_cli("export", "notrun", cwd=tmp_path)
    assert out.returncode == 2 and "notrun is not a finished kmtl run" in out.stderr
    lines = out.stderr.splitlines()
    # was 7: absl's preamble, the oneDNN notice and the CUDA line, twice (two copies of absl, in
    # libtensorflow_framework.so.2 and _pywrap_profiler_plugin.so), then the error
    assert "InitializeLog" not in out.stderr and "oneDNN custom operations" not in out.stderr
    assert len(lines) <= 2 and sum("cudart_stub" in line for line in lines) <= 1
