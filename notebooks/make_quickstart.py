"""Write notebooks/quickstart.ipynb (without outputs) from the cells below.

Edit the cells here, then regenerate:

    python notebooks/make_quickstart.py

`tests/test_notebook.py` executes the notebook and checks that it matches this script.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).with_name("quickstart.ipynb")

INTRO = """\
# kmtl quickstart

**kmtl** trains several NLP tasks at once: one shared pretrained BERT encoder, one small head per
task, trained together with plain `model.fit` (Keras 3 on TensorFlow), watched in TensorBoard and
exported as one SavedModel that TF Serving answers from raw text.

This notebook trains three tasks on CPU in a few minutes:

* with the real datasets in `../shared/data` (beside the repository) when they are there:
  **SST-2** sentiment, **CoNLL-2003** named entities and **STS-B** sentence similarity;
* otherwise with the small synthetic corpus bundled with kmtl (`kmtl/demo/corpus`): `sentiment`,
  `paraphrase` and `entities`.

It works whether Jupyter was started in the repository or in `notebooks/`."""

PARAMETERS = """\
BACKBONE = "minilm-l6"   # pretrained MiniLM-L6-H384, shipped offline; "tiny" = random 2-layer BERT
N_TRAIN = 300            # training examples per task (the first N of each file)
N_DEV = 100              # dev examples per task
EPOCHS = 2
MAX_LENGTH = 64          # word pieces per input, [CLS] and [SEP] included
BATCH_SIZE = 16
OUT_DIR = "nb_out"       # TensorBoard logs and the exported model go here
USE_SHARED_DATA = True   # False: use the bundled demo corpus even when ../shared/data exists"""

IMPORTS = """\
import time
from pathlib import Path

import keras
import kmtl
from kmtl.data.sources import ConllSource, TsvSource
from kmtl.tasks import Classification, PairClassification, PairRegression, Tagging"""

DATA_MD = """\
## 1. Data

A *source* reads a file into `kmtl.data.Example` records (`text`, `text_pair` or `tokens`, and a
`label`); a *task* says what to predict from them. Label sets can be given or inferred from the
training data with `task.fit_labels` (here from the whole training file, so that a small slice
cannot miss a tag)."""

DATA = """\
def find_shared_data():
    \"\"\"../shared/data beside the repository, from the repository root or from notebooks/.\"\"\"
    for root in (Path.cwd(), Path.cwd().parent):
        folder = root.parent / "shared" / "data"
        if all((folder / name).is_dir() for name in ("sst2", "conll2003", "stsb")):
            return folder.resolve()
    return None


DATA = find_shared_data() if USE_SHARED_DATA else None
if DATA is not None:  # real data; sst2/test.tsv is the labelled GLUE dev set
    plan = [  # (task, train source, dev source)
        (Classification("sentiment", labels=["0", "1"]),
         TsvSource(DATA / "sst2/train.tsv", text="sentence", label="label"),
         TsvSource(DATA / "sst2/test.tsv", text="sentence", label="label")),
        (Tagging("entities"),
         ConllSource(DATA / "conll2003/train.txt"),
         ConllSource(DATA / "conll2003/test.txt")),
        (PairRegression("similarity"),
         TsvSource(DATA / "stsb/train.tsv", text="sentence1", text_pair="sentence2", label="score"),
         TsvSource(DATA / "stsb/dev.tsv", text="sentence1", text_pair="sentence2", label="score")),
    ]
else:  # the synthetic corpus that ships with kmtl
    from kmtl.demo import DEMO_CONFIG

    DATA = DEMO_CONFIG.parent / "corpus"
    plan = [
        (Classification("sentiment"),
         TsvSource(DATA / "sentiment/train.tsv", text="sentence", label="label"),
         TsvSource(DATA / "sentiment/dev.tsv", text="sentence", label="label")),
        (PairClassification("paraphrase"),
         TsvSource(DATA / "paraphrase/train.tsv", text="sentence1", text_pair="sentence2", label="label"),
         TsvSource(DATA / "paraphrase/dev.tsv", text="sentence1", text_pair="sentence2", label="label")),
        (Tagging("entities"),
         ConllSource(DATA / "entities/train.conll"),
         ConllSource(DATA / "entities/dev.conll")),
    ]

print("data:", DATA)
tasks, train_examples, dev_examples = [], {}, {}
for task, train_source, dev_source in plan:
    examples = train_source.read()
    task.fit_labels(examples)  # infers the label set when none was given
    tasks.append(task)
    train_examples[task.name] = examples[:N_TRAIN]
    dev_examples[task.name] = dev_source.read()[:N_DEV]
    print(f"  {task.name:<10} {task.kind:<20} train={len(train_examples[task.name]):<4} "
          f"dev={len(dev_examples[task.name]):<4} labels={task.labels}")"""

