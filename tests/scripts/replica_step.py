"""Three training steps on 1 replica and on 2 (MirroredStrategy over two logical CPUs): same update?

Arguments: weighting strategy names (default: static); ``--adamw CLIPNORM`` trains with
`kmtl.training.make_optimizer` (AdamW, clipping at CLIPNORM) instead of plain SGD, and adds
the entry ``keras_clipnorm``: static weighting with Keras' own AdamW clipping each variable's
gradient on each replica (the control that shows the clipping binds and matters).
Run as a script (logical devices must be configured before TensorFlow starts); prints JSON.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kmtl  # noqa: E402
from kmtl.backbone import tiny_encoder  # noqa: E402
from kmtl.data import Example  # noqa: E402


def tasks():
    return [
        kmtl.tasks.Classification("sent", ["neg", "pos"], dropout=0.0),
        kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER"]), dropout=0.0),
        kmtl.tasks.PairRegression("sim", dropout=0.0),
    ]


def examples():
    words = "the a good bad film john paris story".split()
    rng = np.random.default_rng(1)
    sent = [Example(text=" ".join(rng.choice(words, 2 + i % 4)), label=["neg", "pos"][i % 2]) for i in range(16)]
    ner = []
    for i in range(16):
        toks = tuple(rng.choice(words, 2 + i % 5))
        ner.append(Example(tokens=toks, label=tuple("B-PER" if t == "john" else "O" for t in toks)))
    sim = [Example(text=" ".join(rng.choice(words, 3)), text_pair="a film", label=float(i % 5)) for i in range(16)]
    return {"sent": sent, "ner": ner, "sim": sim}


def make_callback(name):
    if name == "static":
        return []
    options = {"dwa": {"window_steps": 1}}.get(name, {})
    return [kmtl.weighting.get_weighting(name, **options)]


def make_optimizer(kind, clipnorm):
    if kind == "keras_clipnorm":  # Keras' AdamW: each replica clips each variable before the all-reduce
        return keras.optimizers.AdamW(learning_rate=1e-2, clipnorm=clipnorm)
    if kind == "adamw":
        return kmtl.training.make_optimizer(1e-2, total_steps=3, warmup_ratio=0.0, clipnorm=clipnorm)
    return keras.optimizers.SGD(learning_rate=0.05)


def train_steps(strategy, init_weights, batches, weighting, optimizer):
    with strategy.scope():
        model = kmtl.build_model(tiny_encoder(seed=0), tasks())
        model.set_weights(init_weights)
        model.compile(optimizer=make_optimizer(*optimizer), loss_weights={"ner": 2.0})
    ds = tf.data.Dataset.from_tensor_slices(batches)  # batches stacked: one element per step
    model.fit(ds, epochs=1, verbose=0, callbacks=make_callback(weighting))
    return [np.array(v) for v in model.trainable_weights], model.loss_weights_now


def first_gradient_norm(init_weights, batch):
    """Global norm of the first step's gradient (before any clipping), on one replica."""
    model = kmtl.build_model(tiny_encoder(seed=0), tasks())
    model.set_weights(init_weights)
    model.compile(optimizer="sgd", loss_weights={"ner": 2.0})
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y, model(x, training=True), sample_weight)
    return float(tf.linalg.global_norm([g for g in tape.gradient(loss, model.trainable_weights) if g is not None]))


def main(args):
    strategies = args.strategies or ["static"]
    assert len(tf.config.list_logical_devices("CPU")) == 2
    encoder = tiny_encoder(seed=0)
    reference = kmtl.build_model(encoder, tasks())
    init = reference.get_weights()
    init_trainable = [np.array(v) for v in reference.trainable_weights]
    pre = encoder.preprocessor(24)
    # joint batches of 12: the two replicas get 6 each, with different task mixes
    stream = iter(kmtl.data.mixture(tasks(), examples(), pre, batch_size=12, seed=5))
    steps = [next(stream) for _ in range(3)]
    width = max(int(b[0]["token_ids"].shape[1]) for b in steps)

    def pad(step):  # pad the token axis (not e.g. a [batch, 1] score) of one step to width
        length = int(step[0]["token_ids"].shape[1])
        return tf.nest.map_structure(
            lambda t: tf.pad(t, [[0, 0], [0, width - length]] + [[0, 0]] * (len(t.shape) - 2))
            if len(t.shape) > 1 and t.shape[1] == length else t, step)

    batches = tf.nest.map_structure(lambda *ts: tf.stack(ts), *[pad(step) for step in steps])
    mirrored = kmtl.training.choose_strategy("mirrored")
    report = {"replicas": mirrored.num_replicas_in_sync,
              "first_gradient_norm": first_gradient_norm(init, tf.nest.map_structure(lambda t: t[0], batches))}
    runs = {name: (name, ("adamw" if args.adamw else "sgd", args.adamw)) for name in strategies}
    if args.adamw:
        runs["keras_clipnorm"] = ("static", ("keras_clipnorm", args.adamw))
    for key, (name, optimizer) in runs.items():
        single, w1 = train_steps(tf.distribute.get_strategy(), init, batches, name, optimizer)
        double, w2 = train_steps(mirrored, init, batches, name, optimizer)
        report[key] = {
            "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(single, double)),
            "max_moved": max(float(np.max(np.abs(a - b))) for a, b in zip(single, init_trainable)),
            "weights_1": w1,
            "weights_2": w2,
        }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("strategies", nargs="*")
    parser.add_argument("--adamw", type=float, metavar="CLIPNORM")
    main(parser.parse_args())
