"""The `kmtl` command line: train, compare, evaluate, export, predict, demo, bench.

Every user error (bad config, bad data, an export path that exists) is printed as one clear
message without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import kmtl  # sets the TF/Keras environment before anything imports TensorFlow
from kmtl.errors import KmtlError

EXIT_USER_ERROR = 2
PADDINGS = ("longest", "buckets", "grouped")  # kmtl.bench.train.PADDINGS, without importing TensorFlow


def _config_with_outputs(path, output_dir=None, export_dir=None, epochs=None):
    from kmtl.config import load_config

    config = load_config(path)
    update = {}
    if output_dir is not None:
        update["output_dir"] = Path(output_dir).resolve()
    if export_dir is not None:
        update["export"] = config.export.model_copy(update={"dir": Path(export_dir).resolve()})
    if epochs is not None:
        update["training"] = config.training.model_copy(update={"epochs": epochs})
    return config.model_copy(update=update) if update else config


def _report(result):
    print(f"\nrun folder:  {result.run_dir}")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir / 'logs'}")
    if result.export_path is not None:
        print(f"SavedModel:  {result.export_path}")
        print(f"try it:      kmtl predict {result.export_path} \"what a wonderful film\"")


def cmd_train(args):
    config = _config_with_outputs(args.config, args.output_dir, args.export_dir, args.epochs)
    from kmtl.training import train

    result = train(config, verbose=args.verbose, export=False if args.no_export else None)
    print(f"trained in {result.seconds:.1f} s")
    _report(result)


def cmd_compare(args):
    config = _config_with_outputs(args.config, args.output_dir, None, args.epochs)
    from kmtl.compare import compare

    flags = [f for f, on in (("--retrain", args.retrain), ("--teachers", args.teachers)) if on]
    if args.epochs is not None:
        flags.append(f"--epochs {args.epochs}")
    compare(config, retrain=args.retrain, teachers=args.teachers, verbose=args.verbose,
            command=" ".join(["kmtl compare", str(args.config), *flags]))


def cmd_demo(args):
    from kmtl.demo import DEMO_CONFIG

    config = _config_with_outputs(DEMO_CONFIG, args.output_dir, args.export_dir, args.epochs)
    from kmtl.training import train

    print(f"kmtl demo: {len(config.tasks)} tasks from {DEMO_CONFIG.parent / 'corpus'}, backbone {config.backbone}")
    result = train(config, verbose=args.verbose)
    print(f"trained in {result.seconds:.1f} s")
    _report(result)


def cmd_evaluate(args):
    from kmtl.config import load_config
    from kmtl.evaluation import evaluate_tasks, format_table, write_json
    from kmtl.training import load_run
    from kmtl.training.data import read_task_examples

    model, pre, _ = load_run(args.run_dir)
    config_path = args.config or Path(args.run_dir) / "config.json"
    if Path(config_path).suffix == ".json":
        from kmtl.config import config_from_dict

        config = config_from_dict(json.loads(Path(config_path).read_text()), Path(config_path).parent)
    else:
        config = load_config(config_path)
    _, dev = read_task_examples(config)
    report = evaluate_tasks(model, dev, pre)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)


def cmd_export(args):
    from kmtl.training import load_run

    model, pre, info = load_run(args.run_dir)
    name = args.name or info.get("name") or Path(args.run_dir).name
    if args.format == "onnx":
        from kmtl.export import export_onnx

        path = export_onnx(model, args.dir, name, version=args.version, max_length=pre.max_length)
    else:
        from kmtl.export import export_saved_model

        path = export_saved_model(model, pre, args.dir, name, version=args.version)
    print(path)


def cmd_bench_serve(args):
    from kmtl.bench import bench_serve, format_table

    result = bench_serve(backbone=args.backbone, run_dir=args.run, seq_words=args.seq_words,
                         batch_size=args.batch_size, seconds=args.seconds, repeats=args.repeats,
                         max_length=args.max_length)
    print(format_table(result))
    if args.json:
        print(json.dumps(result))


def cmd_bench_train(args):
    from kmtl.bench.train import TrainBench, format_table

    seq_len = args.seq_len if args.seq_len is not None else (128 if args.data == "real" else 64)
    if not args.peak_seconds > 0:
        raise KmtlError(f"--peak-seconds must be positive, got {args.peak_seconds}")
    bench = TrainBench(backbone=args.backbone, batch_size=args.batch_size, seq_len=seq_len, steps=args.steps,
                       repeats=args.repeats, warmup=args.warmup, data=args.data, jit=args.jit, padding=args.padding,
                       data_dir=args.data_dir, limit=args.limit)
    from kmtl.bench.peak import matmul_peak

    result = bench.run(peak=matmul_peak(seconds=args.peak_seconds))
    print(format_table(result))
    if args.json:
        print(json.dumps(result))


def cmd_bench_data(args):
    from kmtl.bench.data import bench_data, format_table

    seq_len = args.seq_len if args.seq_len is not None else 128
    result = bench_data(backbone=args.backbone, batch_size=args.batch_size, seq_len=seq_len, steps=args.steps,
                        repeats=args.repeats, padding=args.padding, data_dir=args.data_dir, limit=args.limit,
                        train_examples_per_sec=args.train_examples_per_sec)
    print(format_table(result))
    if args.json:
        print(json.dumps(result))


def cmd_predict(args):
    from kmtl.serving.predict import predict_lines

    items = args.texts or [_stdin_item(line, number) for number, line in enumerate(sys.stdin, 1) if line.strip()]
    for row in predict_lines(args.export_dir, items, signature=args.signature):
        print(json.dumps(row, ensure_ascii=False))


def _stdin_item(line, number):
    """A JSON Lines object ({"text": ..., "text_pair": ...}), or a plain line of text."""
    line = line.rstrip("\n")
    if not line.lstrip().startswith("{"):
        return line
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise KmtlError(f"<stdin>:{number}: not valid JSON ({err.msg}); give one JSON object or one text a line") \
            from None
    if not isinstance(item, dict):
        raise KmtlError(f"<stdin>:{number}: expected a JSON object with a 'text' field")
    return item

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kmtl", description="Multi-task NLP with one shared BERT encoder.")
    parser.add_argument("--version", action="version", version=f"kmtl {kmtl.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def outputs(p):
        p.add_argument("--output-dir", help="where runs go (default: the config's output_dir)")
        p.add_argument("--export-dir", help="where SavedModels go (default: the config's export.dir)")
        p.add_argument("--epochs", type=int, help="override training.epochs")
        p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")

    p = sub.add_parser("train", help="train, evaluate and export the model a YAML config describes")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    outputs(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="single-task baselines vs the multi-task model: per-task Δ, Δm, time, "
                                       "parameters (reports in <output_dir>/<name>/compare/)")
    p.add_argument("config", help="YAML config file (at least two tasks, each with a dev split)")
    p.add_argument("--retrain", action="store_true", help="ignore the baseline cache and retrain everything")
    p.add_argument("--teachers", action="store_true",
                   help="distil the multi-task model from the single-task baselines (BAM! teacher annealing)")
    p.add_argument("--output-dir", help="where runs and the baseline cache go (default: the config's output_dir)")
    p.add_argument("--epochs", type=int, help="override training.epochs (baselines and multi-task model)")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="Keras progress output (default: 0)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="train the bundled 3-task demo offline, evaluate and export it")
    outputs(p)
    p.set_defaults(func=cmd_demo, output_dir="runs", export_dir="saved_models")

    p = sub.add_parser("evaluate", help="dev-set metrics of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--config", help="evaluate on this config's dev splits (default: the run's own)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a finished run as a versioned SavedModel (or ONNX file)")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=("saved_model", "onnx"), default="saved_model",
                   help="saved_model (raw text in, for TF Serving; default) or onnx (token ids in: "
                        "<dir>/<name>/<version>/model.onnx + kmtl.json)")
    p.add_argument("--dir", default="saved_models", help="base folder (default: saved_models)")
    p.add_argument("--name", help="model name (default: the run's name)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict with an exported SavedModel; JSON Lines out")
    p.add_argument("export_dir", help="a SavedModel version folder, or its model folder (latest version)")
    p.add_argument("texts", nargs="*", help='texts (default: stdin, one JSON object {"text": ...} or one text a line)')
    p.add_argument("--signature", default="serving_default",
                   help="signature to call; a pair task's signature takes 'first<TAB>second' texts")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench_command", required=True)
    p = bench.add_parser("serve", help="latency/throughput: SavedModel from raw text vs ONNX Runtime from ids")
    p.add_argument("--backbone", help="minilm-l6 (default), tiny or a backbone folder: a fresh model with a "
                                      "classification and a tagging head")
    p.add_argument("--run", help="benchmark this finished run instead of a fresh model")
    p.add_argument("--seq-words", type=int, default=20, help="words per test sentence (default: 20)")
    p.add_argument("--batch-size", type=int, default=32, help="batch of the throughput figure (default: 32)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each timed window (default: 10)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per figure; median reported (default: 3)")
    p.add_argument("--max-length", type=int, default=128, help="preprocessor max length of a fresh model (default: 128)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON object on the last line")
    p.set_defaults(func=cmd_bench_serve)

    def real_data_options(p, seq_len_help):
        p.add_argument("--backbone", default="minilm-l6", help="minilm-l6 (default), tiny or a backbone folder")
        p.add_argument("--batch-size", type=int, default=32, help="examples per step (default: 32)")
        p.add_argument("--seq-len", type=int, help=seq_len_help)
        p.add_argument("--repeats", type=int, default=3, help="timed windows; median reported (default: 3)")
        p.add_argument("--padding", choices=PADDINGS, default="grouped",
                       help="real data: pad each batch to its longest sequence (longest, what `kmtl train` does "
                            "today), to fixed length buckets (buckets), or group examples of similar length into "
                            "batches, padded to their bucket (grouped; default)")
        p.add_argument("--data-dir", help="the shared data folder with sst2/, conll2003/, stsb/, ag_news/ "
                                          "(default: $KMTL_SHARED_DATA or ../shared/data)")
        p.add_argument("--limit", type=int, help="real data: first N examples of each file (default: 2000; 0: all)")
        p.add_argument("--json", action="store_true", help="also print the figures as one JSON object on the last line")

    p = bench.add_parser("train", help="training throughput of the kmtl model (examples/s, tokens/s, GFLOP/s, memory)")
    real_data_options(p, "sequence length (fixed data) or max length in word pieces (real data); "
                         "default: 64 fixed, 128 real")
    p.add_argument("--data", choices=("fixed", "real"), default="fixed",
                   help="fixed: random word pieces of exactly batch x seq-len (default); real: the SST-2 + CoNLL-2003 + "
                        "STS-B + AG News mixture through kmtl.data.mixture")
    p.add_argument("--steps", type=int, default=20, help="train steps per timed window (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps, excluded (default: 3)")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False,
                   help="compile the train step with XLA (default: off; it was slower on the 2-core CPU, "
                        "see README Performance)")
    p.add_argument("--peak-seconds", type=float, default=1.0,
                   help="length of each of the 3 windows of the fp32 matmul peak measurement (default: 1)")
    p.set_defaults(func=cmd_bench_train)

    p = bench.add_parser("data", help="input pipeline throughput alone on the real-data mixture: read, tokenize, mix, pad")
    real_data_options(p, "max length in word pieces (default: 128)")
    p.add_argument("--steps", type=int, default=200, help="batches per timed window (default: 200)")
    p.add_argument("--train-examples-per-sec", type=float,
                   help="the training step's consumption (from `kmtl bench train --data real`) to compare with")
    p.set_defaults(func=cmd_bench_data)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KmtlError as err:
        print(f"kmtl {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"kmtl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
