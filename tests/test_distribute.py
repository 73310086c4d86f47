"""1 replica and 2 replicas (MirroredStrategy on two logical CPUs) give the same updates.

For every weighting strategy: three steps, so that state a strategy took from the first
steps (DWA's loss ratios, GradNorm's weights, uncertainty's log-variances) is used later.
"""

import json
import subprocess
import sys
from pathlib import Path

from kmtl.weighting import STRATEGIES

SCRIPT = Path(__file__).parent / "scripts" / "replica_step.py"


def test_every_weighting_strategy_gives_the_same_update_on_one_and_two_replicas():
    names = [n for n in STRATEGIES if n != "linear"]  # linear only changes weights between epochs
    out = subprocess.run([sys.executable, str(SCRIPT), *names], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    for name in names:
        r = result[name]
        assert r["max_moved"] > 1e-2, (name, r)  # the steps really changed the weights
        assert r["max_diff"] < 1e-5, (name, r)
        for task, weight in r["weights_1"].items():
            assert abs(weight - r["weights_2"][task]) < 1e-5, (name, r)
    # the dynamic strategies really moved the loss weights away from where they started
    start = {"sent": 1.0, "ner": 2.0, "sim": 1.0}
    for name in ("dwa", "uncertainty", "gradnorm", "rlw"):
        assert any(abs(w - start[t]) > 1e-3 for t, w in result[name]["weights_1"].items()), name
