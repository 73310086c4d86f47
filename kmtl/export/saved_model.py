"""Export a multi-task model as a versioned SavedModel that answers from raw text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from kmtl.data.buckets import bucket_length, check_boundaries
from kmtl.data.pipeline import INPUT_NAMES, cut_inputs, longest_sequence
from kmtl.data.words import clean_text
from kmtl.errors import ExportError
from kmtl.export.heads import decode_outputs
from kmtl.export.versions import atomic_version_dir, check_export_target
from kmtl.export.warmup import write_warmup
from kmtl.model.per_task import run_tasks
from kmtl.model.precision import float32_outputs, serving_copy
from kmtl.model.raw_text import text_inputs
from kmtl.sharing import served_model

METADATA_FILE = "kmtl.json"
GRAPH_BYTES = 16 * 2**20  # saved_model.pb, assets and warm-up requests: a generous estimate


RESERVED = ("serving_default", "ids")
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)  # sequence lengths the XLA path compiles for (plus max_length)
ROW_BUCKETS = tuple(2**k for k in range(12))  # batch sizes it compiles for (plus xla_max_batch)


class ServingGraph:
    """The serving functions: tokenizer, packing, shared encoder and heads; no Python at run time.

    Signatures (all text inputs are ``[batch]`` strings; invalid UTF-8 is replaced, never fatal):

    * ``serving_default(text)``: every task that reads one text (sentence tasks and tagging);
    * ``<task>(text)`` or, for pair tasks, ``<task>(text, text_pair)``: that task alone (a kind
      with its own inputs reads them: span QA's ``<task>(question, context)``);
    * ``ids(token_ids, segment_ids, padding_mask)``: raw head outputs ``<task>`` (logits or
      score) for clients that tokenize themselves (the same graph as the ONNX export), whatever
      the sharing mode: no ``task_id``.

    Task routing is part of the graph: with a sharing mode that routes examples by task (soft
    sharing, adapters, prefixes...) every task's output is computed through that task's own
    route, and what does not depend on the task runs once (`kmtl.model.per_task.run_tasks`:
    with soft sharing the shared lower layers run once, the copied top layers once per task).
    Without routing the model runs once on the batch.

    **XLA for small batches** (``xla_max_batch`` > 0, `kmtl export --xla`): a request of at most
    that many rows runs the encoder and heads as one XLA-compiled function instead of one
    TensorFlow op after another (at batch 1 the op-by-op overhead is most of the time: the
    encoder took 9.6 -> 6.9 ms on MiniLM-L6, AMD EPYC, 2026-12-02). XLA compiles once per input
    shape, so the rows are padded up to a power of two and the length up to one of
    `LENGTH_BUCKETS` (or ``max_length``); padded rows and positions are cut off the outputs, the
    answers equal the plain graph's within float tolerance. Larger batches keep oneDNN's GEMMs,
    which XLA's CPU backend does not match (batch 32: 74 vs 83-113 ms). TF Serving runs an XLA
    graph only when started with ``--xla_cpu_compilation_enabled=true``; without it each
    small request fails with "XLA compilation disabled" (`kmtl.json` records ``"xla"``).

    Output names per task kind are listed in `kmtl.export.heads`. Probabilities and scores are
    float32 whatever the training precision: a model built under a mixed precision policy
    (`kmtl.model.precision`) serves its float16/bfloat16 encoder with float32 heads, and any
    other floating output is cast to float32, so the answers equal ``model.predict``'s.

    Args:
        model: a trained `kmtl.MultiTaskModel`.
        preprocessor: its `kmtl.data.Preprocessor`.
        xla_max_batch: batches of at most this many rows run XLA-compiled; 0 (default): never.
    """

    def __init__(self, model, preprocessor, xla_max_batch: int = 0):
        clash = [t.name for t in model.tasks if t.name in RESERVED]
        if clash:
            raise ExportError(f"task names {clash} clash with signature names {list(RESERVED)}; rename the tasks")
        self.model = model
        self.preprocessor = preprocessor
        self.tasks = [t for t in model.tasks if getattr(t, "served", True)]  # not auxiliary masked-LM
        if not self.tasks:
            raise ExportError("no task of this model is served (auxiliary tasks such as masked_lm are not); "
                              "add a task or set the auxiliary task's serve option")
        if xla_max_batch < 0:
            raise ExportError(f"xla_max_batch is {xla_max_batch}; give 0 (no XLA) or a positive batch size")
        self.xla_max_batch = int(xla_max_batch)
        self.lengths = list(check_boundaries(LENGTH_BUCKETS, preprocessor.max_length))
        self.rows = list(check_boundaries(ROW_BUCKETS, self.xla_max_batch)) if xla_max_batch else []
        self._compiled = {}  # task names -> the XLA function serving them

    def _plain(self, tasks, x) -> dict:
        outputs = float32_outputs(run_tasks(self.model, x, tasks))  # adapters: one copy per task
        return {t.name: outputs[t.name] for t in tasks}

    def _xla(self, tasks, x, rows, length) -> dict:
        """`_plain` through XLA: ``x`` cut to its length's bucket and padded to a bucket of rows
        (a few static shapes: one compilation each), the outputs cut back."""
        names = tuple(t.name for t in tasks)
        if names not in self._compiled:
            self._compiled[names] = tf.function(lambda inputs: self._plain(tasks, inputs), jit_compile=True)
        x = cut_inputs(x, bucket_length(length, self.lengths))
        pad_rows = bucket_length(rows, self.rows) - rows
        padded = {k: tf.pad(v, [[0, pad_rows]] + [[0, 0]] * (len(v.shape) - 1)) for k, v in x.items()}
        outputs = self._compiled[names](padded)
        return {t.name: outputs[t.name][:rows, :length] if t.position_outputs else outputs[t.name][:rows]
                for t in tasks}

    def run(self, tasks, x) -> dict:
        """``{task: float32 raw output}`` of ``tasks`` on ``x`` (inputs padded to ``max_length``):
        cut to the batch's longest sequence; through XLA when the batch is small enough."""
        length = longest_sequence(x)
        if not self.xla_max_batch:
            return self._plain(tasks, cut_inputs(x, length))
        rows = tf.shape(x["token_ids"])[0]
        return tf.cond(rows <= self.xla_max_batch, lambda: self._xla(tasks, x, rows, length),
                       lambda: self._plain(tasks, cut_inputs(x, length)))

    def serve(self, tasks, text, text_pair=None):
        """Outputs of ``tasks`` (all reading ``text``, or all pair tasks) for a batch: one encoder
        pass serves the tagging and the sentence heads."""
        x, words_info = text_inputs(tasks, self.preprocessor, text, text_pair)
        return decode_outputs(tasks, self.run(tasks, x), clean_text(text), words_info=words_info)

    def serve_ids(self, token_ids, segment_ids, padding_mask):
        x = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        outputs = run_tasks(self.model, x, self.tasks)
        return float32_outputs({t.name: tf.convert_to_tensor(outputs[t.name]) for t in self.tasks})

    def _text_fn(self, tasks):
        def serve_text(text):
            return self.serve(tasks, text)

        return serve_text

    def _variant_fn(self, task, to_text):
        def serve_variant(*inputs):
            return self.serve([task], to_text(*inputs))

        return serve_variant

    def _own_fn(self, task):
        def run(x):
            return self.run([task], x)[task.name]

        def serve_own(*inputs):
            return task.serve(run, self.preprocessor, **dict(zip(task.serving_inputs, inputs)))

        return serve_own

    def xla_warmups(self, signatures: dict) -> list:
        """``[(signature, {input: values})]``: one batch-1 request per length bucket for each
        signature that reads one ``text``, so TF Serving compiles them while it loads the version
        (about a second each) instead of at the first requests. Other signatures compile at their
        first request of each shape."""
        if not self.xla_max_batch:
            return []
        reading_text = [name for name, specs in signatures.items() if [spec.name for spec in specs] == ["text"]]
        # "x" is one piece in every WordPiece vocabulary we ship; [CLS] and [SEP] make two more
        texts = [" ".join(["x"] * max(1, length - 2)) for length in self.lengths]
        return [(name, {"text": [text]}) for name in reading_text for text in texts]

    def check_xla(self) -> None:
        """Run the XLA path once (batch 1) before anything is written: a model XLA cannot compile
        fails here, with its reason, not at TF Serving's first request."""
        if not self.xla_max_batch:
            return
        x = self.preprocessor.encode_text(tf.constant(["XLA check"]))
        x = {k: v for k, v in x.items() if k in INPUT_NAMES}
        try:
            self.run(self.tasks, x)
        except (tf.errors.OpError, ValueError, TypeError) as err:
            reason = str(err).strip().splitlines()[0][:300]
            raise ExportError(f"XLA cannot compile this model ({reason}); export it without --xla "
                              "(export.xla_max_batch: 0)") from None

    def samples(self) -> dict:
        """``{signature: {input: values}}`` for the warm-up requests of the kinds' own signatures."""
        found = {f"{task.name}_{suffix}": sample for task in self.tasks
                 for suffix, (_, _, sample) in task.serving_variants().items()}
        found.update({task.name: task.serving_sample() for task in self.tasks if task.serving_inputs})
        return found

    def _pair_fn(self, task):
        def serve_pair(text, text_pair):
            return self.serve([task], text, text_pair)

        return serve_pair

    def endpoints(self) -> dict:
        """``{signature name: (function, input signature)}``."""
        text = tf.TensorSpec([None], tf.string, name="text")
        pair = tf.TensorSpec([None], tf.string, name="text_pair")
        ids = [tf.TensorSpec([None, None], tf.int32, name=n) for n in ("token_ids", "segment_ids", "padding_mask")]
        single = [t for t in self.tasks if "text_pair" not in t.input_fields and not t.serving_inputs]
        found = {}
        if single:
            found["serving_default"] = (self._text_fn(single), [text])
        for task in self.tasks:
            pairs = "text_pair" in task.input_fields
            if task.serving_inputs:  # a kind's own inputs (span QA: question, context)
                found[task.name] = (self._own_fn(task), [tf.TensorSpec([None], tf.string, name=n)
                                                         for n in task.serving_inputs])
            else:
                found[task.name] = (self._pair_fn(task), [text, pair]) if pairs else (self._text_fn([task]), [text])
        for task in self.tasks:  # a kind's other ways in (relation: text + entity spans)
            for suffix, (specs, to_text, _) in task.serving_variants().items():
                name = f"{task.name}_{suffix}"
                if name in found:
                    raise ExportError(f"signature {name!r} of task {task.name!r} clashes with another signature; "
                                      "rename the task")
                found[name] = (self._variant_fn(task, to_text), specs)

        def from_ids(token_ids, segment_ids, padding_mask):
            return self.serve_ids(token_ids, segment_ids, padding_mask)

        found["ids"] = (from_ids, ids)
        return found


def export_saved_model(model, preprocessor, base_dir, name: str, version: Optional[int] = None,
                       metadata: Optional[dict] = None, xla_max_batch: int = 0) -> Path:
    """Write ``<base_dir>/<name>/<version>/``: a SavedModel TF Serving can load.

    The version folder appears only when complete (see `atomic_version_dir`); ``version``
    defaults to the next free integer. ``assets.extra/kmtl.json`` records the tasks, label
    sets, backbone and max length; ``assets.extra/tf_serving_warmup_requests`` holds one
    warm-up request per signature. ``xla_max_batch`` > 0 serves batches of at most that many
    rows through XLA (see `ServingGraph`; TF Serving then needs ``--xla_cpu_compilation_enabled=true``).
    A model built under ``mixed_bfloat16`` is served through `kmtl.model.precision.serving_copy`
    (its encoder's weights stored in bfloat16, not cast at every call); export
    `kmtl.model.precision.float32_copy(model)` for a float32 graph.

    Example:
        >>> path = export_saved_model(model, pre, "saved_models", "demo")
        >>> path.name
        '1'
    """
    model_dir = check_export_target(base_dir, name, version)  # before any tracing
    model = served_model(model)  # a mode's serving form (prefix tuning: its MLP folded away)
    model = serving_copy(model)  # mixed_bfloat16: weights stored in bfloat16, not cast at every call
    graph = ServingGraph(model, preprocessor, xla_max_batch=xla_max_batch)
    graph.check_xla()
    # keras.export.ExportArchive, not a bare tf.saved_model.save: its variables restore in
    # the graph-mode loader that TF Serving (and saved_model_cli run) use.
    archive = keras.export.ExportArchive()
    track_weights_once(archive, model)
    signatures = {}  # name -> input specs
    for sig_name, (fn, spec) in graph.endpoints().items():
        archive.add_endpoint(sig_name, fn, input_signature=spec)
        signatures[sig_name] = spec
    with atomic_version_dir(model_dir, version, size_bytes=weights_nbytes(model) + GRAPH_BYTES) as target:
        tmp = target.tmp
        level = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")  # "Assets written to <temporary folder>" misleads
        try:
            archive.write_out(str(tmp), verbose=False)
        finally:
            tf.get_logger().setLevel(level)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        info = {
            "tasks": [t.get_config() for t in model.tasks],
            "served": [t.name for t in graph.tasks],  # those with signatures and ids outputs
            "backbone": model.encoder_spec,
            "max_length": preprocessor.max_length,
            "sharing": {"mode": getattr(model, "sharing", "full"), **getattr(model, "sharing_options", {})},
            "signatures": sorted(signatures),
            "xla": ({"max_batch": graph.xla_max_batch, "rows": graph.rows, "lengths": graph.lengths,
                     "tf_serving_flag": "--xla_cpu_compilation_enabled=true"} if graph.xla_max_batch else None),
            **(metadata or {}),
        }
        (extra / METADATA_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        write_warmup(tmp, name, signatures, preprocessor, samples=graph.samples(),
                     more=graph.xla_warmups(signatures))
    return target.final


def weights_nbytes(model) -> int:
    """Bytes of the model's weights (one copy): the bulk of an export's size.

    Example:
        >>> weights_nbytes(model) // 2**20   # MiniLM-L6 with three heads
        86
    """
    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.weights)


def track_weights_once(archive, model) -> None:
    """Give ``archive`` the model's weights as its ``variables`` collections, each stored once.

    ``archive.track(model)`` lists the ``keras.Variable`` wrappers while the endpoints capture
    the ``tf.Variable`` inside each, and TF's checkpoint, which deduplicates by object, then
    writes every weight twice: twice the size on disk and twice the variable memory in every
    process that loads the export, TF Serving included (keras issue 23553, open in 3.15.1;
    keras PR 23563, not merged, proposes the same unwrapping). The collections here hold the
    ``tf.Variable``s themselves (``keras.Variable.value`` on the TensorFlow backend), the same
    objects the endpoints capture, so each is written once; the reloaded object still has
    ``.variables`` / ``.trainable_variables`` / ``.non_trainable_variables``.

    Example:
        >>> archive = keras.export.ExportArchive()
        >>> track_weights_once(archive, model)
    """
    for collection, variables in (("variables", model.weights), ("trainable_variables", model.trainable_weights),
                                  ("non_trainable_variables", model.non_trainable_weights)):
        archive.add_variable_collection(collection, [v.value for v in variables])
