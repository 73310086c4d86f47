"""A TF Serving gRPC client (PredictionService, ModelService) on tensorflow-serving-api's stubs.

``grpc``, the stubs and TensorFlow (for ``tf.make_tensor_proto`` / ``tf.make_ndarray``) are
imported on first use, so importing `kmtl.serving` stays quick.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from kmtl.serving.base import ServingClient
from kmtl.serving.errors import ServingError
from kmtl.serving.rest import (
    _Retryable,
    _with_retries,
    as_output_array,
    normalize_signature_defs,
    normalize_status,
)

_SERVICE = "tensorflow.serving"
_MAX_MESSAGE = 256 * 1024 * 1024


class GrpcClient(ServingClient):
    """Call a model served by TF Serving over gRPC (port 8500 by default).

    Args:
        target: ``"host:port"`` of the server.
        model: the model name.
        version: a version number to pin, or ``None`` for the latest one the server has.
        timeout: the deadline of each call, in seconds.
        retries: how many more times to try after ``UNAVAILABLE`` (server down, connection
            refused, overloaded) or ``DEADLINE_EXCEEDED``; so at most ``retries + 1``
            attempts. Other codes (``NOT_FOUND``, ``INVALID_ARGUMENT``, ...) are raised at once.
        backoff: seconds to wait before the first retry; doubled before each next one.

    Outputs come back as numpy arrays, strings (``DT_STRING``) as object arrays of ``str``.
    The channel opens on first use; `close` it, or use the client as a context manager.

    Example:
        >>> with GrpcClient("localhost:8500", model="demo") as client:
        ...     out = client.predict({"text": ["a lovely film"]})
        >>> out["sentiment_label"].tolist()
        ['positive']

    Raises:
        ServingError: with the method, the gRPC code and the server's details, or after the
            retries, the number of attempts and the last cause.
    """

    def __init__(self, target: str = "localhost:8500", model: str = "demo",
                 version: Optional[int] = None, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.2):
        super().__init__(model, version, timeout, retries, backoff)
        self.target = target
        self._channel = None
        self._predict_stub = None
        self._model_stub = None

    @property
    def address(self) -> str:
        return self.target

    def close(self):
        """Close the channel (a later call opens a new one)."""
        if self._channel is not None:
            self._channel.close()
        self._channel = self._predict_stub = self._model_stub = None

    def predict(self, inputs: dict, signature: str = "serving_default") -> dict:
        """Run ``signature`` on a batch (``PredictionService.Predict``).

        Args:
            inputs: input name → list or numpy array with one item per example, e.g.
                ``{"text": ["a", "b"], "text_pair": ["c", "d"]}``; turned into TensorProtos
                with ``tf.make_tensor_proto`` (so give numbers in the dtype the model expects).
            signature: the signature's name.

        Returns:
            output name → numpy array; string outputs hold ``str``.

        Example:
            >>> GrpcClient(model="demo").predict({"text": ["a cat"], "text_pair": ["a dog"]},
            ...                                  signature="similarity")["similarity_score"]
            array([0.83], dtype=float32)
        """
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        if not isinstance(inputs, dict):
            raise TypeError(f"inputs must be a dict of input name → batch, not {type(inputs).__name__}")
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        for name, value in inputs.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "U":
                value = value.astype(object)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call("Predict", request)
        return {name: as_output_array(tf.make_ndarray(proto)) for name, proto in response.outputs.items()}

    def metadata(self) -> dict:
        """The served model's signatures (``PredictionService.GetModelMetadata``).

        Returns:
            ``{"model": name, "version": int, "signatures": {signature: {"method_name": str,
            "inputs": {name: {"dtype": "string", "shape": [None], "tensor": "..."}},
            "outputs": {...}}}}``, the same as `RestClient.metadata`.

        Example:
            >>> GrpcClient(model="demo").metadata()["signatures"]["similarity"]["inputs"].keys()
            dict_keys(['text', 'text_pair'])
        """
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._call("GetModelMetadata", request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(defs):
            raise ServingError(f"{self.target} GetModelMetadata: the answer holds no signature_def",
                               url=self._where("GetModelMetadata"), status="OK")
        as_json = json_format.MessageToDict(defs, preserving_proto_field_name=True)
        spec = response.model_spec
        return {"model": spec.name or self.model,
                "version": spec.version.value if spec.HasField("version") else None,
                "signatures": normalize_signature_defs(as_json.get("signature_def", {}))}

    def status(self) -> dict:
        """The state of the model's versions (``ModelService.GetModelStatus``).

        Returns:
            ``{"model_version_status": [{"version": 1, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]}``, as `RestClient.status`.

        Example:
            >>> GrpcClient(model="demo").status()["model_version_status"][0]["state"]
            'AVAILABLE'
        """
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call("GetModelStatus", request)
        return normalize_status(json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))

    # ---- internals ------------------------------------------------------------------------

    def _spec(self, spec, signature: Optional[str] = None):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)
        if signature is not None:
            spec.signature_name = signature

    def _where(self, method: str) -> str:
        service = "ModelService" if method == "GetModelStatus" else "PredictionService"
        return f"{self.target}/{_SERVICE}.{service}/{method}"

    def _stub_method(self, method: str):
        if self._channel is None:
            import grpc
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(self.target, options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE)])
            self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        stub = self._model_stub if method == "GetModelStatus" else self._predict_stub
        return getattr(stub, method)

    def _call(self, method: str, request):
        import grpc

        where = self._where(method)
        call = self._stub_method(method)
        retry_codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

        def attempt():
            try:
                return call(request, timeout=self.timeout)
            except grpc.RpcError as err:
                code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
                details = (err.details() if callable(getattr(err, "details", None)) else None) or str(err)
                name = code.name if code is not None else "UNKNOWN"
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    cause = f"{name}: timed out after {self.timeout:g} s (the client's timeout): {details}"
                else:
                    cause = f"{name}: {details}"
                if code in retry_codes:
                    raise _Retryable(cause, status=name, server_error=details) from None
                raise ServingError(f"{where} failed: {cause}", url=where, status=name,
                                   server_error=details) from None

        return _with_retries(attempt, where, self.retries, self.backoff, url=where)
