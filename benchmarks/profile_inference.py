"""Where an inference call spends its time: the per-op profile of the MiniLM-L6 model's forward pass.

    python benchmarks/profile_inference.py                               # float32, batch 32 x 22 word pieces
    python benchmarks/profile_inference.py --precision mixed_bfloat16 --detail Cast
    python benchmarks/profile_inference.py --precision mixed_bfloat16 --serving-copy   # what a bfloat16 export runs
    python benchmarks/profile_inference.py --raw-text --batch 1          # the SavedModel's serving_default

What the SavedModel's ``ids`` signature computes (a fresh model with the fixed-shape benchmark's
two heads, `kmtl.bench.train.fixed_tasks`, on its random token ids, `fixed_batch`): a
`tf.function` of ``model(x, training=False)``, warmed up, timed, then ``--calls`` calls recorded
with the TensorFlow profiler and summed by op type (`profile_step.op_table`), per call.
``--serving-copy`` profiles `kmtl.model.precision.serving_copy` of the model (bfloat16 weights)
instead of the model itself. ``--raw-text`` exports the model as `kmtl export` does (the
tokenizer in the graph) and profiles the loaded SavedModel's ``serving_default`` on ``--batch``
20-word sentences (`kmtl.bench.serve.sentences`): the forward pass and the tokenization.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kmtl  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    p.add_argument("--serving-copy", action="store_true", help="profile kmtl.model.precision.serving_copy(model)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=22)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--detail", nargs="*", default=(), metavar="OP_TYPE", help="where these op types' time goes")
    p.add_argument("--raw-text", action="store_true",
                   help="profile the exported SavedModel's serving_default on raw text (tokenizer included)")
    p.add_argument("--top", type=int, default=15, help="how many op types to list")
    args = p.parse_args(argv)
    import tensorflow as tf
    from profile_step import op_table, print_op_table

    from kmtl.bench.train import fixed_batch, fixed_tasks
    from kmtl.model.precision import precision_scope, serving_copy

    with precision_scope(args.precision):
        encoder = kmtl.load_backbone(args.backbone)
        model = kmtl.build_model(encoder, fixed_tasks())
    if args.serving_copy:
        model = serving_copy(model)
    if args.raw_text:
        import tensorflow_text  # noqa: F401  (the serving graph's TF Text ops)

        from kmtl.bench.serve import sentences
        from kmtl.export import export_saved_model

        export_dir = tempfile.TemporaryDirectory(prefix="kmtl-profile-")  # removed when main returns
        saved = export_saved_model(model, encoder.preprocessor(128), export_dir.name, "profile")
        serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
        x = tf.constant(sentences(args.batch, 20))
        what = f"serving_default on raw text, batch {args.batch} x 20 words"

        def forward(texts):
            return serve(text=texts)
    else:
        x = {k: tf.constant(v)
             for k, v in fixed_batch(args.batch, args.length, encoder.backbone.vocabulary_size)["x"].items()}
        forward = tf.function(lambda v: model(v, training=False))
        what = f"batch {args.batch} x {args.length}"
    for _ in range(5):
        forward(x)
    start, load = time.perf_counter(), os.getloadavg()[0]
    for _ in range(20):
        forward(x)
    print(f"{args.backbone} {args.precision}{' serving copy' if args.serving_copy else ''}, {what}: "
          f"{(time.perf_counter() - start) / 20 * 1000:.2f} ms a call (unprofiled), load {load:.2f}")
    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    for _ in range(args.calls):
        forward(x)
    tf.profiler.experimental.stop()
    rows, total, detail = op_table(logdir, top=args.top, detail=tuple(args.detail))
    print(f"op types by host time over {args.calls} profiled calls ({total / args.calls * 1e3:.2f} ms of op "
          "events a call; ops on 2 threads can overlap):")
    print_op_table(rows, total, detail, args.calls, "call")


if __name__ == "__main__":
    main()
