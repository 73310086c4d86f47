"""1 replica and 2 replicas (MirroredStrategy on two logical CPUs) give the same update."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "replica_step.py"


def test_mirrored_two_replicas_match_one_replica():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["max_moved"] > 1e-3  # the step really changed the weights
    assert result["max_diff"] < 1e-5, result
