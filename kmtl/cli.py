"""The `kmtl` command line: train, compare, affinity, evaluate, export, predict, demo, bench.

Every user error (bad config, bad data, an export path that exists) is printed as one clear
message without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import kmtl  # sets the TF/Keras environment before anything imports TensorFlow
from kmtl import defaults, progress, tf_startup
from kmtl.errors import KmtlError
from kmtl.progress import phase

EXIT_USER_ERROR = 2
PADDINGS = ("longest", "buckets", "grouped")  # kmtl.bench.train.PADDINGS, without importing TensorFlow


OVERRIDE_FLAGS = {"output_dir": "--output-dir", "export.dir": "--export-dir", "training.epochs": "--epochs"}
"""The config key each command-line override sets, and its flag (named in errors)."""


def _config_with_outputs(path, output_dir=None, export_dir=None, epochs=None):
    """The config at ``path`` with the command-line overrides applied, validated again as a
    whole by the same rules as the YAML (``model_copy(update=...)`` would skip them: ``--epochs
    0`` trained nothing); a bad override is a `ConfigError` naming its flag."""
    from kmtl.config import config_from_dict, load_config
    from kmtl.errors import ConfigError

    config = load_config(path)
    data = config.to_yaml_dict()  # absolute paths: the base folder no longer matters
    given = {key: value for key, value in (("output_dir", output_dir), ("export.dir", export_dir),
                                           ("training.epochs", epochs)) if value is not None}
    if not given:
        return config
    for key, value in given.items():
        section, _, field = key.rpartition(".")
        target = data[section] if section else data
        target[field] = str(Path(value).resolve()) if field in ("output_dir", "dir") else value
    try:
        return config_from_dict(data, Path.cwd())
    except ConfigError as err:
        raise ConfigError([(f"{OVERRIDE_FLAGS[where]} ({where})" if where in given else where, message)
                           for where, message in err.problems]) from None


def _keras_verbose(args) -> int:
    """Keras' ``verbose`` for ``fit``: 0 under ``--quiet``, else ``--verbose``."""
    return 0 if getattr(args, "quiet", False) else args.verbose


def _add_quiet(p) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress output (bars on a terminal, one line per phase elsewhere, on stderr); "
                        "results and errors are still printed")


def _report(result):
    print(f"\nrun folder:  {result.run_dir}")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir / 'logs'}")
    if result.export_path is not None:
        print(f"SavedModel:  {result.export_path}")
        print(f"try it:      kmtl predict {result.export_path} \"what a wonderful film\"")


def cmd_train(args):
    config = _config_with_outputs(args.config, args.output_dir, args.export_dir, args.epochs)
    if args.workers is not None:  # the config is valid: start the cluster's processes
        from kmtl.training.launcher import launch_workers, threads_per_worker, train_command

        launch_workers(train_command(args), args.workers, threads=threads_per_worker(args.workers),
                       echo=lambda line: print(f"kmtl train: {line}", file=sys.stderr))
        print(f"trained with {args.workers} workers; run folder: {config.run_dir}")
        return
    from kmtl.training import train

    result = train(config, verbose=_keras_verbose(args), export=False if args.no_export else None, rerun=args.rerun)
    print(f"trained in {result.seconds:.1f} s")
    _report(result)


def seeds_arg(text: str):
    """``--seeds``: a count (``3``: ``training.seed`` and the two after it) or a comma-separated
    list of seeds (``0,1,5``), checked by `kmtl.compare.stats.resolve_seeds`; argparse prints the
    `argparse.ArgumentTypeError` as ``argument --seeds: ...`` and exits with status 2."""
    from kmtl.compare.stats import resolve_seeds

    text = text.strip()
    hint = "give a count such as 3 (training.seed and the seeds after it) or a list such as 0,1,5"
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()] if "," in text else int(text)
    except ValueError:
        kind = "a list of integer seeds" if "," in text else "a count or a list of seeds"
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}; {hint}") from None
    try:
        resolve_seeds(0, seeds)  # the same checks compare() makes: count >= 1, seeds >= 0, none twice
    except KmtlError as err:
        raise argparse.ArgumentTypeError(f"{err}; {hint}") from None
    return seeds


