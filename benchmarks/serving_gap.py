"""Where a float32 SavedModel loses to ONNX Runtime: the same forward pass on token ids, taken apart.

    python benchmarks/serving_gap.py                        # batch 1 and 32, 22 word pieces, 6 rounds
    python benchmarks/serving_gap.py --batches 32 --rounds 10

Five timings of MiniLM-L6 with the fixed-shape benchmark's two heads (`kmtl.bench.train.fixed_tasks`)
on the same random token ids, interleaved round by round (this VM's speed drifts by tens of per
cent within minutes, so each round compares neighbours in time):

* ``tf_variables``: ``model(x, training=False)`` in a `tf.function`, the weights read from
  variables: what the SavedModel's ``ids`` signature runs;
* ``tf_constants``: the same with every weight a constant of the graph (read through
  ``keras.StatelessScope``): oneDNN then caches each matmul's weights in its blocked layout
  (TensorFlow marks a matmul whose weight input is a ``Const`` ``is_filter_const``), as ONNX
  Runtime prepacks its initializers;
* ``onnxruntime``: the model's ONNX export (`kmtl.export.export_onnx`) in ONNX Runtime;
* ``gemms_tf`` / ``gemms_ort``: only the encoder's matmuls (four attention projections and the
  two feed-forward ones per layer) with their biases, residual sums and the GELU, at the batch's
  shape, in TensorFlow (weights in variables) and in ONNX Runtime: the two matmul libraries alone.

``tf_variables - gemms_tf`` against ``onnxruntime - gemms_ort`` is what each runtime spends
outside the matmuls (layer norms, attention's transposes, softmax and batched matmuls, embeddings,
per-op dispatch). Prints a table (median ms a call, and how many rounds ``tf_constants`` beat
``tf_variables``); ``--json`` adds the figures as one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402


def gemm_chain_tf(x, weights, biases, layers):
    """The encoder's matmuls alone: per layer four [h, h] projections of the input (summed, standing
    in for attention), then the feed-forward pair with its GELU and the residual sum."""
    import tensorflow as tf

    h = x
    for layer in range(layers):
        w, b = weights[6 * layer: 6 * layer + 6], biases[6 * layer: 6 * layer + 6]
        heads = tf.add_n([tf.nn.bias_add(tf.matmul(h, w[j]), b[j]) for j in range(4)])
        inner = tf.nn.gelu(tf.nn.bias_add(tf.matmul(heads, w[4]), b[4]))
        h = tf.nn.bias_add(tf.matmul(inner, w[5]), b[5]) + heads
    return h


def gemm_chain_onnx(weights, biases, layers, rows, hidden):
    """`gemm_chain_tf` as an ONNX model (MatMul, Add, Sum, com.microsoft Gelu) with the weights as
    initializers."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, h = [], [], "x"
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]

    def dense(i, source):
        nodes.extend([helper.make_node("MatMul", [source, f"W{i}"], [f"m{i}"]),
                      helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"])])
        return f"a{i}"

    for layer in range(layers):
        first = 6 * layer
        nodes.append(helper.make_node("Sum", [dense(first + j, h) for j in range(4)], [f"s{layer}"]))
        nodes.append(helper.make_node("Gelu", [dense(first + 4, f"s{layer}")], [f"g{layer}"], domain="com.microsoft"))
        nodes.append(helper.make_node("Add", [dense(first + 5, f"g{layer}"), f"s{layer}"], [f"h{layer}"]))
        h = f"h{layer}"
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, hidden])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [rows, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def candidates(model, encoder, batch: int, length: int):
    """``({"tf_variables": n, "tf_constants": n}, {name: zero-argument call})`` for one batch size
    (see the module docstring): the variable reads in each TensorFlow graph (none with constants),
    and the calls."""
    import keras
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    from kmtl.bench.flops import encoder_dims
    from kmtl.bench.train import fixed_batch
    from kmtl.export import export_onnx

    ids = {k: v for k, v in fixed_batch(batch, length, encoder.backbone.vocabulary_size)["x"].items()
           if k in ("token_ids", "segment_ids", "padding_mask")}
    x = {k: tf.constant(v) for k, v in ids.items()}
    with_variables = tf.function(lambda v: model(v, training=False))
    values = [w.numpy() for w in model.weights]

    @tf.function
    def with_constants(v):
        mapping = [(w, tf.constant(value)) for w, value in zip(model.weights, values)]
        with keras.StatelessScope(state_mapping=mapping):
            return model(v, training=False)

    with tempfile.TemporaryDirectory(prefix="kmtl-gap-") as tmp:
        onnx_dir = export_onnx(model, tmp, "gap", max_length=max(length, 32))
        session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: ids[i.name] for i in session.get_inputs()}

    dims = encoder_dims(encoder.backbone)
    hidden, inner, layers = dims["hidden"], dims["intermediate"], dims["layers"]
    rng = np.random.default_rng(0)
    shapes = [(hidden, hidden)] * 4 + [(hidden, inner), (inner, hidden)]
    weights = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for _ in range(layers) for s in shapes]
    biases = [(rng.standard_normal(s[1]) * 0.02).astype(np.float32) for _ in range(layers) for s in shapes]
    rows = batch * length
    chain_input = rng.standard_normal((rows, hidden)).astype(np.float32)
    tf_weights = [tf.Variable(w) for w in weights]
    tf_biases = [tf.Variable(b) for b in biases]
    chain_tf = tf.function(lambda v: gemm_chain_tf(v, tf_weights, tf_biases, layers))
    chain_session = ort.InferenceSession(gemm_chain_onnx(weights, biases, layers, rows, hidden).SerializeToString(),
                                         providers=["CPUExecutionProvider"])
    chain_x = tf.constant(chain_input)
    reads = {name: sum(op.type == "ReadVariableOp" for op in fn.get_concrete_function(x).graph.get_operations())
             for name, fn in (("tf_variables", with_variables), ("tf_constants", with_constants))}
    return reads, {
        "tf_variables": lambda: with_variables(x),
        "tf_constants": lambda: with_constants(x),
        "onnxruntime": lambda: session.run(None, feed),
        "gemms_tf": lambda: chain_tf(chain_x),
        "gemms_ort": lambda: chain_session.run(None, {"x": chain_input}),
    }


