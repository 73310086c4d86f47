"""Export the ids → outputs part of a multi-task model as a versioned ONNX file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from kmtl.errors import ExportError
from kmtl.export.client_tokenizer import write_client_tokenizer
from kmtl.export.versions import atomic_version_dir, check_export_target

ONNX_FILE = "model.onnx"
METADATA_FILE = "kmtl.json"
INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
GRAPH_BYTES = 4 * 2**20  # the graph and metadata besides the weights: a generous estimate


def export_onnx(model, base_dir, name: str, version: Optional[int] = None, opset: Optional[int] = None,
                max_length: Optional[int] = None, metadata: Optional[dict] = None, preprocessor=None) -> Path:
    """Write ``<base_dir>/<name>/<version>/model.onnx``, ``kmtl.json`` and the client's tokenizer.

    The graph takes token ids, not text: tf2onnx cannot convert the TF Text ops of the
    tokenizer, so callers tokenize first (with the run's `kmtl.data.Preprocessor`, or any
    WordPiece tokenizer with the same vocabulary) and pass

    * inputs ``token_ids``, ``segment_ids``, ``padding_mask``: int32 ``[batch, length]``,
      both dimensions dynamic (named ``batch`` and ``length`` in the file), whatever the
      sharing mode; with one that routes examples by task (soft sharing, adapters...) each
      task's output is computed through its own route inside the graph
      (`kmtl.model.per_task.run_tasks`);
    * outputs named after the tasks, the raw model outputs: logits ``[batch, labels]`` for
      classification, ``[batch, length, labels]`` for tagging, ``[batch, 1]`` scores for
      regression, sigmoid logits for multi-label; always float32, and the graph computes in
      float32: a model trained in mixed precision is exported through a float32 copy with the
      same weights (`kmtl.model.precision.float32_copy`; tf2onnx cannot convert bfloat16
      graphs, and ONNX Runtime's CPU provider lacks most half-precision kernels), so its
      outputs differ from the Keras model's by the half-precision rounding (~1e-2 for bfloat16).

    How: Keras' own ``model.export(path, format="onnx", input_signature=[{...}])`` (Keras
    3.15 traces the functional model with the dict signature and hands the concrete function
    to ``tf2onnx.convert.from_function``; checked with ONNX Runtime at several sequence
    lengths). ``kmtl.json`` records the tasks with their label sets, the max length the model
    was trained with, the input and output names and the tokenizer settings; ``vocab.txt``
    and ``tokenizer.json`` (Hugging Face ``tokenizers``) let a client go from raw text to the
    inputs (`kmtl.export.client_tokenizer`; README "Serving" has a 10-line client). The
    version folder appears only when complete (see `atomic_version_dir`); ``version``
    defaults to the next free integer.

    Args:
        model: a `kmtl.MultiTaskModel`.
        base_dir: the base folder (e.g. ``saved_models``).
        name: the model's folder name under ``base_dir``.
        version: version number; default: the next free one.
        opset: ONNX opset; default: tf2onnx's default (15).
        max_length: the preprocessor's max length, recorded in ``kmtl.json`` (the graph
            itself accepts any length up to the backbone's position table).
        metadata: extra keys for ``kmtl.json``.
        preprocessor: the model's `kmtl.data.Preprocessor` (default ``model.preprocessor``):
            its vocabulary and settings are written for clients; its max length is the
            default of ``max_length``.

    Example:
        >>> path = export_onnx(model, "saved_models", "demo", max_length=128)
        >>> sess = onnxruntime.InferenceSession(str(path / "model.onnx"))
        >>> logits = sess.run(["sentiment"], pre.encode_text(tf.constant(["a fine film"])))
    """
    model_dir = check_export_target(base_dir, name, version)  # before any conversion
    import onnx
    import tensorflow as tf

    from kmtl.export.saved_model import weights_nbytes
    from kmtl.model.per_task import PerTaskModel
    from kmtl.model.precision import float32_copy
    from kmtl.sharing import served_model

    preprocessor = preprocessor if preprocessor is not None else getattr(model, "preprocessor", None)
    if max_length is None and preprocessor is not None:
        max_length = preprocessor.max_length
    model = served_model(model)  # a mode's serving form (prefix tuning: its MLP folded away)
    tasks = list(getattr(model, "tasks", []))
    output_names = sorted(model.output.keys()) if isinstance(model.output, dict) else []
    served = [t.name for t in tasks if getattr(t, "served", True)]  # auxiliary masked-LM heads stay out
    if tasks and not served:
        raise ExportError("no task of this model is served (auxiliary tasks such as masked_lm are not); "
                          "add a task or set the auxiliary task's serve option")
    output_names = [n for n in output_names if n in served] if tasks else output_names
    signature = {n: tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES}
    inputs = {n: {"dtype": "int32", "shape": ["batch", "length"]} for n in INPUT_NAMES}
    signature = [signature]
    with atomic_version_dir(model_dir, version, size_bytes=weights_nbytes(model) + GRAPH_BYTES) as version_dir:
        tmp = version_dir.tmp
        target = tmp / ONNX_FILE
        loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:  # tf2onnx logs every optimizer pass at INFO
            lg.setLevel(logging.ERROR)
        try:
            graph = float32_copy(model)
            if getattr(graph, "routes_by_task", False):  # every task through its own route: no task_id input
                graph = PerTaskModel(graph, output_names)
            elif tasks and len(output_names) < len(graph.output):
                graph = graph.outputs_model(output_names)
            graph.export(str(target), format="onnx", input_signature=signature, opset_version=opset, verbose=False)
        except Exception as err:  # tf2onnx raises many kinds; say what failed
            raise ExportError(f"ONNX conversion failed: {type(err).__name__}: {err}") from err
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
        proto = onnx.load(str(target))
        _name_dynamic_dims(proto, tasks)
        onnx.save(proto, str(target))
        info = {
            "format": "onnx",
            "tasks": [t.get_config() for t in tasks],
            "backbone": getattr(model, "encoder_spec", None),
            "sharing": {"mode": getattr(model, "sharing", "full"), **getattr(model, "sharing_options", {})},
            "max_length": max_length,
            "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
            "inputs": inputs,
            "outputs": {n: _output_meta(n, tasks) for n in output_names},
            **(metadata or {}),
        }
        if preprocessor is not None:
            info["tokenizer"] = write_client_tokenizer(tmp, preprocessor)
        (tmp / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return version_dir.final


def _output_meta(name, tasks):
    task = next((t for t in tasks if t.name == name), None)
    if task is None:
        return {}
    return {
        "kind": task.kind,
        "shape": ["batch", "length", task.num_outputs] if task.position_outputs else ["batch", task.num_outputs],
        "values": task.raw_output,
    }


def _name_dynamic_dims(proto, tasks) -> None:
    """Give the dynamic dimensions readable names (tf2onnx writes ``unk__123``)."""
    token_level = {t.name for t in tasks if t.position_outputs}
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        for dim, label in zip(dims, ("batch", "length")):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
    for value in proto.graph.output:
        dims = value.type.tensor_type.shape.dim
        labels = ("batch", "length") if value.name in token_level else ("batch",)
        for dim, label in zip(dims, labels):
            if not dim.HasField("dim_value"):
                dim.dim_param = label
