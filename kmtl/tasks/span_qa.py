"""Extractive question answering: the answer is a span of the context (SQuAD)."""

from __future__ import annotations

import collections
import re
import string
from typing import Annotated, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from pydantic import Field

from kmtl.data.pipeline import EXAMPLE, TASK_ID, trim_batch
from kmtl.data.words import char_offsets, clean_text
from kmtl.errors import DataError
from kmtl.tasks.base import Task


# --------------------------------------------------------------------------- SQuAD's score
def normalize_answer(text: str) -> str:
    """SQuAD v1.1's answer normalisation (its official ``evaluate-v1.1.py``): lower case, no
    punctuation, no articles (a, an, the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal (SQuAD's ``exact_match_score``)."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 between two answers (bags of normalised words).

    Example:
        >>> round(token_f1("the Eiffel tower", "Eiffel tower in Paris"), 3)
        0.667
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict:
    """SQuAD v1.1's ``exact_match`` and ``f1``: per question the best over its gold answers, then
    the mean over questions (Rajpurkar et al., EMNLP 2016; the official script), as fractions like
    every kmtl metric (the official script prints them ×100).

    Example:
        >>> squad_scores([["Denver Broncos", "The Denver Broncos"]], ["the Denver Broncos"])
        {'exact_match': 1.0, 'f1': 1.0}
    """
    if not golds:
        return {"exact_match": float("nan"), "f1": float("nan")}
    em = [max(exact_match(p, g) for g in gold) for gold, p in zip(golds, predictions)]
    f1 = [max(token_f1(p, g) for g in gold) for gold, p in zip(golds, predictions)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


# --------------------------------------------------------------------------- windows (TF ops)
def tokenizer_words(tokenizer, text):
    """``[B]`` strings → the words a keras-hub WordPiece tokenizer splits them into, with their byte
    offsets: ``(words, byte_starts, byte_ends)``, ragged ``[B, (words)]``.

    The split is the tokenizer's own (keras-hub's ``pretokenize``: whitespace and control
    characters dropped, each punctuation mark, and each CJK character when ``split_on_cjk``, a
    word), run with TF Text's ``regex_split_with_offsets`` on the original text, so offsets index
    the text as given (the tokenizer lower-cases and strips accents inside a word, which moves no
    boundary). ``14-story`` is three words, as the tokenizer sees it.
    """
    # keras-hub's patterns (private module: the tokenizer's own split, kept in step with it)
    from keras_hub.src.tokenizers import word_piece_tokenizer as wordpiece

    if getattr(tokenizer, "split_on_cjk", True):
        split, keep = wordpiece.WHITESPACE_PUNCTUATION_AND_CJK_REGEX, wordpiece.PUNCTUATION_AND_CJK_REGEX
    else:
        split, keep = wordpiece.WHITESPACE_AND_PUNCTUATION_REGEX, wordpiece.PUNCTUATION_REGEX
    return tf_text.regex_split_with_offsets(text, split, keep)


def context_pieces(preprocessor, context):
    """``[B]`` contexts → word pieces with the byte offsets of the word each comes from.

    The context is split into the tokenizer's words (`tokenizer_words`) and each word into
    pieces, so the pieces equal the tokenizer's for the whole text; a word without pieces
    becomes ``[UNK]``.

    Returns:
        ``(ids, byte_start, byte_end)``, ragged ``[B, (pieces)]`` int32: the pieces, and the
        byte offsets of their word in the context (end exclusive).
    """
    words, starts, ends = tokenizer_words(preprocessor.tokenizer, context)
    pieces = preprocessor.word_pieces(words.flat_values)
    counts, flat = pieces.row_lengths(), pieces.flat_values
    word_rows = words.row_lengths()
    per_example = tf.reduce_sum(tf.RaggedTensor.from_row_lengths(counts, word_rows), axis=1)  # pieces per example

    def regroup(values):
        return tf.RaggedTensor.from_row_lengths(tf.cast(values, tf.int32), per_example)

    return (regroup(flat), regroup(tf.repeat(starts.flat_values, counts)),
            regroup(tf.repeat(ends.flat_values, counts)))


def encode_windows(preprocessor, question, context, answers=None, max_query_length: int = 64,
                   doc_stride: Optional[int] = None) -> dict:
    """Questions and contexts → ``[CLS] question [SEP] context window [SEP]`` rows, in TF ops.

    A context longer than a row holds is cut into overlapping windows, as BERT's SQuAD recipe
    does (Devlin et al., NAACL 2019; ``run_squad.py``'s ``doc_stride``): window ``k`` starts
    ``k · stride`` pieces into the context, and windows follow each other until one reaches the
    context's end. The question keeps its first ``max_query_length`` pieces (never more than
    half a row).

    Args:
        preprocessor: a `kmtl.data.Preprocessor` (tokenizer, ``max_length``).
        question: ``[B]`` strings.
        context: ``[B]`` strings.
        answers: ``None``, or ``[B, 2]`` int byte offsets (start, end exclusive) of each answer in
            its context (``-1`` for none).
        max_query_length: question pieces kept.
        doc_stride: pieces between window starts (an int or a scalar tensor); ``None``: half the
            row's context budget (and never more than the budget: windows always overlap or touch).

    Returns:
        ``token_ids``, ``segment_ids``, ``padding_mask`` ``[R, max_length]`` (``R`` ≥ ``B``
        rows, every example at least one, in example order); ``example`` ``[R]`` each row's
        example; ``byte_start`` / ``byte_end`` ``[R, max_length]`` each position's word's byte
        offsets in the context (``-1`` outside the context); with ``answers``, ``positions``
        ``[R, 2]``: the answer's first and last piece in the row, ``(0, 0)`` (``[CLS]``) when
        the row does not hold the whole answer.
    """
    length = preprocessor.max_length
    q = tf.cast(preprocessor.tokenizer(question), tf.int32)
    if not isinstance(q, tf.RaggedTensor):
        q = tf.RaggedTensor.from_tensor(q)
    q = q[:, :min(int(max_query_length), (length - 3) // 2)]
    ids, b_start, b_end = context_pieces(preprocessor, context)
    q_len = tf.cast(q.row_lengths(), tf.int32)
    c_len = tf.cast(ids.row_lengths(), tf.int32)
    budget = length - 3 - q_len  # context pieces a row holds
    step = budget // 2 if doc_stride is None else tf.fill(tf.shape(budget), tf.cast(doc_stride, tf.int32))
    step = tf.maximum(tf.minimum(step, budget), 1)
    windows = 1 + (tf.maximum(c_len - budget, 0) + step - 1) // step
    example = tf.repeat(tf.range(tf.shape(q_len)[0]), windows)
    start = tf.ragged.range(windows).flat_values * tf.gather(step, example)
    size = tf.maximum(tf.minimum(tf.gather(budget, example), tf.gather(c_len, example) - start), 0)

    flat_pos = tf.ragged.range(start, start + size) + tf.cast(tf.gather(ids.row_starts(), example), tf.int32)[:, None]
    window_ids = tf.gather(ids.flat_values, flat_pos)
    rows = tf.shape(example)[0]
    question_rows = tf.gather(q, example)
    cls = tf.fill([rows, 1], preprocessor.cls_id)
    sep = tf.fill([rows, 1], preprocessor.sep_id)
    token_ids = tf.concat([cls, question_rows, sep, window_ids, sep], axis=1)
    first = tf.gather(q_len, example) + 2
    segment = tf.concat([tf.zeros_like(cls), tf.zeros_like(question_rows), tf.zeros_like(sep),
                         tf.ones_like(window_ids), tf.ones_like(sep)], axis=1)
    shape = [None, length]

    def offsets(values):
        none = tf.fill([rows, 1], -1)
        return tf.concat([none, -tf.ones_like(question_rows), none, tf.gather(values.flat_values, flat_pos), none],
                         axis=1).to_tensor(-1, shape=shape)

    out = {"token_ids": token_ids.to_tensor(preprocessor.pad_id, shape=shape),
           "segment_ids": segment.to_tensor(0, shape=shape),
           "padding_mask": tf.sequence_mask(token_ids.row_lengths(), length, dtype=tf.int32),
           EXAMPLE: example, "byte_start": offsets(b_start), "byte_end": offsets(b_end)}
    if answers is not None:
        answers = tf.cast(answers, tf.int32)
        a_start, a_end = answers[:, 0], answers[:, 1]
        # the answer's pieces: from the first whose word ends after its start to the last whose word starts before its end
        first_piece = tf.reduce_sum(tf.cast(b_end <= a_start[:, None], tf.int32), axis=1)
        last_piece = tf.reduce_sum(tf.cast(b_start < a_end[:, None], tf.int32), axis=1) - 1
        s, e = tf.gather(first_piece, example), tf.gather(last_piece, example)
        inside = (tf.gather(a_start, example) >= 0) & (s <= e) & (s >= start) & (e < start + size)
        out["positions"] = tf.stack([tf.where(inside, s - start + first, 0), tf.where(inside, e - start + first, 0)],
                                    axis=1)
    return out


def best_spans(logits, byte_start, byte_end, example, examples, max_answer_length: int = 30):
    """The best answer of each example over its rows, in TF ops (serving and evaluation).

    A span is a start and an end position inside the context with ``start <= end < start +
    max_answer_length``, ranked by ``start_logit + end_logit`` (BERT's ``run_squad.py``, across
    windows as within one). Each example takes its best span over all its rows; its probability
    is ``p(start) · p(end)`` under the softmaxes of its row.

    Args:
        logits: ``[R, T, 2]`` start and end logits.
        byte_start, byte_end: ``[R, >= T]`` the positions' byte offsets (`encode_windows`).
        example: ``[R]`` each row's example.
        examples: ``B``, the number of examples.
        max_answer_length: the longest answer, in pieces.

    Returns:
        ``(byte_start [B], byte_end [B], probability [B])``: ``-1, -1, 0`` for an example with no
        context.
    """
    logits = tf.cast(logits, tf.float32)
    width = tf.shape(logits)[1]
    b_start, b_end = byte_start[:, :width], byte_end[:, :width]
    in_context = b_start >= 0
    ends = tf.range(width)[:, None] + tf.range(int(max_answer_length))[None, :]  # [T, L]
    ok = ends < width
    ends = tf.minimum(ends, width - 1)
    end_scores = tf.gather(logits[..., 1], ends, axis=1)  # [R, T, L]
    valid = ok[None] & in_context[:, :, None] & tf.gather(in_context, ends, axis=1)
    scores = tf.where(valid, logits[..., 0][:, :, None] + end_scores, -np.inf)
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    best = tf.argmax(flat, axis=1, output_type=tf.int32)
    row_score = tf.reduce_max(flat, axis=1)
    start_pos, offset = best // int(max_answer_length), best % int(max_answer_length)
    end_pos = start_pos + offset
    log_p = (tf.gather(tf.nn.log_softmax(logits[..., 0], axis=-1), start_pos, batch_dims=1)
             + tf.gather(tf.nn.log_softmax(logits[..., 1], axis=-1), end_pos, batch_dims=1))
    top = tf.math.unsorted_segment_max(row_score, example, examples)
    rows = tf.range(tf.shape(example)[0])
    candidate = tf.where(row_score >= tf.gather(top, example), rows, tf.shape(example)[0])
    row = tf.math.unsorted_segment_min(candidate, example, examples)
    found = tf.math.is_finite(tf.gather(row_score, tf.minimum(row, tf.shape(example)[0] - 1))) & (row < tf.shape(example)[0])
    row = tf.minimum(row, tf.shape(example)[0] - 1)
    s = tf.gather_nd(b_start, tf.stack([row, tf.gather(start_pos, row)], axis=1))
    e = tf.gather_nd(b_end, tf.stack([row, tf.gather(end_pos, row)], axis=1))
    probability = tf.exp(tf.gather(log_p, row))
    return tf.where(found, s, -1), tf.where(found, e, -1), tf.where(found, probability, 0.0)


# --------------------------------------------------------------------------- training metric
@keras.saving.register_keras_serializable(package="kmtl")
class SpanAccuracy(keras.metrics.Mean):
    """Share of rows whose most likely start and end positions are both the gold ones (a
    window-level exact match on pieces; SQuAD's EM/F1 come from `SpanQA.evaluate`).

    Example:
        >>> m = SpanAccuracy()
        >>> logits = tf.transpose(tf.one_hot([[1, 2], [1, 1]], 4), [0, 2, 1])  # [B=2, T=4, 2]: spans (1, 2), (1, 1)
        >>> m.update_state([[1, 2], [1, 2]], logits)
        >>> float(m.result())
        0.5
    """

    def __init__(self, name="span_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        predicted = tf.argmax(y_pred, axis=1, output_type=tf.int32)  # [B, 2]
        match = tf.cast(tf.reduce_all(tf.equal(predicted, y_true), axis=-1), self.dtype)
        return super().update_state(match, sample_weight=sample_weight)


# --------------------------------------------------------------------------- the task kind
@keras.saving.register_keras_serializable(package="kmtl")
class SpanQA(Task):
    """Extractive question answering: the answer to a question is a span of its context.

    The recipe of BERT on SQuAD v1.1 (Devlin et al., NAACL 2019; Rajpurkar et al., "SQuAD: 100,000+
    Questions for Machine Comprehension of Text", EMNLP 2016). An example's ``text`` is the question,
    its ``text_pair`` the context and its label the gold answers, ``((character start, text), ...)``
    (`kmtl.data.sources.SquadSource`, ``format: squad``; ``qa_jsonl``). Each example becomes
    ``[CLS] question [SEP] context window [SEP]`` rows (`encode_windows`): a context longer than a
    row is cut into windows ``doc_stride`` pieces apart, so one example may give several rows
    (``one_row_per_example = False``). Training reads the first gold answer: its start and end
    piece in each window that holds it whole, ``[CLS]`` (position 0) in the others, as BERT's
    ``run_squad.py``.

    Answers map between characters and word pieces through the tokenizer's own word split
    (`tokenizer_words`, `context_pieces`): the offsets of the word each piece comes from, not a
    string search. An answer that starts or ends inside a word is widened to the whole word for
    training, and answers are whole words (``"1990s"`` where the gold is ``"1990"``; none of the
    first 300 SQuAD training answers).

    Head: a dense layer with two outputs on every position (start and end logits, ``[B, T, 2]``);
    loss: the mean of the start and end softmax cross-entropies over the row's positions.
    Decoding (`best_spans`, TF ops shared by evaluation and serving): the span ``start <= end <
    start + max_answer_length`` inside the context with the largest ``log p(start) + log p(end)``,
    over all the example's windows.

    Metrics: training ``<task>_span_accuracy`` (rows whose start and end are both right);
    dev (`evaluate`): SQuAD v1.1's ``exact_match`` and ``f1`` as fractions (`squad_scores`: max
    over the gold answers, the official answer normalisation; papers print them ×100).

    Serving: a signature ``<task>(question, context)`` returning ``<task>_answer`` (string),
    ``<task>_start`` / ``<task>_end`` (character offsets into the context, end exclusive; -1 when
    the context is empty) and ``<task>_score`` (the span's probability in its window); the
    ``ids`` signature and ONNX give the raw ``[B, T, 2]`` logits.

    Distillation (`kmtl.distill`): the student learns ``λ·gold + (1-λ)·teacher`` start and end
    distributions per window, so the teacher must cut the contexts into the same windows (same
    tokenizer, ``max_length`` and options: a baseline of the same config is).

    Args:
        name: task name (Keras output name).
        labels: must be ``None`` (answers are spans, not labels).
        dropout: dropout on the token vectors before the head (BERT: 0.1).
        max_query_length: question pieces kept (BERT: 64); never more than half a row.
        doc_stride: pieces between the starts of a long context's windows (BERT: 128 with
            ``max_length`` 384); default: half of a row's room for the context.
        max_answer_length: the longest answer decoded, in pieces (BERT: 30).

    Example:
        >>> qa = SpanQA("squad")
        >>> model = kmtl.build_model(kmtl.load_backbone(), [qa], max_length=384)
        >>> train = kmtl.data.mixture(model.tasks, {"squad": SquadSource("train-v1.1.json").read()},
        ...                           model.preprocessor)
        >>> qa.answer(model, ["Who wrote it?"], ["It was written by Ada Lovelace in 1843."])[0]["answer"]
    """

    kind = "span_qa"
    input_fields = ("text", "text_pair")
    label_field = "answers"  # only QA sources give answers: a tsv cannot feed a span_qa task
    primary_metric = "f1"
    raw_output = "start_end_logits"  # [B, T, 2]: position t's start logit, then its end logit
    logged_metrics = ("span_accuracy",)
    has_labels = False
    one_row_per_example = False
    serving_inputs = ("question", "context")

    def __init__(self, name: str, labels: Optional[Sequence[str]] = None,
                 dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
                 max_query_length: Annotated[int, Field(ge=1)] = 64,
                 doc_stride: Annotated[Optional[int], Field(ge=1)] = None,
                 max_answer_length: Annotated[int, Field(ge=1)] = 30):
        if labels is not None:
            raise ValueError(f"task {name!r}: span_qa tasks read answers, not labels; remove labels")
        for key, value in (("max_query_length", max_query_length), ("max_answer_length", max_answer_length),
                           ("doc_stride", 1 if doc_stride is None else doc_stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"task {name!r}: {key} must be a whole number of at least 1, got {value!r}")
        super().__init__(name, None, dropout)
        self.max_query_length, self.doc_stride, self.max_answer_length = max_query_length, doc_stride, max_answer_length

    @property
    def num_outputs(self) -> int:
        """Two: the start and the end logit of every position."""
        return 2

    # ----------------------------------------------------------------- labels
    def check_inputs(self, ex) -> None:
        super().check_inputs(ex)
        for start, text in ex.label or ():
            if ex.text_pair[start:start + len(text)] != text:
                raise DataError(ex.where, f"the answer {text!r} is not at character {start} of the context "
                                          f"(it has {ex.text_pair[start:start + len(text)]!r} there); fix answer_start")

    def encode_labels(self, examples) -> np.ndarray:
        """``[N, 2]`` byte offsets (start, end exclusive) of each example's first gold answer."""
        rows = []
        for ex in examples:
            if not ex.label:
                raise DataError(ex.where, f"task {self.name!r} trains on answered questions; this one has no "
                                          "answer (remove it from the training split)")
            start, text = ex.label[0]
            before = len(ex.text_pair[:start].encode("utf-8"))
            rows.append((before, before + len(text.encode("utf-8"))))
        return np.array(rows, dtype=np.int32).reshape(-1, 2)

    def label_spec(self, length):
        return [2], "int32", []

    def placeholder_label(self, y_pred):
        return keras.ops.zeros((keras.ops.shape(y_pred)[0], 2), dtype="int32")

    # ------------------------------------------------------------- tf.data
    def encode_inputs(self, preprocessor, raw: dict, labels=None):
        """`encode_windows` of the questions (``text``) and contexts (``text_pair``): several
        rows per long context; ``aux`` holds each row's example and byte offsets."""
        enc = encode_windows(preprocessor, raw["text"], raw["text_pair"], labels, self.max_query_length,
                             self.doc_stride)
        x = {name: enc[name] for name in ("token_ids", "segment_ids", "padding_mask")}
        aux = {name: enc[name] for name in (EXAMPLE, "byte_start", "byte_end")}
        if labels is None:
            return x, None, None, aux
        return x, enc["positions"], tf.ones([tf.shape(enc["positions"])[0]], tf.float32), aux

    # ------------------------------------------------------------------ model
    def build_head(self, features: Dict):
        x = features["sequence"]
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name=f"{self.name}_dropout")(x)
        return keras.layers.Dense(2, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                                  name=self.name)(x)

    def per_example_loss(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        start = keras.losses.sparse_categorical_crossentropy(y_true[:, 0], y_pred[..., 0], from_logits=True)
        end = keras.losses.sparse_categorical_crossentropy(y_true[:, 1], y_pred[..., 1], from_logits=True)
        return (start + end) / 2.0

    def metrics(self) -> list:
        """``<task>_span_accuracy`` (`SpanAccuracy`)."""
        return [SpanAccuracy()]

    # ------------------------------------------------------------------ serving
    def serve(self, run, preprocessor, question, context) -> dict:
        """The ``<task>(question, context)`` signature's outputs, in TF ops: windows, the head's
        logits (``run(x)``) and the best span of each example (`best_spans`)."""
        context = clean_text(context)
        enc = encode_windows(preprocessor, clean_text(question), context, None, self.max_query_length, self.doc_stride)
        x = {name: enc[name] for name in ("token_ids", "segment_ids", "padding_mask")}
        logits = run(x)
        b_start, b_end, probability = best_spans(logits, enc["byte_start"], enc["byte_end"], enc[EXAMPLE],
                                                 tf.shape(question)[0], self.max_answer_length)
        found = b_start >= 0
        text = tf.where(found, tf.strings.substr(context, tf.maximum(b_start, 0), b_end - b_start), "")
        starts = char_offsets(context, tf.maximum(b_start, 0)[:, None])[:, 0]
        ends = char_offsets(context, tf.maximum(b_end, 0)[:, None])[:, 0]
        return {f"{self.name}_answer": text, f"{self.name}_start": tf.where(found, starts, -1),
                f"{self.name}_end": tf.where(found, ends, -1), f"{self.name}_score": probability}

    def serving_sample(self) -> dict:
        """A valid warm-up request of the ``<task>`` signature."""
        return {"question": ["Who wrote it?", "When?"],
                "context": ["It was written by Ada Lovelace in 1843.", "In 1843."]}

    @property
    def position_outputs(self) -> bool:
        return True

    # ----------------------------------------------------------- distillation
    def teacher_targets(self, outputs):
        """A teacher's start and end distributions over a row's positions: softmax over axis 1 of
        ``[R, T, 2]`` logits (the teacher must cut contexts into the student's windows:
        `kmtl.distill.TeacherTable` checks the row counts)."""
        z = np.asarray(outputs, np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)

    def soft_target(self, gold, teacher, lam):
        """``λ·one_hot(gold positions) + (1-λ)·teacher``, ``[B, T, 2]``."""
        teacher = keras.ops.cast(teacher, "float32")
        gold = keras.ops.one_hot(keras.ops.cast(gold, "int32"), keras.ops.shape(teacher)[1])  # [B, 2, T]
        return lam * keras.ops.transpose(gold, (0, 2, 1)) + (1.0 - lam) * teacher

    def soft_loss(self, target, y_pred):
        start = keras.losses.categorical_crossentropy(target[..., 0], y_pred[..., 0], from_logits=True)
        end = keras.losses.categorical_crossentropy(target[..., 1], y_pred[..., 1], from_logits=True)
        return (start + end) / 2.0

    def answer(self, model, questions: Sequence[str], contexts: Sequence[str], batch_size: int = 32) -> List[dict]:
        """Answers from a model in memory, as the served signature gives them: one ``{"answer",
        "start", "end", "score"}`` per question.

        Example:
            >>> qa.answer(model, ["Who wrote it?"], ["It was written by Ada Lovelace."])[0]["answer"]
            'Ada Lovelace'
        """
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions and {len(contexts)} contexts; give one context a question")
        cache = self.__dict__.setdefault("_answer_fns", {})
        if id(model) not in cache:  # one trace per model
            cache.clear()
            runner = model.outputs_model([self.name]) if hasattr(model, "outputs_model") else model  # this head only
            index = [t.name for t in model.tasks].index(self.name)

            def run(x):  # the rows routed as this task's (per-task adapters read task_id; other modes ignore it)
                x = {**trim_batch([self], x), TASK_ID: tf.fill(tf.shape(x["token_ids"])[:1], index)}
                wanted = runner.input if isinstance(getattr(runner, "input", None), dict) else x
                return runner({k: x[k] for k in wanted}, training=False)[self.name]

            cache[id(model)] = tf.function(lambda question, context: self.serve(run, model.preprocessor, question,
                                                                                 context))
        serve = cache[id(model)]

        rows = []
        for i in range(0, len(questions), batch_size):
            out = serve(tf.constant(list(questions[i:i + batch_size])), tf.constant(list(contexts[i:i + batch_size])))
            out = {k[len(self.name) + 1:]: v.numpy() for k, v in out.items()}
            for j in range(len(out["answer"])):
                rows.append({"answer": out["answer"][j].decode("utf-8", "replace"), "start": int(out["start"][j]),
                             "end": int(out["end"][j]), "score": float(out["score"][j])})
        return rows

    # ---------------------------------------------------------------- outputs
    def decode(self, outputs, examples=None, example=None, byte_start=None, byte_end=None, **info) -> list:
        """The best answer of each of ``examples`` from its rows' logits (`best_spans`).

        Returns:
            one ``{"answer", "start", "end", "score"}`` per example (character offsets into the
            context; ``-1`` and ``""`` when it has no context).
        """
        if example is None or byte_start is None or byte_end is None:
            raise ValueError(f"task {self.name!r}: decoding needs each row's example and byte offsets (aux): "
                             "predict with kmtl.evaluation.predict_task")
        starts, ends, probability = (v.numpy() for v in best_spans(
            np.asarray(outputs), np.asarray(byte_start), np.asarray(byte_end), np.asarray(example), len(examples),
            self.max_answer_length))
        results = []
        for ex, s, e, p in zip(examples, starts, ends, probability):
            data = ex.text_pair.encode("utf-8")
            if s < 0:
                results.append({"answer": "", "start": -1, "end": -1, "score": 0.0})
                continue
            start = len(data[:s].decode("utf-8", "replace"))
            answer = data[s:e].decode("utf-8", "replace")
            results.append({"answer": answer, "start": start, "end": start + len(answer), "score": float(p)})
        return results

    def evaluate(self, examples, predictions) -> Dict[str, float]:
        """SQuAD v1.1's ``exact_match`` and ``f1`` (fractions; `squad_scores`) over the examples
        with gold answers, and how many there were (``answered``)."""
        pairs = [([text for _, text in ex.label], p["answer"]) for ex, p in zip(examples, predictions) if ex.label]
        return {**squad_scores([g for g, _ in pairs], [p for _, p in pairs]), "answered": len(pairs)}

    # ------------------------------------------------------------ persistence
    def get_config(self) -> dict:
        return {**super().get_config(), "max_query_length": self.max_query_length, "doc_stride": self.doc_stride,
                "max_answer_length": self.max_answer_length}

    def __repr__(self):
        return f"SpanQA(name={self.name!r}, max_query_length={self.max_query_length}, doc_stride={self.doc_stride})"
