"""1 replica and 2 replicas (MirroredStrategy on two logical CPUs) give the same updates.

For every weighting strategy: three steps, so that state a strategy took from the first
steps (DWA's loss ratios, GradNorm's weights, uncertainty's log-variances) is used later.
Plain SGD checks the gradients themselves (its update is linear in them); AdamW with a clip
norm that binds checks BERT's clipping of the global norm of the all-reduced gradient.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kmtl.weighting import STRATEGIES

SCRIPT = Path(__file__).parent / "scripts" / "replica_step.py"


def replica_steps(*args) -> dict:
    """The JSON report of tests/scripts/replica_step.py run with ``args``."""
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    return result


def _same_update(names, moved):
    result = replica_steps(*names)
    for name in names:
        r = result[name]
        assert r["max_moved"] > 1e-2, (name, r)  # the steps really changed the weights
        assert r["max_diff"] < 1e-5, (name, r)
        for task, weight in r["weights_1"].items():
            assert abs(weight - r["weights_2"][task]) < 1e-5, (name, r)
    # the dynamic strategies really moved the loss weights away from where they started
    start = {"sent": 1.0, "ner": 2.0, "sim": 1.0}
    for name in moved:
        assert any(abs(w - start[t]) > 1e-3 for t, w in result[name]["weights_1"].items()), name


# linear only changes weights between epochs. CI runs one strategy of each kind — static
# weights, a learned state in the model (uncertainty), per-task gradients (PCGrad); the
# others run with `-m slow` (each subprocess costs a minute of CI).
CI_STRATEGIES = ("static", "uncertainty", "pcgrad")


def test_weighting_strategies_give_the_same_update_on_one_and_two_replicas():
    _same_update(CI_STRATEGIES, moved=("uncertainty",))


@pytest.mark.slow
def test_every_other_weighting_strategy_gives_the_same_update_on_one_and_two_replicas():
    names = [n for n in STRATEGIES if n != "linear" and n not in CI_STRATEGIES]
    assert {"dwa", "gradnorm", "rlw"} <= set(names)
    _same_update(names, moved=("dwa", "gradnorm", "rlw"))


@pytest.mark.slow  # CI time (a minute a subprocess): the plain-SGD test above checks the same gradients
def test_adamw_clipping_the_global_norm_gives_the_same_update_on_one_and_two_replicas():
    # make_optimizer's AdamW, clip norm 1.0 (the default), 3 steps; pcgrad: a step-level hook
    # that computes its own gradients before optimizer.apply_gradients
    result = replica_steps("--adamw", "1.0", "static", "pcgrad")
    assert result["first_gradient_norm"] > 10.0, result  # the clipping binds: norm >> 1.0
    for name in ("static", "pcgrad"):
        assert result[name]["max_moved"] > 1e-2, (name, result[name])
        assert result[name]["max_diff"] < 1e-5, (name, result[name])
    # control: Keras' clipnorm clips each replica's partial gradient, variable by variable
    assert result["keras_clipnorm"]["max_diff"] > 1e-3, result["keras_clipnorm"]
