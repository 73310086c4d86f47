"""Relation classification between two marked entities of a sentence (``kind: relation``)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from pydantic import Field
from sklearn.metrics import f1_score

from kmtl.data.sources.relations import HEAD_CLOSE, HEAD_OPEN, TAIL_CLOSE, TAIL_OPEN, check_marked
from kmtl.data.words import clean_text
from kmtl.tasks.classification import Classification

HEAD_MARKER, TAIL_MARKER = "@", "#"
"""The untyped "entity marker (punct)" of Zhou & Chen (2022): ``@ head @`` and ``# tail #``."""
_DIRECTION = re.compile(r"\(e[12],e[12]\)$")
_LOOKS_LIKE_NO_RELATION = re.compile(r"other|none|no[ _-]?rel(ation)?|n/?a|unrelated", re.IGNORECASE)


def to_marker_text(text) -> tf.Tensor:
    """``[batch]`` texts in kmtl's canonical form (``<e1>head</e1>``, ``<e2>tail</e2>``) → the
    text the encoder reads, ``@ head @`` and ``# tail #``, in TF string ops (the training
    pipeline and the serving graphs run the same code).

    ``@`` and ``#`` already in a marked text become spaces, so the head's start-marker search
    finds the markers (``C# compiler`` → ``C  compiler``). A text without ``<e1>``/``<e2>`` is
    returned unchanged.

    Example:
        >>> to_marker_text(tf.constant(["C# <e1>code</e1> needs a <e2>compiler</e2>."])).numpy()
        array([b'C  @ code @ needs a # compiler #.'], dtype=object)
    """
    text = tf.convert_to_tensor(text, tf.string)
    marked = tf.strings.regex_full_match(text, r"(?s).*</?e[12]>.*")
    out = tf.strings.regex_replace(text, "[" + re.escape(HEAD_MARKER + TAIL_MARKER) + "]", " ")
    for tag, marker in ((HEAD_OPEN, HEAD_MARKER + " "), (HEAD_CLOSE, " " + HEAD_MARKER),
                        (TAIL_OPEN, TAIL_MARKER + " "), (TAIL_CLOSE, " " + TAIL_MARKER)):
        out = tf.strings.regex_replace(out, re.escape(tag), marker)
    return tf.where(marked, out, text)


def insert_markers(text, head_start, head_end, tail_start, tail_end) -> tf.Tensor:
    """``[batch]`` plain texts and the character spans of their two entities (end exclusive,
    counted in Unicode characters) → the canonical marked text, in TF string ops: what a
    serving signature taking spans runs before `to_marker_text`.

    Invalid UTF-8 is replaced first. A span that is empty or outside its text, or two spans
    that overlap, fail the batch with ``InvalidArgumentError`` (the message says why).

    Example:
        >>> insert_markers(tf.constant(["Bill Gates founded Microsoft."]), [0], [10], [19], [28]).numpy()
        array([b'<e1>Bill Gates</e1> founded <e2>Microsoft</e2>.'], dtype=object)
    """
    text = clean_text(tf.convert_to_tensor(text, tf.string))
    hs, he, ts, te = (tf.cast(tf.convert_to_tensor(v), tf.int32) for v in (head_start, head_end, tail_start, tail_end))
    length = tf.strings.length(text, unit="UTF8_CHAR")
    valid = ((0 <= hs) & (hs < he) & (he <= length) & (0 <= ts) & (ts < te) & (te <= length)
             & ((he <= ts) | (te <= hs)))
    check = tf.debugging.Assert(tf.reduce_all(valid), [
        "insert_markers: each entity span needs 0 <= start < end <= the text's length in characters (end "
        "exclusive), and the head and tail spans must not overlap; rows valid:", valid])
    with tf.control_dependencies([check]):
        head_first = hs < ts
        s1, e1 = tf.where(head_first, hs, ts), tf.where(head_first, he, te)
        s2, e2 = tf.where(head_first, ts, hs), tf.where(head_first, te, he)

        def piece(start, end):
            return tf.strings.substr(text, start, end - start, unit="UTF8_CHAR")

        def tag(head, tail):
            return tf.where(head_first, head, tail)

        return tf.strings.join([piece(tf.zeros_like(s1), s1), tag(HEAD_OPEN, TAIL_OPEN), piece(s1, e1),
                                tag(HEAD_CLOSE, TAIL_CLOSE), piece(e1, s2), tag(TAIL_OPEN, HEAD_OPEN), piece(s2, e2),
                                tag(TAIL_CLOSE, HEAD_CLOSE), piece(e2, length)])