def cmd_compare(args):
    config = _config_with_outputs(args.config, args.output_dir, None, args.epochs)
    from kmtl.compare import compare

    flags = [f for f, on in (("--retrain", args.retrain), ("--teachers", args.teachers), ("--restart", args.restart),
                             ("--finetune", args.finetune)) if on]
    if args.epochs is not None:
        flags.append(f"--epochs {args.epochs}")
    if args.seeds is not None:
        flags.append(f"--seeds {args.seeds if isinstance(args.seeds, int) else ','.join(map(str, args.seeds))}")
    compare(config, retrain=args.retrain, teachers=args.teachers, restart=args.restart, verbose=_keras_verbose(args),
            seeds=args.seeds, finetune=args.finetune, command=" ".join(["kmtl compare", str(args.config), *flags]))


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse exits 2 naming the option otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, got {value}")
    return value


def cmd_affinity(args):
    config = _config_with_outputs(args.config, args.output_dir)
    from kmtl.compare.affinity import affinity

    flags = [f"--{name} {value}" for name, value in (("steps", args.steps), ("every", args.every),
                                                      ("groups", args.groups)) if value is not None]
    if args.compare is not None:
        flags.append(f"--compare {args.compare}")
    affinity(config, steps=args.steps, every=args.every, groups=args.groups, compare_report=args.compare,
             verbose=_keras_verbose(args), command=" ".join(["kmtl affinity", str(args.config), *flags]))


def cmd_demo(args):
    from kmtl.demo import DEMO_CONFIG

    config = _config_with_outputs(DEMO_CONFIG, args.output_dir, args.export_dir, args.epochs)
    from kmtl.training import train

    print(f"kmtl demo: {len(config.tasks)} tasks from {DEMO_CONFIG.parent / 'corpus'}, backbone {config.backbone}")
    result = train(config, verbose=_keras_verbose(args), rerun=args.rerun)
    print(f"trained in {result.seconds:.1f} s")
    _report(result)


def cmd_evaluate(args):
    from kmtl.config import load_config
    from kmtl.evaluation import evaluate_tasks, format_table, write_json
    from kmtl.training import load_run
    from kmtl.training.data import read_task_examples

    with phase("load run"):
        model, pre, _ = load_run(args.run_dir)
    config_path = args.config or Path(args.run_dir) / "config.json"
    if Path(config_path).suffix == ".json":
        from kmtl.config import config_from_dict

        config = config_from_dict(json.loads(Path(config_path).read_text()), Path(config_path).parent)
    else:
        config = load_config(config_path)
    _, dev = read_task_examples(config)
    figures = args.figures or (Path(args.json).parent if args.json else Path(args.run_dir))  # beside the metrics
    report = evaluate_tasks(model, dev, pre, figures=figures)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
    from kmtl.plots import figure_name

    drawn = [figure_name(t) for t in model.tasks if figure_name(t) and dev.get(t.name)]
    if drawn:
        print(f"figures in {figures}: {', '.join(drawn)}")


def cmd_export(args):
    from kmtl.export.versions import check_export_target
    from kmtl.run_files import CONFIG_FILE, RUN_FILE

    if args.xla < 0:
        raise KmtlError(f"--xla {args.xla}: give the largest batch to run through XLA (a positive integer), "
                        "or leave out --xla")
    if args.format == "onnx" and args.xla:
        raise KmtlError("--xla is for SavedModels (TF Serving compiles their small batches with XLA); "
                        "leave out --xla or use --format saved_model")
    if args.format == "onnx" and args.precision != "float32":
        raise KmtlError("--precision mixed_bfloat16 is for SavedModels: an ONNX graph is always float32 "
                        "(tf2onnx cannot convert bfloat16 graphs); leave out --precision or use --format saved_model")
    from kmtl.training import load_run

    run_dir = Path(args.run_dir)
    if not (run_dir / RUN_FILE).is_file():
        load_run(run_dir)  # raises the error that says what a run folder is
    # Everything about the destination is checked here, in milliseconds, before loading
    # the model and tracing its graph.
    info, config = (_read_json(run_dir / f) for f in (RUN_FILE, CONFIG_FILE))
    base = args.dir
    if base is None:  # the run config's export.dir (absolute in config.json), as `kmtl train` used
        configured = (config.get("export") or {}).get("dir")
        base = run_dir / configured if configured else Path("saved_models")
    given = args.name is not None
    name = args.name if given else info.get("name") or run_dir.name
    check_export_target(base, name, args.version, version_what="--version",
                        name_what="--name" if given else f"the run's name (in {run_dir / RUN_FILE})")
    from kmtl.model.precision import precision_scope

    with phase("load run"), precision_scope(args.precision):
        model, pre, info = load_run(run_dir)
    with phase(f"export {args.format} (trace, write, warm-up requests)"):
        if args.format == "onnx":
            from kmtl.export import export_onnx

            path = export_onnx(model, base, name, version=args.version, preprocessor=pre)
        else:
            from kmtl.export import export_saved_model

            path = export_saved_model(model, pre, base, name, version=args.version, xla_max_batch=args.xla)
    print(path)


