"""The TF Serving clients (`RestClient`, `GrpcClient`) against a TF Serving double on 127.0.0.1."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from kmtl.serving import GrpcClient, RestClient, ServingError

TEXTS = ["a lovely , moving film .", "dull", "Paris is far from Berlin"]
PAIRS = ["a cat sat", "nothing", "two dogs run"]
CLIENTS = ["rest", "grpc"]


@pytest.fixture(scope="session")
def export_base(tmp_path_factory, tiny):
    """A tiny random 3-task model (classification, pair regression, tagging), exported."""
    import kmtl

    tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
             kmtl.tasks.PairRegression("similarity"),
             kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER", "LOC"]))]
    model = kmtl.build_model(tiny, tasks)
    base = tmp_path_factory.mktemp("serving")
    kmtl.export.export_saved_model(model, tiny.preprocessor(32), base, "demo")
    return base


@pytest.fixture(scope="session")
def double_session(export_base):
    from serving_double import ServingDouble

    with ServingDouble(export_base, "demo") as double:
        yield double


@pytest.fixture
def double(double_session):
    double_session.reset()
    yield double_session
    double_session.reset()


def make_client(kind, double, **kw):
    kw.setdefault("model", "demo")
    if kind == "rest":
        return RestClient(double.rest_url, **kw)
    return GrpcClient(double.grpc_target, **kw)


def direct(double, signature, inputs):
    """Outputs of the loaded signature called in-process, bytes decoded."""
    import tensorflow as tf

    out = double.loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    result = {}
    for name, value in out.items():
        value = value.numpy()
        if value.dtype == object:
            value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
        result[name] = value
    return result


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("signature,inputs", [
    ("serving_default", {"text": TEXTS}),
    ("similarity", {"text": TEXTS, "text_pair": PAIRS}),
], ids=["serving_default", "pair"])
def test_predict_matches_the_signature_called_directly(double, kind, signature, inputs):
    want = direct(double, signature, inputs)
    with make_client(kind, double) as client:
        got = client.predict(inputs, signature=signature)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert isinstance(got[name], np.ndarray) and got[name].shape == value.shape, name
        if value.dtype == object:
            assert got[name].tolist() == value.tolist(), name
            assert all(isinstance(v, str) for v in got[name].ravel()), name
        else:
            np.testing.assert_allclose(got[name], value, atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.parametrize("kind", CLIENTS)
def test_predict_with_integer_inputs(double, kind):
    """A signature taking token ids (if the export has one): int inputs, 3-D float outputs."""
    names = [n for n, fn in double.signatures.items()
             if all(s.dtype.is_integer for s in fn.structured_input_signature[1].values())]
    if not names:
        pytest.skip("the export has no signature taking integer inputs")
    specs = double.signatures[names[0]].structured_input_signature[1]
    ids = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    inputs = {k: (ids > 0 if "mask" in k else 0 * ids if "segment" in k else ids).astype(s.dtype.as_numpy_dtype)
              for k, s in specs.items()}
    want = direct(double, names[0], inputs)
    got = make_client(kind, double).predict(inputs, signature=names[0])
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.parametrize("kind", CLIENTS)
def test_metadata_lists_the_signatures_with_their_inputs_and_outputs(double, kind):
    meta = make_client(kind, double).metadata()
    assert meta["model"] == "demo" and meta["version"] == double.version
    sigs = meta["signatures"]
    assert sorted(sigs) == sorted(double.signatures)  # no __saved_model_init_op
    assert sigs["serving_default"]["inputs"] == {
        "text": {"dtype": "string", "shape": [None], "tensor": "serving_default_text:0"}}
    assert sorted(sigs["similarity"]["inputs"]) == ["text", "text_pair"]
    for name, fn in double.signatures.items():
        outs = sigs[name]["outputs"]
        assert sorted(outs) == sorted(fn.structured_outputs)
        for out, spec in fn.structured_outputs.items():
            assert outs[out]["dtype"] == spec.dtype.name
            assert outs[out]["shape"] == spec.shape.as_list()


@pytest.mark.parametrize("kind", CLIENTS)
def test_status_says_available_with_the_version(double, kind):
    assert make_client(kind, double).status() == {"model_version_status": [
        {"version": double.version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    pinned = make_client(kind, double, version=double.version)
    assert pinned.status()["model_version_status"][0]["version"] == double.version


@pytest.mark.parametrize("kind", CLIENTS)
def test_unavailable_is_retried_with_backoff(double, kind):
    double.fail_next(2)
    out = make_client(kind, double, retries=3, backoff=0.01).status()
    assert out["model_version_status"][0]["state"] == "AVAILABLE"
    assert len(double.requests) == 3

    double.reset()
    double.fail_next(2)
    with pytest.raises(ServingError) as info:
        make_client(kind, double, retries=1, backoff=0.01).predict({"text": TEXTS[:1]})
    message = str(info.value)
    assert "2 attempts" in message and info.value.attempts == 2
    assert ("HTTP 503" if kind == "rest" else "UNAVAILABLE") in message
    assert "temporarily unavailable" in message  # the server's own text
    assert len(double.requests) == 2


@pytest.mark.parametrize("kind", CLIENTS)
def test_bad_signature_is_not_retried_and_shows_the_server_error(double, kind):
    with pytest.raises(ServingError) as info:
        make_client(kind, double, retries=3, backoff=0.01).predict({"text": TEXTS}, signature="nope")
    message = str(info.value)
    assert 'Serving signature key "nope" not found.' in message
    assert ("HTTP 400" if kind == "rest" else "FAILED_PRECONDITION") in message
    assert (double.rest_url if kind == "rest" else double.grpc_target) in message
    assert len(double.requests) == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_missing_input_and_unknown_model(double, kind):
    with pytest.raises(ServingError, match=r"Missing but required: \{text_pair\}") as info:
        make_client(kind, double).predict({"text": TEXTS}, signature="similarity")
    assert info.value.status == (400 if kind == "rest" else "INVALID_ARGUMENT")
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(other\)") as info:
        make_client(kind, double, model="other").predict({"text": TEXTS})
    assert info.value.status == (404 if kind == "rest" else "NOT_FOUND")
    assert len(double.requests) == 2


@pytest.mark.parametrize("kind", CLIENTS)
def test_connection_refused_fails_after_the_retries_quickly(kind):
    port = closed_port()
    client = (RestClient(f"http://127.0.0.1:{port}", "demo", retries=2, backoff=0.01) if kind == "rest"
              else GrpcClient(f"127.0.0.1:{port}", "demo", retries=2, backoff=0.01, timeout=2.0))
    start = time.monotonic()
    with pytest.raises(ServingError, match="gave up after 3 attempts") as info:
        client.status()
    assert time.monotonic() - start < 5
    assert ("refused" if kind == "rest" else "UNAVAILABLE") in str(info.value)
    client.close()


@pytest.mark.parametrize("kind", CLIENTS)
def test_timeout_is_honoured_and_retried(double, kind):
    double.delay_next(1, seconds=3.0)
    with pytest.raises(ServingError, match=r"timed out after 0\.3 s") as info:
        make_client(kind, double, timeout=0.3, retries=0).status()
    assert info.value.attempts == 1
    if kind == "grpc":
        assert "DEADLINE_EXCEEDED" in str(info.value)
    double.reset()
    double.delay_next(1, seconds=3.0)  # the first attempt times out, the second answers
    start = time.monotonic()
    assert make_client(kind, double, timeout=0.3, retries=1, backoff=0.01).status()
    assert time.monotonic() - start < 2.5
    assert len(double.requests) == 2


def test_rest_double_answers_the_row_format(double):
    def post(body):
        req = urllib.request.Request(f"{double.rest_url}/v1/models/demo:predict", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    rows = post({"signature_name": "similarity", "instances": [{"text": "a", "text_pair": "b"}]})
    assert len(rows["predictions"]) == 1 and isinstance(rows["predictions"][0], float)  # one output: bare
    rows = post({"instances": TEXTS[:2]})["predictions"]
    assert len(rows) == 2 and rows[0]["sentiment_label"] in ("negative", "positive")


def test_importing_the_clients_stays_light():
    code = "import sys, kmtl.serving; print(sorted(m for m in ('tensorflow', 'grpc') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
