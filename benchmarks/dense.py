"""Inference: the encoder's feed-forward dense + GELU as one fused oneDNN matmul (`kmtl.dense`) against Keras' call.

    python benchmarks/dense.py                           # float32 and bfloat16, batch 32 x 22 word pieces
    python benchmarks/dense.py --batch 1 --length 22 --rounds 8

Two measurements, each an interleaved A/B (`kmtl.bench.clock.interleaved_ms`: rounds alternate
between candidates so that load from other jobs hits each alike; the median over rounds is
printed with the load average):

1. the feed-forward dense alone, ``[batch·length, 384] × [384, 1536]`` + bias + GELU: Keras'
   form (3-D matmul, add, `kmtl.activations.Float32Activation`) against `kmtl.dense`'s (2-D
   ``MatMul``, ``BiasAdd``, ``tf.nn.gelu``, which Grappler fuses into one oneDNN op);
2. the MiniLM-L6 multi-task model's forward pass on token ids (what the ``ids`` signature
   runs), with `kmtl.dense.fast_dense` and with Keras' ``Dense.call`` on the same model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401
from kmtl.bench.clock import interleaved_ms  # noqa: E402


def _report(title, times, load):
    print(f"{title}; load {load[0]:.2f} -> {load[1]:.2f}")
    for name, t in times.items():
        print(f"  {name:<8} {statistics.median(t):8.3f} ms   rounds {' '.join(f'{v:.2f}' for v in t)}")


def _dense_alone(dtype, args, per_round):
    import tensorflow as tf
    from keras_hub.src.utils.keras_utils import gelu_approximate

    from kmtl.activations import Float32Activation
    from kmtl.dense import inference_dense

    x = tf.cast(tf.random.normal([args.batch, args.length, 384]), dtype)
    kernel = tf.cast(tf.random.normal([384, 1536]) * 0.05, dtype)
    bias = tf.cast(tf.random.normal([1536]) * 0.1, dtype)
    gelu = Float32Activation(gelu_approximate)
    steps = {"keras": tf.function(lambda v: gelu(tf.matmul(v, kernel) + bias)),
             "kmtl": tf.function(lambda v: inference_dense(v, kernel, bias, gelu_approximate))}
    times, load = interleaved_ms(steps, (x,), args.rounds, per_round)
    _report(f"{dtype} feed-forward dense [{args.batch * args.length}, 384] x [384, 1536] + GELU", times, load)


def _forward(dtype, args, per_round):
    import keras
    import tensorflow as tf

    from kmtl.bench.train import fixed_batch, fixed_tasks
    from kmtl.dense import fast_dense
    from kmtl.model.precision import precision_scope

    precision = "float32" if dtype == "float32" else "mixed_bfloat16"
    with precision_scope(precision):
        encoder = kmtl.load_backbone(args.backbone)
        model = kmtl.build_model(encoder, fixed_tasks())
    batch = fixed_batch(args.batch, args.length, encoder.backbone.vocabulary_size)["x"]
    inputs = {k: tf.constant(v) for k, v in batch.items()}
    fused = tf.function(lambda v: model(v, training=False))
    for layer in model._flatten_layers():  # the same model with Keras' Dense.call
        if type(layer) is keras.layers.Dense:
            layer.__dict__.pop("call", None)
    plain = tf.function(lambda v: model(v, training=False))
    plain.get_concrete_function(inputs)
    fast_dense(model)
    fused.get_concrete_function(inputs)  # traced with kmtl.dense's call
    times, load = interleaved_ms({"keras": plain, "kmtl": fused}, (inputs,), args.rounds, per_round)
    _report(f"{dtype} {args.backbone} forward, batch {args.batch} x {args.length}", times, load)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=22)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--iters", type=int, default=120, help="calls per candidate, over all rounds")
    p.add_argument("--backbone", default="minilm-l6")
    args = p.parse_args(argv)
    per_round = max(1, args.iters // args.rounds)
    for dtype in args.dtypes:
        _dense_alone(dtype, args, per_round)
        _forward(dtype, args, per_round)


if __name__ == "__main__":
    main()
