"""The training recipe kmtl uses when a config or a call does not say otherwise.

One place for the defaults that were measured rather than guessed, so that the config
(`kmtl.config`), the optimizer (`kmtl.optimizer.make_optimizer`) and the docs agree. Where each
figure comes from: README "Does multi-task help?" and benchmarks/results/compare-four-tasks-seeds.md
(`kmtl compare configs/compare_four_tasks.yaml --seeds 3`, the four shared tasks).

No TensorFlow here: the config is checked before TF is imported.
"""

LEARNING_RATE = 1e-4
"""The encoder's peak learning rate (AdamW, linear warm-up and decay). BERT's usual 5e-5 left
MiniLM-L6 under-trained at a short budget: every single-task baseline of the four shared tasks
gained at 1e-4 (STS-B +6.5 points, CoNLL +6.4), and so did the multi-task model on three of them."""

HEAD_LEARNING_RATE = 1e-3
"""The task heads' peak learning rate when none is given: heads start from random weights and
learn at 10x the encoder's 1e-4 (never below the encoder's own rate)."""

XLA_MAX_BATCH = 2
"""The largest batch `kmtl export --xla` runs XLA-compiled (larger ones keep the plain graph).
Measured in-process on MiniLM-L6, float32, 20-word sentences (AMD EPYC, 2 vCPUs, 2026-12-02 14:42-14:46,
another job paused, 1-min load about 2 falling from it; this CPU only):
XLA vs plain 6.9 vs 9.6 ms at batch 1, 10.9 vs 11.7 at batch 2, 16.8 vs 14.7 at batch 4 (padding
the length up to a bucket costs more than XLA saves), and 83-113 vs 74 ms at batch 32."""
MULTI_TASK_SHARING = "soft"
"""The sharing mode of a config with two or more tasks that names none (`kmtl.sharing.SoftSharing`:
each task its own copy of the encoder's top 3 layers, pulled together). On the four shared tasks
over 3 seeds (Intel Xeon AMX, bfloat16, 2026-12-02/03; benchmarks/results/compare-four-tasks-*-intel.md)
the top 2 layers gave Δm +0.95 % [+0.36, +1.55] against -1.66 % [-2.93, -0.38] for ``full`` with
the same baselines (on CoNLL full sharing lost 4.1 points where soft gained 2.7), and the top 3
+2.03 % [+1.60, +2.46], every task at or above its baseline (README "Does multi-task help?").
One task, ``init_from`` or options of another mode keep ``full``."""

MULTI_TASK_WEIGHTING = "uncertainty"
"""The loss-weighting strategy of a config with two or more tasks that names none and sets no
weights of its own (Kendall et al., CVPR 2018: `kmtl.weighting.UncertaintyWeighting`)."""


def head_rate(learning_rate: float, head_learning_rate=None) -> float:
    """The heads' peak rate: ``head_learning_rate``, else the larger of `HEAD_LEARNING_RATE` and
    the encoder's ``learning_rate``.

    Example:
        >>> head_rate(5e-5), head_rate(5e-5, 2e-4), head_rate(3e-3)
        (0.001, 0.0002, 0.003)
    """
    return head_learning_rate or max(HEAD_LEARNING_RATE, learning_rate)
