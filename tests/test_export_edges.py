"""Exports a server can load and nothing half-done (issue 15): permissions, stale and concurrent
temporaries, destination checks before any TensorFlow work, full disks, one copy of each weight,
the run config's export dir, models.config, and an ONNX client that tokenizes itself."""

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.cli import main
from kmtl.errors import ExportError
from kmtl.export import versions
from kmtl.export.versions import atomic_version_dir, check_model_name
from kmtl.run_files import load_run, save_run

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534


def _export_cli(capsys, *args):
    code = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def _tiny_model(seed=0):
    from kmtl.backbone import tiny_encoder

    tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]), kmtl.tasks.Regression("rating")]
    return kmtl.build_model(tiny_encoder(seed=seed), tasks, max_length=24)


def _stored_values(version_dir: Path) -> int:
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    return sum(int(np.prod(shape)) for key, shape in reader.get_variable_to_shape_map().items()
               if key != "_CHECKPOINTABLE_OBJECT_GRAPH")


# ---------------------------------------------------------------- a finished run, exported by `kmtl export RUN`
@pytest.fixture(scope="module")
def run_export():
    """A run folder (weights saved after an optimizer step exists) and `kmtl export RUN` of it, with
    no --dir, umask 022, from another working directory. Under a world-traversable folder so that
    another user can try to read the export."""
    root = Path(tempfile.mkdtemp(prefix="kmtl-export-edges-"))
    os.chmod(root, 0o755)
    model = _tiny_model()
    model.compile(optimizer=keras_adam())
    model.optimizer.build(model.trainable_variables)  # Adam's moments: what save_run used to store too
    run = root / "runs" / "small"
    run.mkdir(parents=True)
    save_run(run, model, 24, {"name": "small"})
    (run / "config.json").write_text(json.dumps({"name": "small", "export": {"dir": str(root / "exports")}}))
    cwd, mask = os.getcwd(), os.umask(0o022)
    os.chdir(root)
    try:
        assert main(["export", str(run)]) == 0
    finally:
        os.umask(mask)
        os.chdir(cwd)
    yield {"root": root, "run": run, "model": model, "path": root / "exports" / "small" / "1"}
    shutil.rmtree(root, ignore_errors=True)


def keras_adam():
    import keras

    return keras.optimizers.Adam(1e-3)


def test_kmtl_export_uses_the_run_configs_export_dir(run_export):
    assert run_export["path"].is_dir() and (run_export["path"] / "saved_model.pb").is_file()
    assert not (run_export["root"] / "saved_models").exists()  # not ./saved_models


def test_the_export_stores_each_weight_once(run_export):
    model = run_export["model"]
    # keras issue 23553: ExportArchive.track(model) made this 2 x count_params()
    assert _stored_values(run_export["path"]) == model.count_params()
    reloaded = tf.saved_model.load(str(run_export["path"]))
    assert sum(int(np.prod(v.shape)) for v in reloaded.variables) == model.count_params()


def test_run_weights_file_has_no_optimizer_state_and_still_loads(run_export):
    import h5py

    with h5py.File(run_export["run"] / "model.weights.h5", "r") as f:
        keys = []
        f.visit(keys.append)
    assert not [k for k in keys if k.startswith("optimizer")], keys[:5]
    sizes = []
    with h5py.File(run_export["run"] / "model.weights.h5", "r") as f:
        f.visititems(lambda _, obj: sizes.append(obj.size) if isinstance(obj, h5py.Dataset) else None)
    assert sum(sizes) < 1.1 * run_export["model"].count_params()  # with Adam's moments: about 3x
    loaded, pre, _ = load_run(run_export["run"])
    x = pre.encode_text(tf.constant(["a fine film", "dull"]))
    np.testing.assert_allclose(loaded(x)["sentiment"].numpy(), run_export["model"](x)["sentiment"].numpy(), atol=1e-6)