def _read_json(path) -> dict:
    """The JSON object in ``path`` ({} when absent); a clear error when it is not valid JSON."""
    if not Path(path).is_file():
        return {}
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KmtlError(f"{path}: not valid JSON ({err}); re-run `kmtl train` to rewrite the run folder") from None
    return value if isinstance(value, dict) else {}


def cmd_bench_serve(args):
    from kmtl.bench import bench_serve, format_table

    result = bench_serve(backbone=args.backbone, run_dir=args.run, seq_words=args.seq_words,
                         batch_size=args.batch_size, seconds=args.seconds, repeats=args.repeats,
                         max_length=args.max_length, precision=args.precision, xla_max_batch=args.xla)
    print(format_table(result))
    if args.json:
        print(json.dumps(result))


def cmd_bench_train(args):
    from kmtl.bench.train import TrainBench, format_table

    seq_len = args.seq_len if args.seq_len is not None else (128 if args.data == "real" else 64)
    if args.workers < 1:
        raise KmtlError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1:
        return _bench_train_workers(args, seq_len)
    if not args.peak_seconds > 0:
        raise KmtlError(f"--peak-seconds must be positive, got {args.peak_seconds}")
    bench = TrainBench(backbone=args.backbone, batch_size=args.batch_size, seq_len=seq_len, steps=args.steps,
                       repeats=args.repeats, warmup=args.warmup, data=args.data, jit=args.jit, padding=args.padding,
                       data_dir=args.data_dir, limit=args.limit, precision=args.precision)
    from kmtl.bench.peak import matmul_peak
    result = bench.run(peak=matmul_peak(seconds=args.peak_seconds, dtype=bench.compute_dtype))
    print(format_table(result))
    if args.json:
        print(json.dumps(result))


def _bench_train_workers(args, seq_len):
    if args.data != "fixed" or args.jit:
        raise KmtlError("--workers measures fixed-shape data without XLA: leave out --data real and --jit")
    from kmtl.bench.workers import bench_workers, format_table

    result = bench_workers(args.workers, backbone=args.backbone, batch_size=args.batch_size, seq_len=seq_len,
                           steps=args.steps, repeats=args.repeats, warmup=args.warmup, precision=args.precision)
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
    from kmtl.serving.predict_input import parse_arguments, parse_stdin

    if args.texts:
        items = parse_arguments(args.texts, args.input)
        places = [f"argument {n}" for n in range(1, len(items) + 1)]
    else:  # bytes, so that invalid UTF-8 is replaced (U+FFFD) instead of raising in sys.stdin's decoder
        stdin = getattr(sys.stdin, "buffer", None)
        items = parse_stdin(stdin.read() if stdin is not None else sys.stdin.read().encode("utf-8", "surrogateescape"),
                            args.input)
        places = [f"<stdin>:{n}" for n in range(1, len(items) + 1)]
    for row in predict_lines(args.export_dir, items, signature=args.signature, places=places):
        print(json.dumps(row, ensure_ascii=False))


