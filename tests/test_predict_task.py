"""`kmtl.evaluation.predict_task`: one trace for batches of every shape, the same answers as Keras'."""

import numpy as np

import kmtl
from kmtl.data import Example
from kmtl.data.pipeline import eval_dataset
from kmtl.evaluation import predict_task
from kmtl.evaluation.predict import shape_free_predict


def test_batches_of_many_lengths_are_traced_once_and_match_predict_on_batch(tiny):
    task = kmtl.tasks.Classification("sentiment", ["negative", "positive"])
    model = kmtl.build_model(tiny, [task, kmtl.tasks.Tagging("entities", kmtl.tasks.bio_labels(["PER"]))],
                             max_length=32)
    texts = ["a", "a fine film", "one two three four five six seven eight", "x y", "long " * 20, "b c d"]
    examples = [Example(text=t) for t in texts]
    got = predict_task(model, task, examples, model.preprocessor, batch_size=2)  # 3 batches, 3 lengths
    runner = model.outputs_model(["sentiment"])
    [fn] = runner.__dict__["_kmtl_predict"].values()
    assert fn.experimental_get_tracing_count() == 1
    want = []
    for x, _ in eval_dataset(task, model.tasks, examples, model.preprocessor, 2):
        x = {k: v for k, v in x.items() if k in runner.input}
        want.extend(np.asarray(runner.predict_on_batch(x)["sentiment"]))
    probabilities = [[p["probabilities"][label] for label in task.labels] for p in got]
    expected = np.exp(want) / np.exp(want).sum(-1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    x = next(iter(eval_dataset(task, model.tasks, examples, model.preprocessor, 2)))[0]
    assert shape_free_predict(runner, {k: v for k, v in x.items() if k in runner.input}) is fn  # cached on the runner
