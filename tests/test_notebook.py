"""The quickstart notebook runs end to end (tiny backbone, tiny data) in a venv kernel."""

import asyncio
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = NOTEBOOKS / "quickstart.ipynb"
SHARED_DATA = REPO.parent / "shared" / "data"
HAS_SHARED_DATA = all((SHARED_DATA / name).is_dir() for name in ("sst2", "conll2003", "stsb"))

# what each data mode trains: (task names, the sentence-pair task)
REAL_TASKS = (["sentiment", "entities", "similarity"], "similarity")
DEMO_TASKS = (["sentiment", "paraphrase", "entities"], "paraphrase")


def _generator():
    spec = importlib.util.spec_from_file_location("make_quickstart", NOTEBOOKS / "make_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def venv_kernel(tmp_path_factory, monkeypatch):
    """Make the kernel name "python3" start *this* interpreter (the venv's python).

    A kernelspec whose argv[0] is ``sys.executable`` is installed into a temporary prefix that
    ``JUPYTER_PATH`` puts ahead of the user's and the system's kernelspecs, so a "python3"
    kernel registered elsewhere (another Python, a conda env) cannot be picked up.
    """
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return "python3"


def _text(cell) -> str:
    """A code cell's printed output (stdout and text results; progress lines go to stderr)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream" and out.get("name") == "stdout":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def _client(kernel_name, out_dir: Path, use_shared_data: bool):
    """The notebook with a papermill-style override cell after its parameters, and its client."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    overrides = "\n".join([
        'BACKBONE = "tiny"',
        "N_TRAIN = 48",
        "N_DEV = 16",
        "EPOCHS = 1",
        "MAX_LENGTH = 32",
        f"OUT_DIR = {str(out_dir)!r}",
        f"USE_SHARED_DATA = {use_shared_data}",
        "import sys",
        "print(sys.executable)",
        "print(sys.prefix)",
    ])
    cell = nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    nb.cells.insert(_parameters_index(nb) + 1, cell)
    client = NotebookClient(nb, timeout=600, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    return nb, client


def _check_run(nb, out_dir: Path, tasks):
    names, pair_task = tasks
    by_id = {c.id: c for c in nb.cells}

    # the kernel ran in this test's interpreter (the venv), not some other "python3"
    executable, prefix = _text(by_id["injected-parameters"]).split()
    assert (executable, prefix) == (sys.executable, sys.prefix)

    data = _text(by_id["data"])
    assert str(SHARED_DATA.resolve() if tasks is REAL_TASKS else Path("demo", "corpus")) in data, data

    history = _text(by_id["curves"])
    for name in names:
        assert f"val_{name}_loss" in history, history

    table = _text(by_id["evaluate"])
    assert table.splitlines()[0].split()[:3] == ["task", "kind", "n"], table
    for name in names:
        assert name in table, f"{name} missing from the evaluation table:\n{table}"

    assert (out_dir / "saved_models" / "quickstart" / "1" / "saved_model.pb").is_file()
    assert (out_dir / "logs" / "train").is_dir()
    predictions = _text(by_id["predict"])
    assert predictions.count("sentiment_label") == 2, predictions
    assert "entities_tags" in predictions, predictions
    assert _text(by_id["predict-pair"]).startswith(pair_task), _text(by_id["predict-pair"])


def test_notebook_matches_its_generator():
    """quickstart.ipynb is what make_quickstart.py writes, and it is saved without outputs."""
    saved = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(saved)
    built = _generator().build()
    assert [(c.id, c.cell_type, c.source) for c in saved.cells] == [
        (c.id, c.cell_type, c.source) for c in built.cells
    ], "notebook is stale: run `python notebooks/make_quickstart.py`"
    for cell in saved.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} has outputs"
    _parameters_index(saved)


def test_quickstart_runs(tmp_path, venv_kernel):
    """Execute the notebook as a user would, with tiny parameters.

    With ../shared/data present it runs twice, at the same time in two kernels (tracing is
    single-threaded, so this nearly halves the wall time): once on the real data and once forced
    onto the bundled demo corpus. Without it (a user's clone) the notebook falls back to the demo
    corpus by itself, and one run covers it.
    """
    modes = {"demo-corpus": (False, DEMO_TASKS)}
    if HAS_SHARED_DATA:
        modes["shared-data"] = (True, REAL_TASKS)
    runs = {}
    for mode, (use_shared_data, tasks) in modes.items():
        out_dir = tmp_path / mode
        nb, client = _client(venv_kernel, out_dir, use_shared_data)
        runs[mode] = (nb, client, out_dir, tasks)

    async def execute_all():
        return await asyncio.gather(*(client.async_execute() for _, client, _, _ in runs.values()),
                                    return_exceptions=True)

    results = asyncio.run(execute_all())
    for mode, result in zip(runs, results):
        if isinstance(result, BaseException):
            pytest.fail(f"notebook failed ({mode}):\n{result}", pytrace=False)
    for nb, _, out_dir, tasks in runs.values():
        _check_run(nb, out_dir, tasks)