@keras.saving.register_keras_serializable(package="kmtl")
class EntityStartPooling(keras.layers.Layer):
    """The token vectors at the head's and the tail's start markers, concatenated (the "entity
    start" representation of Baldini Soares et al., ACL 2019, read at Zhou & Chen's markers).

    Each row's marker is its *first* token equal to the marker id; a row without one (the
    marker cut off by ``max_length``) reads position 0, ``[CLS]``.

    Args:
        head_id: the token id of the head's marker (``@``).
        tail_id: the token id of the tail's marker (``#``).

    Example:
        >>> layer = EntityStartPooling(head_id=62, tail_id=43)
        >>> layer(tf.zeros([2, 5, 8]), tf.constant([[2, 62, 7, 43, 3], [2, 43, 62, 9, 3]])).shape
        TensorShape([2, 16])
    """

    def __init__(self, head_id: int, tail_id: int, **kwargs):
        super().__init__(**kwargs)
        self.head_id, self.tail_id = int(head_id), int(tail_id)

    def positions(self, token_ids):
        """``(head, tail)`` marker positions, int32 ``[B]`` each."""
        ids = tf.cast(token_ids, tf.int32)
        return tuple(tf.argmax(tf.cast(tf.equal(ids, marker), tf.int32), axis=1, output_type=tf.int32)
                     for marker in (self.head_id, self.tail_id))

    def call(self, sequence, token_ids):
        head, tail = self.positions(token_ids)
        return tf.concat([tf.gather(sequence, head, batch_dims=1), tf.gather(sequence, tail, batch_dims=1)], axis=-1)

    def compute_output_shape(self, sequence_shape, token_ids_shape):
        width = None if sequence_shape[-1] is None else 2 * sequence_shape[-1]
        return (sequence_shape[0], width)

    def get_config(self):
        return {**super().get_config(), "head_id": self.head_id, "tail_id": self.tail_id}


def undirected(label: str) -> str:
    """A SemEval-style label without its direction: ``Cause-Effect(e2,e1)`` → ``Cause-Effect``."""
    return _DIRECTION.sub("", label)


def semeval_scores(gold: Sequence[str], predicted: Sequence[str], no_relation: Optional[str] = "Other") -> dict:
    """SemEval-2010 Task 8's official score and its parts (the task's scorer v1.2, "(9+1)-way
    evaluation with directionality taken into account"; Hendrickx et al., SemEval 2010).

    Relations are compared without their ``(e1,e2)``/``(e2,e1)`` suffix, but only a prediction
    with the right direction is correct: for a relation R, precision = correct / predictions of
    R in either direction, recall = correct / gold examples of R. The macro averages run over
    the relations present in ``gold``, without ``no_relation`` (predicting a relation absent from
    ``gold`` costs precision nowhere). Labels without a direction suffix (CoNLL04's
    ``Work_For``) are relations of their own, so the same score is plain macro-F1 over
    relations there.

    Returns:
        ``macro_f1`` (the official score), ``macro_precision``, ``macro_recall``, ``micro_f1``
        (over the same relations) and ``per_relation``: ``{relation: {"precision", "recall",
        "f1", "support"}}``. Macro figures are NaN when ``gold`` holds no relation.

    Example:
        >>> semeval_scores(["A(e1,e2)", "A(e1,e2)", "Other"], ["A(e1,e2)", "A(e2,e1)", "A(e1,e2)"])["macro_f1"]
        0.4
    """
    gold, predicted = [str(g) for g in gold], [str(p) for p in predicted]
    skip = None if no_relation is None else undirected(no_relation)
    relations = sorted({undirected(g) for g in gold} - {skip})
    per, totals = {}, np.zeros(3)
    for relation in relations:
        correct = sum(g == p and undirected(g) == relation for g, p in zip(gold, predicted))
        proposed = sum(undirected(p) == relation for p in predicted)
        support = sum(undirected(g) == relation for g in gold)
        precision = correct / proposed if proposed else 0.0
        recall = correct / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[relation] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        totals += (correct, proposed, support)
    micro_p = totals[0] / totals[1] if totals[1] else 0.0
    micro_r = totals[0] / totals[2] if totals[2] else 0.0

    def mean(key):
        return float(np.mean([p[key] for p in per.values()])) if per else math.nan

    return {"macro_f1": mean("f1"), "macro_precision": mean("precision"), "macro_recall": mean("recall"),
            "micro_f1": float(2 * micro_p * micro_r / (micro_p + micro_r)) if micro_p + micro_r else 0.0,
            "per_relation": per}