def check_constants(calls: dict) -> float:
    """Largest difference between the variables' and the constants' outputs (the same model)."""
    import numpy as np

    a, b = calls["tf_variables"](), calls["tf_constants"]()
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


def measure(calls: dict, rounds: int, min_seconds: float) -> dict:
    """``{name: [ms a call, one per round]}``: in each round every candidate runs for at least
    ``min_seconds`` (after three warm-up calls before the first round)."""
    for call in calls.values():
        for _ in range(3):
            call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            n, start = 0, time.perf_counter()
            while True:
                call()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            times[name].append(elapsed / n * 1e3)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--length", type=int, default=22, help="word pieces a row (22: kmtl bench serve's 20-word sentences)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=1.0, help="at least this long per candidate and round")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from kmtl.bench.serve import machine_info
    from kmtl.bench.train import fixed_tasks

    machine = machine_info()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    encoder = kmtl.load_backbone(args.backbone)
    model = kmtl.build_model(encoder, fixed_tasks())
    results = {}
    for batch in args.batches:
        reads, calls = candidates(model, encoder, batch, args.length)
        diff = check_constants(calls)
        times = measure(calls, args.rounds, args.seconds)
        won = sum(c < v for c, v in zip(times["tf_constants"], times["tf_variables"]))
        results[batch] = {"ms": {k: statistics.median(v) for k, v in times.items()}, "rounds": times,
                          "constants_won": won, "constants_max_abs_diff": diff,
                          "variable_reads": reads}
    print(f"\n{args.backbone}, float32, {args.length} word pieces a row; median ms a call over {args.rounds} "
          f"interleaved rounds; {machine['cpu_model']}, {machine['cpu_count']} CPUs, load "
          f"{machine['load_average_1m_at_start']:.2f} -> {os.getloadavg()[0]:.2f}; {started}")
    names = list(next(iter(results.values()))["ms"])
    print("batch  " + "".join(f"{n:>14}" for n in names) + "   outside the matmuls: TF / ORT")
    for batch, r in results.items():
        ms = r["ms"]
        print(f"{batch:5d}  " + "".join(f"{ms[n]:14.2f}" for n in names)
              + f"   {ms['tf_variables'] - ms['gemms_tf']:.2f} / {ms['onnxruntime'] - ms['gemms_ort']:.2f}"
              + f"   (constants ahead in {r['constants_won']} of {args.rounds} rounds, outputs within "
              + f"{r['constants_max_abs_diff']:.1e})")
    if args.json:
        print(json.dumps({"date": started, "machine": {**machine, "load_average_1m_at_end": os.getloadavg()[0]},
                          "settings": vars(args), "results": results}))


if __name__ == "__main__":
    main()