def test_version_folders_have_the_usual_permissions(run_export):
    assert run_export["path"].is_dir()
    for folder, _dirs, files in os.walk(run_export["path"]):
        assert os.stat(folder).st_mode & 0o777 == 0o755, folder  # mkdtemp gave 0700
        for name in files:
            assert os.stat(Path(folder) / name).st_mode & 0o044 == 0o044, name  # group and others read


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read as another user; the mode-bit test covers it")
def test_another_user_can_read_every_file_of_the_export(run_export):
    proc = subprocess.run(["find", str(run_export["path"]), "-type", "f", "-exec", "cat", "{}", "+"], user=NOBODY,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # TF Serving running as another user reads it


def test_version_folder_honours_a_stricter_umask(tmp_path):
    mask = os.umask(0o027)
    try:
        with atomic_version_dir(tmp_path / "m") as target:
            (target.tmp / "f").write_text("x")
    finally:
        os.umask(mask)
    assert os.stat(target.final).st_mode & 0o777 == 0o750


# ---------------------------------------------------------------- the destination is checked before any work
@pytest.fixture
def no_loading(monkeypatch):
    """`kmtl export` must refuse before it loads the model (the 17 s of tracing came after)."""
    import kmtl.training

    def refuse(*_, **__):
        raise AssertionError("the model was loaded before the destination was checked")

    monkeypatch.setattr(kmtl.training, "load_run", refuse)


@pytest.mark.parametrize("version, message", [("-1", "--version -1 is not a version"),
                                              ("1", "already exists")])
def test_bad_or_taken_version_is_refused_before_loading(run_export, no_loading, capsys, version, message):
    base = run_export["root"] / "exports"
    before = sorted(p.name for p in (base / "small").iterdir())
    start = time.perf_counter()
    code, _, err = _export_cli(capsys, run_export["run"], "--version", version)
    assert code == 2 and message in err, err
    assert time.perf_counter() - start < 2
    assert sorted(p.name for p in (base / "small").iterdir()) == before  # no "-1" folder


@pytest.mark.parametrize("name", ["../../x", "/tmp/kmtl-absolute-name", "..", "a/b", ""])
def test_names_that_are_not_one_folder_are_refused(run_export, no_loading, capsys, tmp_path, name):
    code, _, err = _export_cli(capsys, run_export["run"], "--dir", tmp_path / "base", "--name", name)
    assert code == 2 and "--name" in err and "single folder name" in err, err
    assert not (tmp_path / "base").exists() and not Path("/tmp/kmtl-absolute-name").exists()


def test_library_refuses_the_same_names_and_versions(tmp_path):
    for name in ("../x", "/abs", ".", "x/"):
        with pytest.raises(ExportError, match="single folder name"):
            check_model_name(name)
    with pytest.raises(ExportError, match="non-negative"):
        with atomic_version_dir(tmp_path / "m", -1):
            pass
    with pytest.raises(ExportError, match="single folder name"):  # before any tracing
        kmtl.export.export_onnx(object(), tmp_path, "../escape")
    assert not (tmp_path / "m").exists() and not (tmp_path.parent / "escape").exists()


# ---------------------------------------------------------------- temporaries: stale ones, concurrent ones
def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_exports_are_removed(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    host = versions._host_tag()
    dead = model_dir / f".tmp-1-{host}-{_dead_pid()}-0123abcd"
    live = model_dir / f".tmp-1-{host}-{os.getpid()}-0123abcd"      # an export running now
    other_host = model_dir / f".tmp-1-ffffffff-{_dead_pid()}-0123abcd"  # another machine's (shared disk)
    old_legacy, new_legacy = model_dir / ".tmp-1-k3j_x9q2", model_dir / ".tmp-2-abcd1234"  # tempfile.mkdtemp names
    for folder in (dead, live, other_host, old_legacy, new_legacy):
        (folder / "variables").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_legacy, (two_days_ago, two_days_ago))
    with atomic_version_dir(model_dir) as target:
        (target.tmp / "f").write_text("x")
    left = sorted(p.name for p in model_dir.iterdir())
    assert left == sorted(["1", live.name, other_host.name, new_legacy.name])


def test_two_concurrent_exports_get_distinct_versions(tmp_path):
    model_dir = tmp_path / "m"
    # the interleaving of two `kmtl export` processes: both pick version 1 before either finishes
    with atomic_version_dir(model_dir) as first:
        (first.tmp / "who").write_text("first")
        with atomic_version_dir(model_dir) as second:
            (second.tmp / "who").write_text("second")
    assert (second.final.name, first.final.name) == ("1", "2")
    assert (model_dir / "1" / "who").read_text() == "second" and (model_dir / "2" / "who").read_text() == "first"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]


def test_an_explicit_version_taken_meanwhile_is_an_error_not_an_overwrite(tmp_path):
    model_dir = tmp_path / "m"
    with pytest.raises(ExportError, match="written while this export ran"):
        with atomic_version_dir(model_dir, 3) as target:
            (target.tmp / "who").write_text("late")
            (model_dir / "3").mkdir()
            (model_dir / "3" / "who").write_text("early")
    assert (model_dir / "3" / "who").read_text() == "early" and sorted(p.name for p in model_dir.iterdir()) == ["3"]


