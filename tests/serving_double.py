"""A stand-in for TF Serving in tests: serves a kmtl export over REST and gRPC on 127.0.0.1.

Not a full TF Serving: one model, its latest version, the Predict / GetModelMetadata /
GetModelStatus calls, with TF Serving's URLs, message shapes, error codes and error texts
(``Servable not found for request: Latest(x)``, ``Serving signature key "x" not found.``,
``input size does not match signature ...``). Switches make it answer 503 / UNAVAILABLE, or
wait, for the next requests, to test clients' retries and timeouts.

Example:
    >>> with ServingDouble("saved_models", "demo") as double:
    ...     RestClient(double.rest_url, "demo").predict({"text": ["hi"]})
"""

from __future__ import annotations

import base64
import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops before loading)
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kmtl.export.versions import existing_versions

_HTTP = {  # gRPC code → HTTP status, as TF Serving's REST front end maps them
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNKNOWN": 500, "RESOURCE_EXHAUSTED": 429,
}
_URL = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                  r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                  r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")


class ServingFailure(Exception):
    """A TF Serving error: a gRPC code name (the HTTP status follows) and the message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP.get(self.code, 500)


class ServingDouble:
    """Serve the latest version of ``<model_base_dir>/<model_name>/`` like TF Serving.

    Args:
        model_base_dir: the folder holding model folders (TF Serving's ``--model_base_path``
            parent), e.g. ``saved_models``.
        model_name: the model's folder name and the name clients ask for.

    Attributes:
        rest_url: ``http://127.0.0.1:<port>`` (REST API).
        grpc_target: ``127.0.0.1:<port>`` (PredictionService, ModelService).
        version: the version served; ``loaded``: the loaded SavedModel.
        requests: one ``(protocol, what)`` pair per request received, in order.
    """

    def __init__(self, model_base_dir, model_name: str):
        model_dir = Path(model_base_dir) / model_name
        versions = existing_versions(model_dir)
        if not versions:
            raise FileNotFoundError(f"{model_dir} holds no integer version folders")
        self.model_name = model_name
        self.version = versions[-1]
        self.path = model_dir / str(self.version)
        self.loaded = tf.saved_model.load(str(self.path))
        self.signatures = dict(self.loaded.signatures)
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((self.path / "saved_model.pb").read_bytes())
        self.signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in saved.meta_graphs[0].signature_def.items():
            self.signature_def_map.signature_def[key].CopyFrom(sig)

        self.requests = []
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_code = "UNAVAILABLE"
        self._delay_left = 0
        self._delay_s = 0.0
        self._closed = threading.Event()

        handler = type("Handler", (_RestHandler,), {"double": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                                             name="serving-double-rest", daemon=True)
        self._http_thread.start()
        self.rest_url = f"http://127.0.0.1:{self._http.server_address[1]}"

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="serving-double-grpc"))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionServicer(self), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelServicer(self), self._grpc)
        port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        self.grpc_target = f"127.0.0.1:{port}"

    # ---- switches ---------------------------------------------------------------------------

    def fail_next(self, n: int, code: str = "UNAVAILABLE"):
        """Answer the next ``n`` requests (either protocol) with ``code`` (503 for UNAVAILABLE)."""
        with self._lock:
            self._fail_left, self._fail_code = int(n), code

    def delay_next(self, n: int, seconds: float):
        """Wait ``seconds`` before answering each of the next ``n`` requests."""
        with self._lock:
            self._delay_left, self._delay_s = int(n), float(seconds)

    def reset(self):
        """Clear the switches and the request log."""
        with self._lock:
            self._fail_left = self._delay_left = 0
            self.requests = []

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self):
        """Stop both servers (requests still waiting on a delay are cut short)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None).wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- what both front ends share ---------------------------------------------------------

    def gate(self, protocol: str, what: str):
        """Log a request, then apply the delay and failure switches."""
        with self._lock:
            self.requests.append((protocol, what))
            delay = self._delay_s if self._delay_left > 0 else 0.0
            self._delay_left = max(0, self._delay_left - 1)
            fail = self._fail_code if self._fail_left > 0 else None
            self._fail_left = max(0, self._fail_left - 1)
        if delay:
            self._closed.wait(delay)
        if fail:
            raise ServingFailure(fail, "The server is temporarily unavailable (ServingDouble.fail_next)")

    def check_model(self, name: str, version=None, label=None):
        """NOT_FOUND unless ``name`` (and ``version``) is what is served."""
        if label is not None:
            raise ServingFailure("NOT_FOUND", f"Unrecognized servable version label: {label}")
        if name != self.model_name or (version is not None and int(version) != self.version):
            which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingFailure("NOT_FOUND", f"Servable not found for request: {which}")

    def check_status_request(self, name: str, version=None):
        if name != self.model_name:
            raise ServingFailure("NOT_FOUND", f"Could not find any versions of model {name}")
        if version is not None and int(version) != self.version:
            raise ServingFailure("NOT_FOUND", f"Could not find version {version} of model {name}")

    def signature(self, name: str):
        name = name or "serving_default"
        if name not in self.signatures:
            raise ServingFailure("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        return name, self.signatures[name]

    def run(self, signature: str, inputs: dict, output_filter=()) -> dict:
        """Check ``inputs`` against the signature as TF Serving does, run it; name → numpy."""
        name, fn = self.signature(signature)
        specs = fn.structured_input_signature[1]
        if set(inputs) != set(specs):
            sent, want = sorted(inputs), sorted(specs)
            raise ServingFailure(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(want)} len({{{','.join(sent)}}}) "
                f"!= len({{{','.join(want)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(want)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(want) - set(sent)))}}}.")
        outputs_known = fn.structured_outputs
        for alias in output_filter:
            if alias not in outputs_known:
                raise ServingFailure("INVALID_ARGUMENT",
                                     f"output tensor alias not found in signature: {alias} Outputs expected "
                                     f"to be in the set {{{','.join(sorted(outputs_known))}}}.")
        try:
            tensors = {k: tf.convert_to_tensor(v, dtype=specs[k].dtype) for k, v in inputs.items()}
            for k, t in tensors.items():
                if not specs[k].shape.is_compatible_with(t.shape):
                    raise ServingFailure("INVALID_ARGUMENT", f"input {k}: shape {t.shape} does not match "
                                         f"the signature's {specs[k].shape}")
            result = fn(**tensors)
        except ServingFailure:
            raise
        except tf.errors.OpError as err:
            raise ServingFailure(_code_name(err.error_code), err.message) from None
        except (TypeError, ValueError) as err:
            raise ServingFailure("INVALID_ARGUMENT", str(err)) from None
        keep = list(output_filter) or sorted(result)
        return {k: result[k].numpy() for k in keep}

    def metadata_json(self) -> dict:
        return json_format.MessageToDict(self.signature_def_map, preserving_proto_field_name=True)