MODEL_MD = """\
## 2. Model

`load_backbone` gives the shared encoder and its tokenizer; `build_model` puts one named head per
task on it (a functional `keras.Model` with one output per task). The preprocessor tokenizes
inside `tf.data` here and inside the exported model later, so training and serving agree."""

MODEL = """\
encoder = kmtl.load_backbone(BACKBONE)
model = kmtl.build_model(encoder, tasks)
pre = encoder.preprocessor(MAX_LENGTH)
print(f"{BACKBONE}: {model.count_params():,} parameters, heads: {', '.join(t.name for t in tasks)}")"""

TRAIN_MD = """\
## 3. Train with `model.fit`

`mixture` draws training examples from all tasks (temperature sampling: smaller tasks are seen a
bit more often than their size says). `validation_dataset` holds every dev example once, so the
`val_<task>_...` figures are exact per-task numbers. Each task's loss is averaged over the
examples it owns, and the total is `sum(loss_weight[task] * loss[task])`: `compile` sets the
weights, and a weighting callback keeps them (here fixed: `StaticWeighting`; `LinearWeighting`
schedules them) and logs them to TensorBoard."""

TRAIN = """\
train = kmtl.data.mixture(tasks, train_examples, pre, batch_size=BATCH_SIZE,
                          sampling="temperature", temperature=2.0)
val = kmtl.data.validation_dataset(tasks, dev_examples, pre)

steps = kmtl.data.default_steps_per_epoch([len(x) for x in train_examples.values()], BATCH_SIZE)
loss_weights = {task.name: 1.0 for task in tasks}  # e.g. set one to 0.5 to favour the others
# model=model: the heads train at 1e-3 (kmtl's default), the encoder at 1e-4
model.compile(optimizer=kmtl.training.make_optimizer(1e-4, total_steps=steps * EPOCHS, warmup_ratio=0.1, model=model),
              loss_weights=loss_weights)

start = time.perf_counter()
history = model.fit(train, validation_data=val, epochs=EPOCHS, callbacks=[
    kmtl.callbacks.StaticWeighting(loss_weights),  # before TensorBoard, so the weights get logged
    kmtl.callbacks.TaskTensorBoard(OUT_DIR + "/logs"),  # one TensorBoard section per task
])
print(f"trained in {time.perf_counter() - start:.0f} s")"""

CURVES_MD = """\
## 4. Learning curves

`history.history` holds one value per epoch for every log: `<task>_loss`, each task's metrics,
and the same on the dev data as `val_...` (`loss` and `val_loss` both sum the weighted task
losses of mixed batches, so they compare). The dev figures as a table, then
`kmtl.plots.plot_curves`: one row per task, train solid, dev dashed."""

CURVES = """\
from IPython.display import Image
from kmtl.plots import curves_from_history, plot_curves

val_logs = {key: values for key, values in history.history.items() if key.startswith("val_")}
epochs = range(1, len(history.epoch) + 1)
width = max(len(key) for key in val_logs)
print(f"{'epoch':<{width}}" + "".join(f"{e:>10}" for e in epochs))
for key, values in sorted(val_logs.items()):
    print(f"{key:<{width}}" + "".join(f"{v:>10.4f}" for v in values))

figure = plot_curves(curves_from_history(history.history, [t.name for t in tasks]), OUT_DIR + "/curves.png")
Image(str(figure))"""

