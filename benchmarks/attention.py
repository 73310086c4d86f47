"""Micro-benchmark: one self-attention layer (or a whole model's forward), Keras' call against `kmtl.attention`.

    python benchmarks/attention.py                        # [32, 64, 384], 12 heads, forward + backward, fp32 and bf16
    python benchmarks/attention.py --rounds 24 --dtypes mixed_bfloat16
    python benchmarks/attention.py --model minilm-l6      # inference: the whole model's forward, batch 32 x 64

Layer: a ``keras.layers.MultiHeadAttention`` built as keras-hub's ``TransformerEncoder`` builds it
(dropout 0.1, `kmtl.dropout` on its attention dropout, as in a kmtl model), called in training
with a padding mask ([B, 1, S], a quarter of the rows padded to half length); gradients with
respect to the input and all eight weights. ``--model``: two kmtl models (the fixed-shape
benchmark's two heads, `kmtl.bench.train.fixed_tasks`), one with `kmtl.attention.fast_attention`,
called by a `tf.function` with ``training=False``. Rounds alternate between the candidates so that
load from other jobs hits each alike; the median over rounds is printed with the load average.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401
from kmtl.bench.clock import interleaved_ms  # noqa: E402


def layer_steps(policy, batch, length, hidden, heads, dropout, mask):
    """``{"keras": step, "kmtl": step}``: forward + backward of twin attention layers, and their arguments."""
    import keras
    import tensorflow as tf

    from kmtl.attention import fast_attention
    from kmtl.dropout import fast_dropout

    layers = {}
    for name in ("keras", "kmtl"):
        layer = keras.layers.MultiHeadAttention(heads, hidden // heads, dropout=dropout, dtype=policy, seed=1)
        layer.build(query_shape=(None, length, hidden), value_shape=(None, length, hidden))
        fast_dropout(layer)
        if name == "kmtl":
            assert fast_attention(keras.Sequential([layer])) == 1
            layer.set_weights(layers["keras"].get_weights())
        layers[name] = layer
    dtype = layers["keras"].compute_dtype
    x = tf.cast(tf.random.normal([batch, length, hidden], seed=0), dtype)
    dy = tf.cast(tf.random.normal([batch, length, hidden], seed=1), dtype)

    def step_of(layer):
        @tf.function
        def step(x, dy, mask):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = layer(x, x, attention_mask=mask, training=True)
                loss = tf.reduce_sum(tf.cast(out * dy, tf.float32))
            return tape.gradient(loss, [x, *layer.trainable_variables])
        return step

    return {name: step_of(layer) for name, layer in layers.items()}, (x, dy, mask)


def model_steps(policy, backbone, batch, length):
    """``{"keras": step, "kmtl": step}``: inference of twin kmtl models on a fixed batch."""
    import keras
    import tensorflow as tf

    from kmtl.attention import fast_attention
    from kmtl.bench.train import fixed_batch, fixed_tasks
    from kmtl.model.precision import precision_scope

    steps = {}
    for name in ("keras", "kmtl"):
        with precision_scope(policy):
            encoder = kmtl.load_backbone(backbone)
            model = kmtl.build_model(encoder, fixed_tasks())
        for layer in model._flatten_layers():
            if type(layer) is keras.layers.MultiHeadAttention:
                layer.__dict__.pop("call", None)  # Keras' own call, whatever MultiTaskModel does
        if name == "kmtl":
            assert fast_attention(model) > 0
        steps[name] = tf.function(lambda x, model=model: model(x, training=False))
    x = {k: tf.constant(v) for k, v in fixed_batch(batch, length, encoder.backbone.vocabulary_size)["x"].items()}
    return steps, (x,)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=[32, 64, 384], metavar=("BATCH", "LENGTH", "HIDDEN"))
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--dtypes", nargs="+", default=["float32", "mixed_bfloat16"])
    p.add_argument("--model", help="a backbone (minilm-l6, tiny): time the whole model's inference instead")
    p.add_argument("--iters", type=int, default=240, help="calls per candidate, over all rounds")
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    b, t, d = args.shape
    per_round = max(1, args.iters // args.rounds)
    mask = np.ones([b, 1, t], np.int32)
    mask[: b // 4, :, t // 2:] = 0
    for policy in args.dtypes:
        if args.model:
            steps, inputs = model_steps(policy, args.model, b, t)
            what = f"{args.model} inference, batch {b} x {t}"
        else:
            steps, inputs = layer_steps(policy, b, t, d, args.heads, args.dropout, tf.constant(mask))
            what = f"attention layer {args.shape}, {args.heads} heads, forward + backward"
        times, (load0, load1) = interleaved_ms(steps, inputs, args.rounds, per_round)
        ahead = sum(k > f for k, f in zip(times["keras"], times["kmtl"]))
        print(f"{policy} {what}: median of {args.rounds} rounds x {per_round} calls; "
              f"load {load0:.2f} -> {load1:.2f}; kmtl ahead in {ahead} of {args.rounds} rounds", flush=True)
        for name, ts in times.items():
            print(f"  {name:<6} {statistics.median(ts):8.3f} ms   rounds {' '.join(f'{v:.2f}' for v in ts)}", flush=True)


if __name__ == "__main__":
    main()