_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
          "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
          "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


def _code_name(code: int) -> str:
    """TensorFlow's error code number → its name (the same numbers as gRPC's codes)."""
    return _CODES[code] if 0 <= code < len(_CODES) else "UNKNOWN"


def _to_json(name: str, value: np.ndarray):
    """An output as TF Serving's JSON: strings as text (base64 objects for ``*_bytes``)."""
    def one(v):
        if isinstance(v, list):
            return [one(x) for x in v]
        if isinstance(v, bytes):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(v).decode("ascii")}
            return v.decode("utf-8", "replace")
        return v
    return one(value.tolist())


def _unb64(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


class _RestHandler(BaseHTTPRequestHandler):
    double: ServingDouble = None
    server_version = "ServingDouble"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str):
        double = self.double
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            double.gate("rest", f"{method} {self.path}")
            match = _URL.match(self.path.split("?", 1)[0])
            if not match or (method == "GET") == (match["verb"] == ":predict") or \
                    match["verb"] in (":classify", ":regress"):
                raise ServingFailure("NOT_FOUND" if not match else "INVALID_ARGUMENT",
                                     f"Malformed request: {method} {self.path}")
            name, version, label, verb = match["name"], match["version"], match["label"], match["verb"]
            if verb is None:
                double.check_status_request(name, version)
                answer = {"model_version_status": [{"version": str(double.version), "state": "AVAILABLE",
                                                    "status": {"error_code": "OK", "error_message": ""}}]}
            elif verb == "/metadata":
                double.check_model(name, version, label)
                answer = {"model_spec": {"name": name, "signature_name": "", "version": str(double.version)},
                          "metadata": {"signature_def": double.metadata_json()}}
            else:
                double.check_model(name, version, label)
                answer = self._predict(body)
            self._send(200, answer)
        except ServingFailure as err:
            self._send(err.http_status, {"error": err.message})
        except Exception as err:  # noqa: BLE001  (a bug here should still answer)
            self._send(500, {"error": f"{type(err).__name__}: {err}"})

    def _predict(self, raw: bytes) -> dict:
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError as err:
            raise ServingFailure("INVALID_ARGUMENT", f"JSON Parse error: {err}") from None
        if not isinstance(body, dict):
            raise ServingFailure("INVALID_ARGUMENT", "JSON Value: not an object")
        if ("inputs" in body) == ("instances" in body):
            raise ServingFailure("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key" if "inputs" not in body
                                 else "Both 'inputs' and 'instances' keys are present")
        sig_name, fn = self.double.signature(body.get("signature_name", ""))
        input_names = sorted(fn.structured_input_signature[1])
        if "inputs" in body:
            inputs = body["inputs"]
            if not isinstance(inputs, dict):
                if len(input_names) != 1:
                    raise ServingFailure("INVALID_ARGUMENT", "inputs must be an object with one entry per "
                                         f"input when the signature has several: {input_names}")
                inputs = {input_names[0]: inputs}
            rows = False
        else:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise ServingFailure("INVALID_ARGUMENT", "'instances' must be a non-empty list")
            if all(isinstance(r, dict) and set(r) != {"b64"} for r in instances):
                names = set(instances[0])
                if any(set(r) != names for r in instances):
                    raise ServingFailure("INVALID_ARGUMENT", "Failed to process element: every instance "
                                         "must name the same inputs")
                inputs = {k: [r[k] for r in instances] for k in names}
            elif len(input_names) == 1:
                inputs = {input_names[0]: instances}
            else:
                raise ServingFailure("INVALID_ARGUMENT", "instances must be objects naming the inputs "
                                     f"{input_names}")
            rows = True
        outputs = self.double.run(sig_name, {k: _unb64(v) for k, v in inputs.items()})
        values = {k: _to_json(k, v) for k, v in outputs.items()}
        if rows:
            batch = len(next(iter(values.values()))) if values else 0
            if len(values) == 1:
                return {"predictions": next(iter(values.values()))}
            return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(batch)]}
        if len(values) == 1:
            return {"outputs": next(iter(values.values()))}
        return {"outputs": values}

    def _send(self, status: int, answer):
        data = json.dumps(answer).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (e.g. its timeout)
            pass


