"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays these requests when it loads a version, before it reports the version
available, so the first real request does not pay for graph initialisation.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

WARMUP_FILE = "tf_serving_warmup_requests"
SAMPLE_TEXTS = ("John Smith flew from Paris to New York on Monday .", "What a wonderful film !")


def write_warmup(export_dir, model_name: str, signatures: dict, preprocessor, texts=SAMPLE_TEXTS,
                 samples=None, more=()) -> Path:
    """Write one `PredictionLog` per signature (``texts`` as the batch) into ``assets.extra``.

    Args:
        export_dir: the version folder being written.
        model_name: the model name TF Serving serves it under.
        signatures: ``{name: [input TensorSpec, ...]}`` as exported (specs named like the inputs).
        preprocessor: the model's `kmtl.data.Preprocessor` (tokenizes ``texts`` for ``ids``).
        texts: sample inputs; pair signatures get the same texts as both sentences.
        samples: ``{signature: {input: values}}`` for inputs that are neither text nor token ids
            (a relation task's entity spans in ``texts``: `kmtl.tasks.Task.serving_variants`).
        more: further ``(signature, {input: values})`` requests, written after those (an XLA
            export's one request per compiled shape: `ServingGraph.xla_warmups`).

    Example:
        >>> write_warmup("saved_models/demo/1", "demo", {"serving_default": [tf.TensorSpec([None], tf.string, name="text")]}, pre)
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = Path(export_dir) / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = preprocessor.encode_text(tf.constant(list(texts)))
    requests = []
    for name, specs in signatures.items():
        given = (samples or {}).get(name, {})
        inputs = {}
        for spec in specs:
            if spec.name in given:
                inputs[spec.name] = tf.constant(given[spec.name], spec.dtype)
            elif spec.dtype == tf.string:
                inputs[spec.name] = tf.constant(list(texts))
            else:  # ids, and task_id (task 0) for models with per-task adapters
                inputs[spec.name] = ids[spec.name] if spec.name in ids else tf.zeros([len(texts)], spec.dtype)
        requests.append((name, inputs))
    requests += [(name, {key: tf.constant(values) for key, values in inputs.items()}) for name, inputs in more]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for name, inputs in requests:
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