EVAL_MD = """\
## 5. Evaluate

`evaluate_tasks` decodes the model's predictions and scores each task with its own dev metrics:
accuracy and macro-F1 for classification, entity-level F1 (seqeval) for tagging,
Pearson/Spearman for regression."""

EVAL = """\
report = kmtl.evaluation.evaluate_tasks(model, dev_examples, pre)
print(kmtl.evaluation.format_table(report))"""

EXPORT_MD = """\
## 6. Export and serve

`export_saved_model` writes `<base>/<name>/<version>/`, the layout TF Serving watches (each export
gets the next free version). The SavedModel takes raw strings: the tokenizer is inside the graph.
`serving_default` answers every single-text task; each sentence-pair task has its own signature
named after it, taking `text` and `text_pair`."""

EXPORT = """\
path = kmtl.export.export_saved_model(model, pre, OUT_DIR + "/saved_models", "quickstart")
print("exported:", path)"""

PREDICT = """\
from kmtl.serving.predict import predict_lines

rows = predict_lines(path, ["a gripping, beautifully acted film", "Angela Merkel visited Paris on Monday ."])
for row in rows:
    print(row.pop("text"))
    for key, value in row.items():
        print(f"    {key}: {value}")"""

PAIR = """\
import tensorflow as tf
from kmtl.serving.predict import load_export

pair_task = next(t.name for t in tasks if t.input_fields == ("text", "text_pair"))
serve_pair = load_export(path).signatures[pair_task]
outputs = serve_pair(text=tf.constant(["A man is playing a guitar."]),
                     text_pair=tf.constant(["A man plays the guitar."]))
print(pair_task, {key: value.numpy().tolist() for key, value in outputs.items()})"""

NEXT_MD = """\
## Next steps

* **TensorBoard**: `tensorboard --logdir nb_out/logs` (run it from the folder Jupyter started
  in) shows the per-task losses, metrics and loss weights.
* **TF Serving**: serve the export folder, e.g.
  ```sh
  docker run -p 8501:8501 -v "$PWD/nb_out/saved_models/quickstart:/models/quickstart" \\
      -e MODEL_NAME=quickstart tensorflow/serving
  curl -d '{"inputs": {"text": ["a gripping film"]}}' localhost:8501/v1/models/quickstart:predict
  ```
  The model server needs the TensorFlow Text ops the tokenizer uses.
* **Command line**: `kmtl predict nb_out/saved_models/quickstart "what a film"`; `kmtl demo` and
  `kmtl train config.yaml` run the same steps from a YAML config."""


def build() -> nbformat.NotebookNode:
    """The notebook, without outputs; cell ids are fixed so that regenerating gives the same file."""
    cells = [
        ("intro", new_markdown_cell(INTRO)),
        ("parameters", new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]})),
        ("imports", new_code_cell(IMPORTS)),
        ("data-md", new_markdown_cell(DATA_MD)),
        ("data", new_code_cell(DATA)),
        ("model-md", new_markdown_cell(MODEL_MD)),
        ("model", new_code_cell(MODEL)),
        ("train-md", new_markdown_cell(TRAIN_MD)),
        ("train", new_code_cell(TRAIN)),
        ("curves-md", new_markdown_cell(CURVES_MD)),
        ("curves", new_code_cell(CURVES)),
        ("evaluate-md", new_markdown_cell(EVAL_MD)),
        ("evaluate", new_code_cell(EVAL)),
        ("export-md", new_markdown_cell(EXPORT_MD)),
        ("export", new_code_cell(EXPORT)),
        ("predict", new_code_cell(PREDICT)),
        ("predict-pair", new_code_cell(PAIR)),
        ("next-md", new_markdown_cell(NEXT_MD)),
    ]
    for cell_id, cell in cells:
        cell.id = cell_id
    nb = new_notebook(cells=[cell for _, cell in cells])
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


def main() -> None:
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
