"""A/B the speed levers of kmtl training, interleaved in one process (the machine may be shared).

    python benchmarks/levers.py xla                 # fixed 32 x 64: XLA on vs off
    python benchmarks/levers.py padding             # real data, max 128: longest / buckets / grouped, XLA on and off
    python benchmarks/levers.py adam                # fixed 32 x 64: fused Adam update vs Keras' per-variable ops
    python benchmarks/levers.py gelu                # fixed 32 x 64, bfloat16: GELU computed in float32 vs bfloat16
    python benchmarks/levers.py dropout             # fixed 32 x 64: kmtl's 16-bit dropout vs Keras', bf16 and fp32
    python benchmarks/levers.py layernorm           # fixed 32 x 64: kmtl.layer_norm vs Keras' LayerNormalization, bf16 and fp32
    python benchmarks/levers.py attention           # fixed 32 x 64: kmtl.attention vs Keras' MultiHeadAttention, bf16 and fp32
    python benchmarks/levers.py sharing             # fixed 32 x 64, bf16: soft sharing (grouped rows; one-hot under XLA) vs full
    python benchmarks/levers.py fusedgelu           # fixed 32 x 64: GELU as XLA-fused loops vs plain ops, bf16 and fp32
    python benchmarks/levers.py spe --warmup 4      # fixed 32 x 64: steps_per_execution 4 vs 1, bf16, fp32
    python benchmarks/levers.py adamwkernel         # fixed 32 x 64: kmtl's AdamW kernel vs TF's ops, bf16, fp32
    python benchmarks/levers.py dropoutkernel       # fixed 32 x 64: kmtl's dropout kernel vs its TF ops, bf16, fp32
    python benchmarks/levers.py layernormkernel     # fixed 32 x 64: kmtl's layer-norm kernel vs its TF ops, bf16, fp32
    python benchmarks/levers.py softmaxkernel       # fixed 32 x 64: kmtl's softmax-gradient kernel vs TF's ops, bf16, fp32
    python benchmarks/levers.py clipfold            # fixed 32 x 64: the clip's multiply in the AdamW kernel vs its own pass
    python benchmarks/levers.py rowclip             # fixed 32 x 64: embedding gradient clipped on its rows vs dense, bf16, fp32
    python benchmarks/levers.py --variants data=fixed,jit=1 data=fixed,jit=0 --rounds 5

Each variant is a `kmtl.bench.train.TrainBench` (its own model); rounds go variant 1,
variant 2, ... so that load from other jobs hits every variant alike. Each round is one
``fit`` of ``--warmup`` excluded steps and ``--steps`` timed steps; the median over rounds is
printed with the load average of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kmtl  # noqa: E402,F401

PRESETS = {
    "xla": ["data=fixed,jit=1", "data=fixed,jit=0"],
    "padding": ["data=real,jit=0,padding=longest", "data=real,jit=0,padding=grouped",
                "data=real,jit=1,padding=buckets", "data=real,jit=1,padding=grouped"],
    "adam": ["data=fixed,fused=1", "data=fixed,fused=0"],   # one fused kernel per variable vs Keras' ops
    # bfloat16: the feed-forward GELU in float32 (kmtl.activations, the default) vs in bfloat16
    "gelu": ["data=fixed,precision=mixed_bfloat16,gelu32=1", "data=fixed,precision=mixed_bfloat16,gelu32=0"],
    # 16 random bits per element (kmtl.dropout, the default) vs Keras' uniform floats, in both precisions
    "dropout": ["data=fixed,precision=mixed_bfloat16,dropout16=1", "data=fixed,precision=mixed_bfloat16,dropout16=0",
                "data=fixed,precision=float32,dropout16=1", "data=fixed,precision=float32,dropout16=0"],
    # LayerNormalization with a hand-written float32 backward (kmtl.layer_norm) vs Keras', in both precisions
    "layernorm": ["data=fixed,precision=mixed_bfloat16,layernorm=1", "data=fixed,precision=mixed_bfloat16,layernorm=0",
                  "data=fixed,precision=float32,layernorm=1", "data=fixed,precision=float32,layernorm=0"],
    # self-attention in plain matmuls (kmtl.attention) vs Keras' MultiHeadAttention (einsums), in both precisions
    "attention": ["data=fixed,precision=mixed_bfloat16,attention=1", "data=fixed,precision=mixed_bfloat16,attention=0",
                  "data=fixed,precision=float32,attention=1", "data=fixed,precision=float32,attention=0"],
    # soft sharing (the multi-task default: each task its own copy of the top 2 layers, rows grouped by task)
    # against full sharing, XLA off; and soft under XLA (copies picked by a one-hot of the task ids)
    "sharing": ["data=fixed,precision=mixed_bfloat16,sharing=full", "data=fixed,precision=mixed_bfloat16,sharing=soft",
                "data=fixed,precision=mixed_bfloat16,sharing=soft,jit=1"],
    # the feed-forward GELU as XLA-compiled forward and backward loops in training (kmtl.activations) vs plain ops
    "fusedgelu": ["data=fixed,precision=mixed_bfloat16,fusedgelu=1", "data=fixed,precision=mixed_bfloat16,fusedgelu=0",
                  "data=fixed,precision=float32,fusedgelu=1", "data=fixed,precision=float32,fusedgelu=0"],
    # Keras' steps_per_execution: 4 train steps per call of the step function (the clock reads once per call;
    # run with --warmup 4 --steps 8) vs one
    "spe": ["data=fixed,precision=mixed_bfloat16,steps_per_execution=4", "data=fixed,precision=mixed_bfloat16",
            "data=fixed,precision=float32,steps_per_execution=4", "data=fixed,precision=float32"],
    # kmtl's AdamW kernel (kmtl.kernels.adamw: decay + Adam in one pass per variable) vs the decay's TF ops + ResourceApplyAdam
    "adamwkernel": ["data=fixed,precision=mixed_bfloat16,adamw_kernel=1", "data=fixed,precision=mixed_bfloat16,adamw_kernel=0",
                    "data=fixed,precision=float32,adamw_kernel=1", "data=fixed,precision=float32,adamw_kernel=0"],
    # kmtl.dropout by kmtl's one-pass kernel (the default where it builds) vs TensorFlow's ops
    "dropoutkernel": ["data=fixed,precision=mixed_bfloat16,dropoutkernel=1",
                      "data=fixed,precision=mixed_bfloat16,dropoutkernel=0",
                      "data=fixed,precision=float32,dropoutkernel=1", "data=fixed,precision=float32,dropoutkernel=0"],
    # kmtl.layer_norm by kmtl's one-pass kernels (the default where they build) vs TensorFlow's ops
    "layernormkernel": ["data=fixed,precision=mixed_bfloat16,layernormkernel=1",
                        "data=fixed,precision=mixed_bfloat16,layernormkernel=0",
                        "data=fixed,precision=float32,layernormkernel=1", "data=fixed,precision=float32,layernormkernel=0"],
    # the attention softmax's gradient by kmtl's one-pass kernel (the default where it builds) vs TF's ops
    "softmaxkernel": ["data=fixed,precision=mixed_bfloat16,softmaxkernel=1",
                      "data=fixed,precision=mixed_bfloat16,softmaxkernel=0",
                      "data=fixed,precision=float32,softmaxkernel=1", "data=fixed,precision=float32,softmaxkernel=0"],
    # the global-norm clip's multiply inside kmtl's AdamW kernel (the default) vs a Mul per gradient
    "clipfold": ["data=fixed,precision=mixed_bfloat16,fold_clip=1", "data=fixed,precision=mixed_bfloat16,fold_clip=0",
                 "data=fixed,precision=float32,fold_clip=1", "data=fixed,precision=float32,fold_clip=0"],
    # the token embedding's gradient clipped on the rows the batch touched, then scattered (kmtl.optimizer,
    # the default) vs made dense first (two more passes over the [30522, 384] table)
    "rowclip": ["data=fixed,precision=mixed_bfloat16,merge_rows=1", "data=fixed,precision=mixed_bfloat16,merge_rows=0",
                "data=fixed,precision=float32,merge_rows=1", "data=fixed,precision=float32,merge_rows=0"],
}


def parse_variant(text):
    out = {}
    for part in text.split(","):
        key, value = part.split("=")
        flag = lambda v: v in ("1", "true", "on")  # noqa: E731
        out[key] = {"jit": flag, "fused": flag, "gelu32": flag, "dropout16": flag, "dropoutkernel": flag,
                    "layernormkernel": flag, "softmaxkernel": flag, "layernorm": flag, "attention": flag, "fusedgelu": flag,
                    "merge_rows": flag, "fold_clip": flag, "adamw_kernel": flag}.get(key, lambda v: v)(value)
        if key in ("batch_size", "seq_len", "steps_per_execution"):
            out[key] = int(value)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("preset", nargs="?", choices=tuple(PRESETS))
    p.add_argument("--variants", nargs="+",
                   help="key=value,... (data, jit, fused, adamw_kernel, merge_rows, fold_clip, gelu32, fusedgelu, "
                        "dropout16, dropoutkernel, layernorm, layernormkernel, softmaxkernel, attention, precision, "
                        "padding, sharing, batch_size, seq_len, steps_per_execution)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--backbone", default="minilm-l6")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    variants = args.variants or PRESETS.get(args.preset)
    if not variants:
        p.error("give a preset or --variants")
    import keras

    from kmtl.activations import Float32Activation
    from kmtl.attention import fast_attention
    from kmtl.bench.peak import matmul_peak
    from kmtl.bench.train import TrainBench
    from kmtl.dropout import fast_dropout
    from kmtl.layer_norm import fast_layer_norm

    benches = []
    for text in variants:
        v = parse_variant(text)
        v.setdefault("seq_len", 128 if v.get("data") == "real" else 64)
        gelu32, fusedgelu, dropout16 = v.pop("gelu32", True), v.pop("fusedgelu", True), v.pop("dropout16", True)
        dropout_kernel, fold_clip = v.pop("dropoutkernel", True), v.pop("fold_clip", True)
        layernorm_kernel, softmax_kernel = v.pop("layernormkernel", True), v.pop("softmaxkernel", True)
        bench = TrainBench(args.backbone, steps=args.steps, repeats=1, warmup=args.warmup, **v)
        for layer in bench.model._flatten_layers():  # kmtl.activations.fast_activations' wrapper
            if isinstance(getattr(layer, "activation", None), Float32Activation):
                layer.activation.fused = fusedgelu  # False: plain ops in training too
                if not gelu32:  # unwrapped: the activation in the compute dtype
                    layer.activation = layer.activation.activation
        if not dropout16 or not dropout_kernel:  # undo kmtl.dropout.fast_dropout: Keras' Dropout.call again
            for layer in bench.model._flatten_layers():
                if type(layer) is keras.layers.Dropout:
                    layer.__dict__.pop("call", None)
            if dropout16:  # kmtl's dropout in TensorFlow's ops, not its kernel
                fast_dropout(bench.model, kernel=False)
        if not layernorm_kernel:  # kmtl.layer_norm in TensorFlow's ops, not its kernels
            for layer in bench.model._flatten_layers():
                if type(layer) is keras.layers.LayerNormalization:
                    layer.__dict__.pop("call", None)
            fast_layer_norm(bench.model, kernel=False)
        if not softmax_kernel:  # kmtl.attention with TensorFlow's softmax gradient, not its kernel
            for layer in bench.model._flatten_layers():
                if type(layer) is keras.layers.MultiHeadAttention:
                    layer.__dict__.pop("call", None)
            fast_attention(bench.model, softmax_kernel=False)
        if not fold_clip:  # kmtl.optimizer.AllReducedClipping: the clip's multiply before the update again
            optimizer = bench.model.optimizer
            getattr(optimizer, "inner_optimizer", optimizer).fold_clip = False
        benches.append((text, bench))
    peak = matmul_peak()
    batches = {text: b.batches() for text, b in benches}
    load0 = os.getloadavg()[0]
    rows = {text: [] for text, _ in benches}
    for r in range(args.rounds):
        for text, bench in benches:
            result = bench.run(batches=batches[text], peak=peak, peak_after=False)
            rows[text].append(result)
            print(f"round {r + 1}: {text:<40} {result['examples_per_sec']:7.2f} examples/s "
                  f"(load {result['load_average_1m']['start']})", flush=True)
    print(f"\nmedian of {args.rounds} rounds x {args.steps} steps; load {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"matmul peak {peak['gflops']:.1f} GFLOP/s")
    summary = []
    for text, results in rows.items():
        eps = statistics.median(x["examples_per_sec"] for x in results)
        row = {"variant": text, "examples_per_sec": eps,
               "tokens_per_sec": statistics.median(x["tokens_per_sec"] for x in results),
               "gflops": statistics.median(x["gflops"] for x in results),
               "mean_padded_length": results[0]["mean_padded_length"],
               "rounds": [x["examples_per_sec"] for x in results]}
        summary.append(row)
        print(f"{text:<40} {eps:7.2f} examples/s  {row['tokens_per_sec']:7.0f} real tokens/s  "
              f"{row['gflops']:6.1f} GFLOP/s  padded length {row['mean_padded_length']:.1f}")
    if args.json:
        print(json.dumps({"peak": peak, "rows": summary}))


if __name__ == "__main__":
    main()