def _parse_args(parser, argv):
    """``parser.parse_args(argv)``, except that `kmtl predict` also takes its texts after its options.

    Python 3.11's argparse fills a ``nargs="*"`` positional (predict's ``texts``) as soon as
    the positional before it is seen, even with nothing, so ``kmtl predict DIR --signature X
    "a text"`` left ``"a text"`` unrecognized (CPython issue gh-59317, fixed by
    python/cpython#124303 in later Pythons, not in 3.11): the leftover positionals are
    appended to ``texts`` here, in order; ``--`` still ends the options.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "predict":
        cut = extra.index("--") if "--" in extra else len(extra)
        options = [e for e in extra[:cut] if e.startswith("-") and len(e) > 1 and not _is_number(e)]
        if not options:
            args.texts = list(args.texts) + extra[:cut] + extra[cut + 1:]
            extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kmtl", description="Multi-task NLP with one shared BERT encoder.")
    parser.add_argument("--version", action="version", version=f"kmtl {kmtl.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def outputs(p, default_rerun="resume"):
        p.add_argument("--output-dir", help="where runs go (default: the config's output_dir)")
        p.add_argument("--export-dir", help="where SavedModels go (default: the config's export.dir)")
        p.add_argument("--epochs", type=int, help="override training.epochs")
        p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
        rerun = p.add_mutually_exclusive_group()  # kmtl.training.run_folder.RERUN_MODES
        rerun.add_argument("--resume", dest="rerun", action="store_const", const="resume",
                           help="resume an unfinished run from its backup (the default for `train`); "
                                "a finished run stops")
        rerun.add_argument("--restart", dest="rerun", action="store_const", const="restart",
                           help="discard an unfinished run's backup and start from step 0")
        rerun.add_argument("--overwrite", dest="rerun", action="store_const", const="overwrite",
                           help="replace the run folder, a finished run included (old weights, metrics, "
                                "TensorBoard logs are deleted once the input is validated)")
        p.set_defaults(rerun=default_rerun)

    p = sub.add_parser(
        "train", help="train, evaluate and export the model a YAML config describes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, evaluate on dev and export the model a YAML config describes, in <output_dir>/<name>.",
        epilog="rerunning the same config in the same run folder:\n"
               "  after a crash        resumes at the last backup (every training.backup_every steps)\n"
               "  config changed       stops (exit 2): --restart discards the backup, or set another `name:`\n"
               "  run finished         stops (exit 2): --overwrite replaces it, or set another `name:`\n"
               "nothing is written before the config and the data are validated; a start from step 0\n"
               "clears the folder's TensorBoard logs (a resume continues them).")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="train as N local worker processes of one TensorFlow cluster (MultiWorkerMirroredStrategy; "
                        "each gets its TF_CONFIG and cores/N threads; worker 0 writes the run): to try multi-worker "
                        "training on one machine")
    outputs(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="single-task baselines vs the multi-task model: per-task Δ, Δm, time, "
                                       "parameters (reports in <output_dir>/<name>/compare/)")
    p.add_argument("config", help="YAML config file (at least two tasks, each with a dev split)")
    p.add_argument("--retrain", action="store_true", help="ignore the baseline cache and retrain everything")
    p.add_argument("--restart", action="store_true",
                   help="runs that train start from step 0 (a backup an earlier config left cannot be resumed); "
                        "by default a crashed run resumes from its backup")
    p.add_argument("--teachers", action="store_true",
                   help="distil the multi-task model from the single-task baselines (BAM! teacher annealing)")
    p.add_argument("--finetune", action="store_true",
                   help="add MT-DNN's second stage: each task fine-tuned alone from the multi-task model (its "
                        "baseline's data and schedule), reported as a second table")
    p.add_argument("--output-dir", help="where runs and the baseline cache go (default: the config's output_dir)")
    p.add_argument("--epochs", type=int, help="override training.epochs (baselines and multi-task model)")
    p.add_argument("--seeds", type=seeds_arg, metavar="N|S1,S2,...",
                   help="train every baseline and the multi-task model once per seed and report mean ± sd, the Δ's "
                        "95 %% interval and Δm's: a count (3: training.seed and the 2 seeds after it) or a list "
                        "(0,1,5); default: training.seed alone. Each seed is cached")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Keras progress output of each training run (default: 1, a bar)")
    _add_quiet(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "affinity", help="negative-transfer report: gradient cosines and TAG's lookahead affinity between the tasks "
                         "during training, suggested task groupings (reports in <output_dir>/<name>/affinity/)",
        description="Train the config's multi-task model (its own schedule, or --steps) while measuring, on a fixed "
                    "probe batch per task, the cosine between the tasks' gradients on the shared encoder and the "
                    "lookahead affinity Z(i->j) of Fifty et al. (NeurIPS 2021); write affinity.json, affinity.md and "
                    "affinity.png in <output_dir>/<name>/affinity/ and print the tables. The config's own run "
                    "folder is not touched.")
    p.add_argument("config", help="YAML config file (at least two tasks)")
    p.add_argument("--steps", type=positive_int, help="train one epoch of N steps (default: the config's training)")
    p.add_argument("--every", type=positive_int, help="probe every K optimizer steps (default: 20 probes in the run)")
    p.add_argument("--groups", type=positive_int,
                   help="list the best groupings into k groups (default: 2); the best of every k is always reported")
    p.add_argument("--compare", metavar="COMPARE_JSON",
                   help="a kmtl compare report whose per-task Δ the affinities are checked against (default: "
                        "<output_dir>/<name>/compare/compare.json when it exists)")
    p.add_argument("--output-dir", help="where runs go (default: the config's output_dir)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    _add_quiet(p)
    p.set_defaults(func=cmd_affinity)

    p = sub.add_parser("demo", help="train the bundled 3-task demo offline, evaluate and export it "
                                    "(a rerun resumes a crashed demo, or replaces a finished one)")
    outputs(p, default_rerun="auto")
    _add_quiet(p)
    p.set_defaults(func=cmd_demo, output_dir="runs", export_dir="saved_models")

    p = sub.add_parser("evaluate", help="dev-set metrics of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--config", help="evaluate on this config's dev splits (default: the run's own)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--figures", help="folder of the PNGs (a confusion matrix per classification task, F1 per entity "
                                     "type per tagging task; default: beside --json, else the run folder)")
    _add_quiet(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a finished run as a versioned SavedModel (or ONNX file)")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=("saved_model", "onnx"), default="saved_model",
                   help="saved_model (raw text in, for TF Serving; default) or onnx (token ids in: "
                        "<dir>/<name>/<version>/model.onnx + kmtl.json)")
    p.add_argument("--dir", help="base folder (default: the run config's export.dir, saved_models unless set)")
    p.add_argument("--name", help="model name, one folder name (default: the run's name)")
    p.add_argument("--version", type=int, help="version number, a non-negative integer (default: next free)")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
                   help="what the SavedModel computes in: float32 (default; full speed on any CPU) or mixed_bfloat16 "
                        "(faster on CPUs with AMX-BF16/AVX512-BF16, emulated and slow elsewhere; the heads and outputs "
                        "stay float32)")
    p.add_argument("--xla", type=int, nargs="?", const=defaults.XLA_MAX_BATCH, default=0, metavar="MAX_BATCH",
                   help="run requests of at most MAX_BATCH rows (default with --xla: "
                        f"{defaults.XLA_MAX_BATCH}) XLA-compiled: lower batch-1 latency; TF Serving must then be "
                        "started with --xla_cpu_compilation_enabled=true")
    _add_quiet(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict with an exported SavedModel; JSON Lines out")
    p.add_argument("export_dir", help="a SavedModel version folder, or its model folder (latest version)")
    p.add_argument("texts", nargs="*", help="texts, one output line each (default: stdin, one output line per "
                                            "input line, blank lines included)")
    p.add_argument("--signature", default="serving_default",
                   help="signature to call; a pair task's signature takes 'first<TAB>second' texts")
    mode = p.add_mutually_exclusive_group()  # kmtl.serving.predict_input.INPUT_MODES
    mode.add_argument("--text", dest="input", action="store_const", const="text",
                      help="every stdin line is a text, even one that starts with '{'")
    mode.add_argument("--jsonl", dest="input", action="store_const", const="jsonl",
                      help='every line (and every text argument) is a JSON object {"text": ..., "text_pair": ...}')
    p.set_defaults(func=cmd_predict, input="auto")

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
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
                   help="what the SavedModel computes in (default: float32, what kmtl train and kmtl export write; "
                        "the ONNX graph is float32 either way)")
    p.add_argument("--xla", type=int, nargs="?", const=defaults.XLA_MAX_BATCH, default=0, metavar="MAX_BATCH",
                   help="also measure a SavedModel exported with --xla MAX_BATCH (default with --xla: "
                        f"{defaults.XLA_MAX_BATCH})")
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
    p.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"), default="auto",
                   help="the training precision (default: auto, what kmtl train does: mixed_bfloat16 on CPUs with "
                        "AMX-BF16/AVX512-BF16, float32 elsewhere); the peak share is of the matmul peak in the "
                        "compute dtype")
    p.add_argument("--workers", type=int, default=1,
                   help="2 or more: weak scaling over N local worker processes (MultiWorkerMirroredStrategy, batch "
                        "--batch-size per worker) and over N CPU devices in one process, against 1 worker run first "
                        "(fixed data; default: 1, the plain benchmark)")
    p.set_defaults(func=cmd_bench_train)

    p = bench.add_parser("data", help="input pipeline throughput alone on the real-data mixture: read, tokenize, mix, pad")
    real_data_options(p, "max length in word pieces (default: 128)")
    p.add_argument("--steps", type=int, default=200, help="batches per timed window (default: 200)")
    p.add_argument("--train-examples-per-sec", type=float,
                   help="the training step's consumption (from `kmtl bench train --data real`) to compare with")
    p.set_defaults(func=cmd_bench_data)
    return parser


def main(argv=None) -> int:
    args = _parse_args(build_parser(), argv)
    tf_startup.install()  # TensorFlow's duplicated start-up lines, filtered (kmtl/tf_startup.py)
    progress.set_default_mode("off" if getattr(args, "quiet", False) else "auto")
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
