"""Analytical FLOP count of a BERT encoder with heads: the figure achieved GFLOP/s is based on.

Formula (a multiply-add counts as 2 FLOPs; embeddings, softmax, LayerNorm, GELU, dropout and
the optimizer update are left out: they are memory-bound and small next to the matmuls):

* ``P_mm`` — parameters that take part in a matmul on every token: per layer the Q, K, V and
  output projections (``4·H²``) and the two feed-forward matrices (``2·H·I``); plus the token
  head (``H·C_tok`` per tagging task). Sentence heads (``H·C``) run once per sequence.
* forward, per token: ``2·P_mm``; backward: twice the forward (gradients for the weights and
  for the activations), so **training = 6·P_mm FLOPs per token** (Kaplan et al. 2020).
* attention scores and the weighted sum, per layer and sequence of padded length ``S``:
  ``QKᵀ`` ``2·S²·H`` + ``AV`` ``2·S²·H`` forward, so **training adds 12·L·S²·H** per sequence
  (3 × the forward's ``4·L·S²·H``).
* sentence heads: ``6·H·C`` per sequence in training, ``2·H·C`` in inference.

Tokens are *padded* tokens: the work the CPU really does. The same count applied to the
PyTorch recipe's identical batches makes achieved GFLOP/s comparable between the two.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple


def encoder_dims(backbone) -> dict:
    """``layers``, ``hidden``, ``intermediate`` of a keras-hub BERT backbone."""
    return {"layers": int(backbone.num_layers), "hidden": int(backbone.hidden_dim),
            "intermediate": int(backbone.intermediate_dim)}


def matmul_params(layers: int, hidden: int, intermediate: int, token_classes: int = 0) -> int:
    """``P_mm``: per-token matmul parameters of the encoder plus token heads (biases left out)."""
    return layers * (4 * hidden * hidden + 2 * hidden * intermediate) + hidden * token_classes


def step_flops(shapes: Iterable[Tuple[int, int]], layers: int, hidden: int, intermediate: int,
               token_classes: int = 0, sentence_classes: int = 0, training: bool = True) -> float:
    """FLOPs of the batches ``shapes`` (``(batch, padded_length)`` pairs).

    Args:
        shapes: one ``(batch, length)`` pair per batch.
        layers, hidden, intermediate: the encoder's sizes (`encoder_dims`).
        token_classes: outputs of all token-level heads together.
        sentence_classes: outputs of all sentence-level heads together.
        training: forward + backward (×3 of the forward) when True, forward only otherwise.

    Example:
        >>> step_flops([(32, 64)], 6, 384, 1536, token_classes=9, sentence_classes=2) / 1e9
        131.0...
    """
    factor = 3 if training else 1
    p_mm = matmul_params(layers, hidden, intermediate, token_classes)
    total = 0.0
    for batch, length in shapes:
        tokens = batch * length
        total += factor * 2 * p_mm * tokens
        total += factor * 4 * layers * length * length * hidden * batch
        total += factor * 2 * hidden * sentence_classes * batch
    return total


def head_classes(tasks: Sequence) -> Tuple[int, int]:
    """``(token_classes, sentence_classes)`` summed over the tasks' heads."""
    token = sum(t.num_outputs for t in tasks if t.token_level)
    sentence = sum(t.num_outputs for t in tasks if not t.token_level)
    return token, sentence