def _abort(context, err: ServingFailure):
    context.abort(getattr(grpc.StatusCode, err.code, grpc.StatusCode.UNKNOWN), err.message)


class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, double: ServingDouble):
        self.double = double

    def _version(self, spec):
        if spec.HasField("version"):
            return spec.version.value
        return None

    def Predict(self, request, context):
        double = self.double
        try:
            double.gate("grpc", "Predict")
            spec = request.model_spec
            double.check_model(spec.name, self._version(spec), spec.version_label or None)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            sig_name, _ = double.signature(spec.signature_name)
            outputs = double.run(sig_name, inputs, list(request.output_filter))
        except ServingFailure as err:
            _abort(context, err)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = double.version
        response.model_spec.signature_name = sig_name
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        double = self.double
        try:
            double.gate("grpc", "GetModelMetadata")
            spec = request.model_spec
            double.check_model(spec.name, self._version(spec), spec.version_label or None)
            if not request.metadata_field:
                raise ServingFailure("INVALID_ARGUMENT",
                                     "GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise ServingFailure("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
        except ServingFailure as err:
            _abort(context, err)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = double.version
        response.metadata["signature_def"].Pack(double.signature_def_map)
        return response


class _ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, double: ServingDouble):
        self.double = double

    def GetModelStatus(self, request, context):
        double = self.double
        spec = request.model_spec
        try:
            double.gate("grpc", "GetModelStatus")
            double.check_status_request(spec.name, spec.version.value if spec.HasField("version") else None)
        except ServingFailure as err:
            _abort(context, err)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = double.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response