# ---------------------------------------------------------------- a full disk
@pytest.mark.parametrize("error", [tf.errors.ResourceExhaustedError(None, None, "x; No space left on device"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_while_writing_is_one_clear_error_and_leaves_nothing(tmp_path, error):
    model_dir = tmp_path / "m"
    with pytest.raises(ExportError, match=r"disk filled up .* into .*m: it needs about 110 MB"):
        with atomic_version_dir(model_dir, size_bytes=100 * 2**20) as target:
            (target.tmp / "half").write_bytes(b"x" * 1000)
            raise error
    assert list(model_dir.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch, tiny):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(versions.shutil, "disk_usage", lambda _: usage._replace(free=2**20))
    model = kmtl.build_model(tiny, [kmtl.tasks.Classification("sentiment", ["negative", "positive"])])
    start = time.perf_counter()
    with pytest.raises(ExportError, match=r"needs about \d+ MB, 1 MB free"):
        kmtl.export.export_saved_model(model, tiny.preprocessor(16), tmp_path / "base", "m")
    assert time.perf_counter() - start < 5  # refused before the graph was traced
    assert not (tmp_path / "base").exists()


# ---------------------------------------------------------------- models.config
def test_models_config_escapes_quotes_and_round_trips(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    models = {"demo": "/models/demo", 'we"ird': '/models/a "quoted" \\ dir/é'}
    path = kmtl.export.write_models_config(tmp_path / "models.config", models)
    parsed = text_format.Parse(path.read_text(encoding="utf-8"), model_server_config_pb2.ModelServerConfig())
    assert {c.name: c.base_path for c in parsed.model_config_list.config} == models
    assert {c.model_platform for c in parsed.model_config_list.config} == {"tensorflow"}


# ---------------------------------------------------------------- ONNX: what a client needs to tokenize
@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    model = _tiny_model(seed=1)
    base = tmp_path_factory.mktemp("onnx")
    return model, kmtl.export.export_onnx(model, base, "demo")


TEXTS = ["What a wonderful film!", "A dull, lifeless plot.", "Café crème: (U.S.-based) STRASSE Straße ﬁne",
         "", "  spaced   out  ", "a " * 40]


def test_onnx_export_ships_vocabulary_and_tokenizer_that_match_the_model(onnx_export):
    from tokenizers import Tokenizer

    model, path = onnx_export
    pre = model.preprocessor
    info = json.loads((path / "kmtl.json").read_text())
    assert info["tokenizer"]["lowercase"] is True and info["tokenizer"]["max_length"] == 24
    assert (path / "vocab.txt").read_text(encoding="utf-8").splitlines() == list(pre.tokenizer.vocabulary)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    want = {k: v.numpy() for k, v in pre.encode_text(tf.constant(TEXTS)).items()}
    got = tokenizer.encode_batch(TEXTS)
    width = max(len(e.ids) for e in got)
    assert width == want["padding_mask"].sum(axis=1).max()  # padded to the longest, truncated to max_length
    np.testing.assert_array_equal(np.array([e.ids for e in got]), want["token_ids"][:, :width])
    np.testing.assert_array_equal(np.array([e.attention_mask for e in got]), want["padding_mask"][:, :width])
    pairs = [("a fine film", "what a plot"), ("ok", "")]
    want = pre.encode_text(tf.constant([a for a, _ in pairs]), tf.constant([b for _, b in pairs]))
    got = tokenizer.encode_batch(pairs)
    width = len(got[0].ids)
    np.testing.assert_array_equal(np.array([e.ids for e in got]), want["token_ids"].numpy()[:, :width])
    np.testing.assert_array_equal(np.array([e.type_ids for e in got]), want["segment_ids"].numpy()[:, :width])


def test_readme_onnx_client_goes_from_raw_text_to_labels(onnx_export, monkeypatch, tmp_path, capsys):
    model, path = onnx_export
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = "ONNX Runtime client, from raw text to labels"
    code = re.search(r"```python\n(.*?)```", text[text.index(marker):], re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    assert 'folder = "saved_models/demo/1"' in code
    (tmp_path / "saved_models" / "demo").mkdir(parents=True)
    shutil.copytree(path, tmp_path / "saved_models" / "demo" / "1")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile(code, "README.md (ONNX client)", "exec"), namespace)
    texts = namespace["texts"]
    logits = model(model.preprocessor.encode_text(tf.constant(texts)))["sentiment"].numpy()
    want = [["negative", "positive"][i] for i in logits.argmax(-1)]
    assert capsys.readouterr().out.strip() == str(want)
