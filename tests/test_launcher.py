"""`kmtl train --workers N`'s launcher (issue 14): worker processes with their TF_CONFIG, the
chief's output streamed, every worker stopped when one fails. The workers here are small Python
scripts, not TensorFlow (tests/test_multi_worker.py trains a real cluster)."""

import json
import subprocess
import sys
import time

import pytest

from kmtl.errors import KmtlError
from kmtl.training.launcher import free_ports, launch_workers, tf_config, train_command

REPORT = """
import json, os, sys
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
with open(os.path.join(sys.argv[1], f"worker-{index}.json"), "w") as f:
    json.dump({"tf_config": config, "threads": os.environ.get("TF_NUM_INTRAOP_THREADS")}, f)
print(f"worker {index} done")
"""

FAIL_ONE = """
import json, os, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
if index == 1:
    print("data error in worker 1"); sys.exit(3)
time.sleep(60)  # the chief would go on: the launcher must stop it
"""


def test_each_worker_gets_its_tf_config_and_its_share_of_the_cores(tmp_path, capfd):
    launch_workers([sys.executable, "-c", REPORT, str(tmp_path)], 3, threads=2, echo=print)
    seen = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(3)]
    addresses = seen[0]["tf_config"]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert [s["tf_config"]["task"] for s in seen] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(s["tf_config"]["cluster"]["worker"] == addresses and s["threads"] == "2" for s in seen)
    out = capfd.readouterr().out
    assert "worker 0 done" in out and "worker 1 done" not in out  # the chief's output only


def test_a_failed_worker_stops_the_others_and_is_named():
    start = time.monotonic()
    with pytest.raises(KmtlError) as err:
        launch_workers([sys.executable, "-c", FAIL_ONE], 2, echo=lambda line: None)
    assert time.monotonic() - start < 30  # the sleeping chief was stopped, not waited for
    assert "worker 1 of 2 exited with status 3" in str(err.value) and "data error in worker 1" in str(err.value)


def test_one_worker_is_refused():
    with pytest.raises(KmtlError, match="give 2 or more"):
        launch_workers(["true"], 1)


def test_ports_tf_config_and_the_workers_command_line():
    ports = free_ports(4)
    assert len(set(ports)) == 4
    assert json.loads(tf_config(["a:1", "b:2"], 1)) == {"cluster": {"worker": ["a:1", "b:2"]},
                                                        "task": {"type": "worker", "index": 1}}
    from kmtl.cli import build_parser

    args = build_parser().parse_args(["train", "c.yaml", "--workers", "2", "--epochs", "3", "--no-export", "-q"])
    command = train_command(args)
    assert command[:5] == [sys.executable, "-m", "kmtl.cli", "train", "c.yaml"] and "--workers" not in command
    assert ["--epochs", "3"] == command[5:7] and {"--resume", "--no-export", "--quiet"} <= set(command)


def test_the_cli_refuses_zero_workers_without_a_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kmtl.cli", "train", "missing.yaml", "--workers", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--workers" in out.stderr and "Traceback" not in out.stderr