@keras.saving.register_keras_serializable(package="kmtl")
class Relation(Classification):
    """Relation classification: which relation holds between two marked entities of a sentence.

    An example's ``text`` marks its entities as ``<e1>head</e1>`` and ``<e2>tail</e2>`` (the
    sources in `kmtl.data.sources` write this form: SemEval-2010 Task 8 files, JSON Lines with
    spans, annotated documents). Before tokenization the markers become the untyped "entity
    marker (punct)" of Zhou & Chen, AACL-IJCNLP 2022 ("An Improved Baseline for Sentence-level
    Relation Extraction"): ``@ head @`` and ``# tail #``, words every BERT vocabulary has, so no
    embedding is added (`to_marker_text`, TF string ops, also in the serving graphs). The head
    concatenates the encoder's vectors at the two *start* markers (Baldini Soares et al., ACL
    2019, "Matching the Blanks": entity start), then dense (ReLU) → dropout → dense logits, as
    Zhou & Chen's classifier. Loss: softmax cross-entropy; distillation as `Classification`.

    The head finds the markers by their token ids, which it reads from the backbone's
    tokenizer when the model is built (`kmtl.build_model` with `kmtl.load_backbone`) and keeps
    in ``marker_ids`` (so a saved model rebuilds without a tokenizer).

    Metrics: training ``<task>_accuracy`` and ``<task>_macro_f1`` (`kmtl.metrics.MacroF1` over
    the directed labels but the no-relation one); dev (`evaluate`): ``macro_f1``, SemEval-2010
    Task 8's official score (`semeval_scores`: directions must be right, relations averaged
    without the no-relation label, a plain macro-F1 over relations for labels without
    directions), with ``macro_precision``, ``macro_recall``, ``micro_f1``, ``accuracy``,
    ``directed_macro_f1`` (the training metric's figure) and ``per_relation`` precision,
    recall, F1 and support.

    Args:
        name: task name.
        labels: relation labels; inferred from the training split when ``None``.
        dropout: dropout rate before the output layer.
        no_relation_label: the label of pairs with no relation, left out of the macro-F1s.
            Default ``Other``, SemEval-2010's name, which `kmtl.data.sources.RelationDocumentsSource`
            also gives unrelated pairs by default; ``None`` when every label is a relation. A label
            set without it but with a look-alike (``no_relation``, ``None``...) is an error that
            names the option to set.
        marker_ids: the token ids of ``@`` and ``#``; found from the tokenizer when ``None``.

    Example:
        >>> task = Relation("relation")                       # labels from the training split
        >>> task.fit_labels(SemevalSource("TRAIN_FILE.TXT").read())
        >>> model = kmtl.build_model(kmtl.load_backbone(), [task])      # reads the ids of "@" and "#"
        >>> texts = ["The <e1>fire</e1> caused <e2>smoke</e2>."]
        >>> kmtl.export.decode(model, model.predict(texts), texts)[0]["relation_label"]
        'Cause-Effect(e1,e2)'
    """

    kind = "relation"
    input_fields = ("text",)
    primary_metric = "macro_f1"
    logged_metrics = ("accuracy", "macro_f1")
    config_keys = {"marker_ids": None}  # found from the tokenizer and saved with the model, not a YAML key

    def __init__(self, name: str, labels: Optional[Sequence[str]] = None, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
                 no_relation_label: Optional[str] = "Other", marker_ids: Optional[Sequence[int]] = None):
        super().__init__(name, labels=labels, dropout=dropout)
        if no_relation_label is not None and (not isinstance(no_relation_label, str) or not no_relation_label.strip()):
            raise ValueError(f"task {name!r}: no_relation_label must be a label such as 'Other', or None")
        if marker_ids is not None and (len(marker_ids) != 2 or not all(isinstance(i, int) for i in marker_ids)):
            raise ValueError(f"task {name!r}: marker_ids must be the two token ids of {HEAD_MARKER!r} and "
                             f"{TAIL_MARKER!r}, not {marker_ids!r}")
        self.no_relation_label = no_relation_label
        self.marker_ids = None if marker_ids is None else [int(i) for i in marker_ids]
        self._check_no_relation()

    # ----------------------------------------------------------------- labels
    def fit_labels(self, examples) -> None:
        super().fit_labels(examples)
        self._check_no_relation()

    def _check_no_relation(self) -> None:
        if self.labels is None or self.no_relation_label is None or self.no_relation_label in self.labels:
            return
        lookalike = [label for label in self.labels if _LOOKS_LIKE_NO_RELATION.fullmatch(label)]
        if lookalike:
            raise ValueError(f"task {self.name!r}: no_relation_label is {self.no_relation_label!r}, which is not "
                             f"a label, but {lookalike[0]!r} is; set no_relation_label: {lookalike[0]} (or None if "
                             "every label is a relation)")

    @property
    def relation_labels(self):
        """The labels counted in the macro-F1s: all but the no-relation label."""
        self._require_labels()
        return [label for label in self.labels if label != self.no_relation_label]

    def check_inputs(self, ex) -> None:
        super().check_inputs(ex)
        check_marked(ex.where, ex.text)

    def model_text(self, text):
        """The encoder's text: the entity markers as Zhou & Chen's punctuation (`to_marker_text`)."""
        return to_marker_text(text)

    def serving_variants(self) -> dict:
        """``<task>_spans(text, head_start, head_end, tail_start, tail_end)``: plain text and
        the character spans of the two entities (end exclusive), marked in the graph by
        `insert_markers`."""
        ints = [tf.TensorSpec([None], tf.int32, name=n) for n in ("head_start", "head_end", "tail_start", "tail_end")]
        sample = {"head_start": [0, 0], "head_end": [10, 4], "tail_start": [21, 7], "tail_end": [26, 16]}
        return {"spans": ([tf.TensorSpec([None], tf.string, name="text"), *ints], insert_markers, sample)}

    def encode_inputs(self, preprocessor, raw: dict, labels=None):
        """As `Classification`, on `model_text` of the batch's texts."""
        return super().encode_inputs(preprocessor, {**raw, "text": self.model_text(raw["text"])}, labels)

    # ------------------------------------------------------------------ model
    def _marker_ids(self, tokenizer):
        if self.marker_ids is not None:
            return self.marker_ids
        if tokenizer is None:
            raise ValueError(
                f"task {self.name!r}: the relation head finds the markers {HEAD_MARKER!r} and {TAIL_MARKER!r} by "
                "their token ids and this model has no tokenizer to read them from; build it with "
                "kmtl.build_model(kmtl.load_backbone(...), tasks), or give Relation(..., marker_ids=[id of '@', "
                "id of '#'])")
        ids = []
        for marker in (HEAD_MARKER, TAIL_MARKER):
            try:
                found = int(tokenizer.token_to_id(marker))
            except (ValueError, KeyError):
                found = None
            if found is None or [int(i) for i in tokenizer(marker)] != [found]:
                raise ValueError(f"task {self.name!r}: the tokenizer's vocabulary has no token {marker!r} of its "
                                 "own, which the relation markers need; use a BERT WordPiece vocabulary")
            ids.append(found)
        self.marker_ids = ids
        return ids

    def build_head(self, features: Dict):
        head_id, tail_id = self._marker_ids(features.get("tokenizer"))
        sequence = features["sequence"]
        pairs = EntityStartPooling(head_id, tail_id, name=f"{self.name}_entity_starts")(
            sequence, features["inputs"]["token_ids"])
        x = keras.layers.Dense(sequence.shape[-1], activation="relu", name=f"{self.name}_hidden")(pairs)
        x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(x)
        return keras.layers.Dense(self.num_outputs, name=self.name)(x)

    def metrics(self) -> list:
        """Accuracy and macro-F1 over the labels but the no-relation one: ``<task>_accuracy``,
        ``<task>_macro_f1``."""
        from kmtl.metrics import MacroF1

        self._require_labels()
        exclude = [self.labels.index(self.no_relation_label)] if self.no_relation_label in self.labels else []
        if len(exclude) == len(self.labels):
            exclude = []
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), MacroF1(self.num_outputs, exclude=exclude)]

    # ---------------------------------------------------------------- outputs
    def evaluate(self, examples, predictions) -> Dict[str, float]:
        gold = [str(ex.label).strip() for ex in examples]
        pred = [p["label"] for p in predictions]
        relations = self.relation_labels or self.labels
        return {
            **semeval_scores(gold, pred, self.no_relation_label),
            "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])),
            "directed_macro_f1": float(f1_score(gold, pred, labels=relations, average="macro", zero_division=0)),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "no_relation_label": self.no_relation_label, "marker_ids": self.marker_ids}
