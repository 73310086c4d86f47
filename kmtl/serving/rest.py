"""A TF Serving REST client using only the standard library (and numpy for the outputs).

TF Serving's REST API (port 8501 by default):

* ``POST /v1/models/<model>[/versions/<v>]:predict`` with ``{"signature_name": ..., "inputs":
  {...}}`` (the "columnar" format) answers ``{"outputs": {...}}``, or ``{"outputs": <value>}``
  when the signature has a single output;
* ``GET /v1/models/<model>[/versions/<v>]/metadata`` answers the signature defs;
* ``GET /v1/models/<model>[/versions/<v>]`` answers the state of each version;
* errors answer ``{"error": "..."}`` with a 4xx/5xx status.

The helpers here that turn metadata and status into plain dicts are shared with
`kmtl.serving.grpc_client`, so that both clients answer alike.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Optional

import numpy as np

from kmtl.serving.base import ServingClient
from kmtl.serving.errors import ServingError

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class _Retryable(Exception):
    """One failed attempt that may succeed if tried again (carries what a ServingError needs)."""

    def __init__(self, cause: str, status=None, server_error: Optional[str] = None):
        super().__init__(cause)
        self.cause = cause
        self.status = status
        self.server_error = server_error


def _with_retries(attempt: Callable, where: str, retries: int, backoff: float, url: Optional[str] = None):
    """Call ``attempt()``; on `_Retryable` sleep ``backoff * 2**i`` and try again, up to
    ``retries`` more times; then raise a ServingError naming the attempts and the last cause."""
    tries = max(0, int(retries)) + 1
    for i in range(tries):
        try:
            return attempt()
        except _Retryable as err:
            last = err
            if i + 1 < tries:
                time.sleep(max(0.0, backoff) * (2 ** i))
    noun = "attempt" if tries == 1 else "attempts"
    raise ServingError(f"{where}: gave up after {tries} {noun}; last error: {last.cause}",
                       url=url, status=last.status,
                       server_error=last.server_error, attempts=tries)


# ---- shared output / metadata helpers --------------------------------------------------------

_DTYPE_NAMES = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16"}


def dtype_name(dt) -> str:
    """``"DT_FLOAT"`` → ``"float32"``, ``"DT_STRING"`` → ``"string"`` (TensorFlow's dtype names)."""
    dt = str(dt)
    if dt in _DTYPE_NAMES:
        return _DTYPE_NAMES[dt]
    return dt[3:].lower() if dt.startswith("DT_") else dt.lower()


def _shape(tensor_shape: dict):
    """A TensorShapeProto as JSON → list of ints (``None`` for unknown sizes), ``None`` if no rank."""
    if not tensor_shape or tensor_shape.get("unknown_rank"):
        return None
    dims = []
    for dim in tensor_shape.get("dim", []):
        size = int(dim.get("size", -1))
        dims.append(None if size < 0 else size)
    return dims


def normalize_signature_defs(signature_defs: dict) -> dict:
    """A SignatureDefMap's ``signature_def`` as JSON → ``{name: {"method_name", "inputs",
    "outputs"}}`` with ``{"dtype", "shape", "tensor"}`` per tensor; internal signatures
    (``__saved_model_init_op``) are left out."""
    out = {}
    for name, sig in sorted((signature_defs or {}).items()):
        if name.startswith("__"):
            continue
        entry = {"method_name": sig.get("method_name", "")}
        for side in ("inputs", "outputs"):
            entry[side] = {
                key: {"dtype": dtype_name(info.get("dtype", "DT_INVALID")),
                      "shape": _shape(info.get("tensor_shape", {})),
                      "tensor": info.get("name", "")}
                for key, info in sorted((sig.get(side) or {}).items())
            }
        out[name] = entry
    return out


def normalize_status(answer: dict) -> dict:
    """TF Serving's model status (JSON) with integer versions and the status fields filled in."""
    versions = []
    for item in answer.get("model_version_status", []) or []:
        status = item.get("status") or {}
        versions.append({"version": int(item.get("version", 0)),
                         "state": item.get("state", "UNKNOWN"),
                         "status": {"error_code": status.get("error_code", "OK"),
                                    "error_message": status.get("error_message", "")}})
    return {"model_version_status": versions}


def _unb64(value):
    """Replace TF Serving's ``{"b64": "..."}`` binary values by str (or bytes if not UTF-8)."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        raw = base64.b64decode(value["b64"])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


def as_output_array(value) -> np.ndarray:
    """One output value → numpy: numbers as numeric arrays, strings as object arrays of str."""
    value = _unb64(value)
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting: keep the rows as objects
        arr = np.empty(len(value), dtype=object)
        arr[:] = value
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    if arr.dtype == object:
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in arr.ravel()]
        fixed = np.empty(len(flat), dtype=object)
        fixed[:] = flat
        arr = fixed.reshape(arr.shape)
    return arr


def _jsonable(value):
    """Inputs → JSON: numpy arrays and scalars as lists and numbers, bytes as UTF-8 text."""
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _server_error(raw: bytes) -> str:
    """TF Serving's ``{"error": "..."}`` text, or the start of the body when it is not that."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return text[:500]


class RestClient(ServingClient):
    """Call a model served by TF Serving over its REST API (standard library only).

    Args:
        base_url: the server, e.g. ``"http://localhost:8501"``.
        model: the model name (the folder under TF Serving's model base path).
        version: a version number to pin, or ``None`` for the latest one the server has.
        timeout: seconds to wait for each answer.
        retries: how many more times to try after a failure that may pass (connection
            refused or reset, timeout, HTTP 503); so at most ``retries + 1`` attempts.
            Other errors (4xx, 500) are raised at once.
        backoff: seconds to wait before the first retry; doubled before each next one.

    Outputs come back as numpy arrays, strings as object arrays of ``str``.

    Example:
        >>> client = RestClient("http://localhost:8501", model="demo")
        >>> out = client.predict({"text": ["a lovely film", "dull"]})
        >>> out["sentiment_label"].tolist()
        ['positive', 'negative']
        >>> client.predict({"text": ["a cat"], "text_pair": ["a dog"]}, signature="similarity")
        {'similarity_score': array([0.83])}

    Raises:
        ServingError: with the URL, the HTTP status and the server's error text, or after the
            retries, the number of attempts and the last cause.
    """

    def __init__(self, base_url: str = "http://localhost:8501", model: str = "demo",
                 version: Optional[int] = None, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.2):
        super().__init__(model, version, timeout, retries, backoff)
        self.base_url = base_url.rstrip("/")
        self._output_names = {}
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        # A proxy from the environment must not catch requests to this machine's own server.
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK or host.startswith("127.") else []
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def address(self) -> str:
        return self.base_url

    @property
    def model_url(self) -> str:
        """``<base_url>/v1/models/<model>[/versions/<version>]``."""
        url = f"{self.base_url}/v1/models/{urllib.parse.quote(str(self.model), safe='')}"
        if self.version is not None:
            url += f"/versions/{int(self.version)}"
        return url

    def predict(self, inputs: dict, signature: str = "serving_default") -> dict:
        """Run ``signature`` on a batch.

        Args:
            inputs: input name → list (or numpy array) with one item per example, e.g.
                ``{"text": ["a", "b"], "text_pair": ["c", "d"]}``.
            signature: the signature's name (``"serving_default"`` or a pair task's name).

        Returns:
            output name → numpy array (``[batch, ...]``); string outputs hold ``str``.

        Example:
            >>> RestClient(model="demo").predict({"text": ["hello"]})["sentiment_probabilities"]
            array([[0.49, 0.51]])
        """
        if not isinstance(inputs, dict):
            raise TypeError(f"inputs must be a dict of input name → batch, not {type(inputs).__name__}")
        body = {"signature_name": signature, "inputs": {k: _jsonable(v) for k, v in inputs.items()}}
        answer = self._request("POST", self.model_url + ":predict", body)
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise ServingError(f"POST {self.model_url}:predict: the answer has no 'outputs': "
                               f"{json.dumps(answer)[:300]}", url=self.model_url + ":predict", status=200)
        outputs = answer["outputs"]
        if not isinstance(outputs, dict) or set(outputs) == {"b64"}:
            outputs = {self._single_output_name(signature): outputs}  # one output: a bare value
        return {name: as_output_array(value) for name, value in outputs.items()}

    def metadata(self) -> dict:
        """The served model's signatures, from ``GET .../metadata``.

        Returns:
            ``{"model": name, "version": int, "signatures": {signature: {"method_name": str,
            "inputs": {name: {"dtype": "string", "shape": [None], "tensor": "..."}},
            "outputs": {...}}}}``; unknown sizes are ``None``.

        Example:
            >>> sorted(RestClient(model="demo").metadata()["signatures"])
            ['serving_default', 'similarity']
        """
        url = self.model_url + "/metadata"
        answer = self._request("GET", url)
        try:
            spec = answer.get("model_spec", {})
            defs = answer["metadata"]["signature_def"]["signature_def"]
        except (AttributeError, KeyError, TypeError):
            raise ServingError(f"GET {url}: unexpected metadata: {json.dumps(answer)[:300]}",
                               url=url, status=200) from None
        version = spec.get("version")
        return {"model": spec.get("name", self.model),
                "version": int(version) if version not in (None, "") else None,
                "signatures": normalize_signature_defs(defs)}

    def status(self) -> dict:
        """The state of the model's versions, from ``GET /v1/models/<model>[/versions/<v>]``.

        Returns:
            ``{"model_version_status": [{"version": 1, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]}``.

        Example:
            >>> RestClient(model="demo").status()["model_version_status"][0]["state"]
            'AVAILABLE'
        """
        return normalize_status(self._request("GET", self.model_url))

    # ---- internals ------------------------------------------------------------------------

    def _single_output_name(self, signature: str) -> str:
        """The one output's name (TF Serving leaves it out of the answer): from the metadata."""
        if signature not in self._output_names:
            sigs = self.metadata()["signatures"]
            outs = list(sigs.get(signature, {}).get("outputs", {}))
            self._output_names[signature] = outs[0] if len(outs) == 1 else "outputs"
        return self._output_names[signature]

    def _request(self, method: str, url: str, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        where = f"{method} {url}"

        def attempt():
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                try:
                    text = _server_error(err.read())
                except (OSError, ValueError):
                    text = ""
                message = f"HTTP {err.code}" + (f": {text}" if text else f" {err.reason}")
                if err.code == 503:
                    raise _Retryable(message, status=503, server_error=text) from None
                raise ServingError(f"{where} failed: {message}", url=url, status=err.code,
                                   server_error=text or None) from None
            except urllib.error.URLError as err:
                reason = err.reason
                if isinstance(reason, (ConnectionRefusedError, ConnectionResetError, TimeoutError)):
                    raise _Retryable(self._describe(reason)) from None
                raise ServingError(f"{where} failed: {reason}", url=url) from None
            except (ConnectionResetError, TimeoutError) as err:  # while reading the answer
                raise _Retryable(self._describe(err)) from None
            except OSError as err:
                raise ServingError(f"{where} failed: {err}", url=url) from None
            try:
                return json.loads(raw.decode("utf-8"))
            except ValueError:
                raise ServingError(f"{where}: the answer is not JSON: {raw[:200]!r}", url=url,
                                   status=200) from None

        return _with_retries(attempt, where, self.retries, self.backoff, url=url)

    def _describe(self, err: BaseException) -> str:
        if isinstance(err, TimeoutError):
            return f"timed out after {self.timeout:g} s (the client's timeout)"
        if isinstance(err, ConnectionRefusedError):
            return f"connection refused ({err})"
        return f"connection reset ({err})"
