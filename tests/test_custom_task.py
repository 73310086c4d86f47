"""A task kind of the user's own, written as README "Your own task kind" shows: it trains, is
evaluated, saves to `.keras` and loads, predicts from raw text and exports to a SavedModel."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.data import Example

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in README.md."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


@pytest.fixture(scope="module")
def ordinal_kind():
    namespace = {}
    exec(compile(_readme_block("### Your own task kind"), "README.md", "exec"), namespace)
    return namespace["Ordinal"]


def _examples():
    rng = np.random.default_rng(0)
    good, bad = "great fine lovely superb".split(), "dull awful boring bad".split()
    stars = []
    for i in range(40):
        k = i % 3
        words = list(rng.choice(bad, 2)) * (k == 0) + list(rng.choice(good, 2)) * (k == 2) + ["film"]
        stars.append(Example(text=" ".join(words), label=["1", "2", "3"][k], where=f"stars:{i}"))
    sent = [Example(text=e.text, label="pos" if e.label == "3" else "neg") for e in stars]
    return {"stars": stars, "sent": sent}


def test_a_custom_kind_is_registered_and_built_from_a_config(ordinal_kind):
    assert kmtl.tasks.KINDS["ordinal"] is ordinal_kind
    task = kmtl.tasks.from_config({"kind": "ordinal", "name": "stars", "labels": ["1", "2", "3"]})
    assert isinstance(task, ordinal_kind) and task.primary_metric == "accuracy"


def test_a_custom_kind_trains_saves_loads_and_exports(ordinal_kind, tmp_path):
    from kmtl.serving.predict import predict_lines

    tasks = [ordinal_kind("stars", labels=["1", "2", "3"]), kmtl.tasks.Classification("sent", ["neg", "pos"])]
    model = kmtl.build_model(tiny_encoder(seed=0), tasks, max_length=16)
    data = kmtl.data.mixture(tasks, _examples(), model.preprocessor, batch_size=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=3, steps_per_epoch=10, verbose=0).history
    assert history["stars_loss"][-1] < history["stars_loss"][0]

    report = kmtl.evaluation.evaluate_tasks(model, _examples(), model.preprocessor)
    assert 0.0 <= report["stars"]["accuracy"] <= 1.0 and report["stars"]["kind"] == "ordinal"
    assert "stars" in kmtl.evaluation.format_table(report)

    texts = ["great lovely film", "dull awful film"]
    answers = kmtl.export.decode(model, model.predict(texts, verbose=0), texts)
    assert {a["stars_label"] for a in answers} <= {"1", "2", "3"}

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.tasks[0], ordinal_kind)
    x = model.preprocessor.encode_text(keras.ops.convert_to_tensor(texts))
    np.testing.assert_allclose(loaded(x)["stars"], model(x)["stars"], rtol=1e-6, atol=1e-6)

    path = kmtl.export.saved_model(model, model.preprocessor, tmp_path, "m")
    served = predict_lines(path, texts)
    assert [s["stars_label"] for s in served] == [a["stars_label"] for a in answers]
    np.testing.assert_allclose([s["stars_score"] for s in served], [a["stars_score"] for a in answers], rtol=1e-5)
