"""The task-relation regulariser with per-task adapters (`kmtl.sharing.Adapters`, ``task_relation``):
in training the top layer runs every task's adapters and the penalty pulls related tasks' adapters
together; each example's output and inference are those of plain adapters."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kmtl
from kmtl.backbone import tiny_encoder
from kmtl.config import load_config
from kmtl.data.example import Example
from kmtl.errors import ConfigError
from kmtl.sharing import make_sharing
from kmtl.sharing.adapters import AdaptedTransformerLayer
from kmtl.training.affinity import probe_batches


def _tasks():
    return [kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
            kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0)]


def _examples():
    return {"sent": [Example(text=t, label=l) for t, l in [("a good film", "pos"), ("a bad film", "neg")] * 2],
            "ner": [Example(tokens=("john", "saw", "paris"), label=("B-PER", "O", "O"))] * 4}


def _adapted(model):
    return [layer for layer in model.layers if isinstance(layer, AdaptedTransformerLayer)]


def _model(**options):
    model = kmtl.build_model(tiny_encoder(seed=0), _tasks(), max_length=16, sharing="adapters", adapter_size=4,
                             **options)
    rng = np.random.default_rng(0)  # fresh adapters are the identity: every task's features would be equal
    for layer in _adapted(model):
        for v in layer.trainable_weights:
            if "adapter" in v.path:
                v.assign(rng.normal(0, 0.1, v.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def pair():
    plain, related = _model(), _model(task_relation="learned", relation_weight=10.0)
    return plain, related, probe_batches(related.tasks, _examples(), related.preprocessor, size=4)


def test_only_the_top_layer_relates_and_outputs_are_plain_adapters(pair):
    plain, related, probe = pair
    layers = _adapted(related)
    assert [layer.relation is not None for layer in layers] == [False] * (len(layers) - 1) + [True]
    sent, ner = probe["sent"][0], probe["ner"][0]
    length = min(sent["token_ids"].shape[1], ner["token_ids"].shape[1])
    x = {k: tf.concat([sent[k][:, :length], ner[k][:, :length]] if len(sent[k].shape) == 2 else [sent[k], ner[k]], 0)
         for k in sent}  # a joint batch: both tasks' rows
    for training in (False, True):  # the relation's pass over every task's adapters picks each row's own
        a, b = plain(x, training=training), related(x, training=training)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-5)
    related(x, training=True)
    assert float(sum(related.losses)) > 0 and not plain.losses


def test_the_penalty_reaches_the_other_tasks_top_adapters(pair):
    """A batch of `sent` examples: its loss reaches only `sent`'s adapters; the relation's penalty
    also reaches `ner`'s top adapters (pulled towards `sent`'s), never its lower ones."""
    _, related, probe = pair
    x = probe["sent"][0]
    top, lower = _adapted(related)[-1], _adapted(related)[0]
    variables = [top.feedforward_adapter.up_kernel, lower.feedforward_adapter.up_kernel]
    with tf.GradientTape() as tape:
        related(x, training=True)
        penalty = tf.add_n(related.losses)
    top_grad, lower_grad = tape.gradient(penalty, variables)
    assert np.abs(top_grad.numpy()[1]).sum() > 0  # ner's slice of the top layer
    assert lower_grad is None or not np.any(lower_grad.numpy()[1])


def test_fit_logs_r_and_the_keras_file_keeps_it(pair, tmp_path):
    _, related, _ = pair
    data = kmtl.data.mixture(related.tasks, _examples(), related.preprocessor, batch_size=4, granularity="joint",
                             steps_per_epoch=2)
    related.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = related.fit(data, epochs=1, verbose=0).history
    assert history["sent_relation_ner"] == history["ner_relation_sent"] == [0.5]  # two tasks: R is 1/2 each way
    path = tmp_path / "m.keras"
    related.save(path)
    loaded = keras.saving.load_model(path)
    top = _adapted(loaded)[-1]
    assert top.relation is not None and top.relation.task_names == ["sent", "ner"]
    np.testing.assert_allclose(top.relation.distance.numpy(), _adapted(related)[-1].relation.distance.numpy())
    assert not np.allclose(top.relation.distance.numpy(), 0.0)  # the running distances were saved, not rebuilt


def test_yaml_reads_the_options_and_errors_name_them(tmp_path):
    def config(sharing):
        path = tmp_path / "c.yaml"
        path.write_text(f"""
name: r
backbone: tiny
tasks:
  - {{name: a, kind: classification, labels: [x, y], train: {{format: tsv, path: t.tsv, text: s, label: l}}}}
  - {{name: b, kind: classification, labels: [x, y], train: {{format: tsv, path: t.tsv, text: s, label: l}}}}
sharing: {sharing}
""")
        (tmp_path / "t.tsv").write_text("s\tl\nhello\tx\n")
        return load_config(path)

    options = config("{mode: adapters, task_relation: given, relation_matrix: {a: {b: 1.0}}}").sharing.options()
    assert options["task_relation"] == "given" and options["relation_matrix"] == {"a": {"b": 1.0}}
    with pytest.raises(ValueError, match="relation_matrix is only read with task_relation: given"):
        make_sharing("adapters", relation_matrix=[[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="unknown argument 'relation': sharing options are"):  # not dropped silently
        kmtl.build_model(tiny_encoder(seed=0), _tasks(), sharing="adapters", relation="learned")
    with pytest.raises(ValueError, match="it needs at least two tasks"):
        kmtl.build_model(tiny_encoder(seed=0), _tasks()[:1], sharing="adapters", task_relation="learned")
    with pytest.raises(ConfigError, match="only used when mode is adapters or soft"):
        config("{mode: lora, task_relation: learned}")
