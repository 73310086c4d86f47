"""Relation examples: one sentence with two marked entities, from JSON Lines or annotated documents.

Every relation example is an `Example` whose ``text`` carries the two entities in one canonical
form, ``<e1>head</e1>`` and ``<e2>tail</e2>`` (SemEval-2010 Task 8's own markers; the head,
``e1``, is the relation's first argument wherever it stands in the sentence), and whose
``label`` is the relation. `kmtl.tasks.Relation` turns the markers into the tokens its head reads.
"""

from __future__ import annotations

import json
import re
from typing import Iterator, List, Literal, Optional, Sequence, Tuple

import numpy as np

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, read_lines, require_examples
from kmtl.errors import ConfigError, DataError
from kmtl.registry import FilePath

HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE = "<e1>", "</e1>", "<e2>", "</e2>"
MARKERS = (HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE)
MARKER_FIX = ("mark each entity once, head as <e1>...</e1> and tail as <e2>...</e2>, "
              "side by side, never one inside the other")


def marker_problem(text: str) -> Optional[str]:
    """What is wrong with the entity markers of ``text``, or ``None`` when there are exactly
    one ``<e1>...</e1>`` and one ``<e2>...</e2>``, each around a non-empty entity, neither
    inside the other.

    Example:
        >>> marker_problem("<e1>Bill</e1> founded <e2>Microsoft</e2>") is None
        True
        >>> marker_problem("<e1>Bill founded <e2>Microsoft</e2></e1>")
        'one entity is inside the other, or they overlap'
    """
    places = {}
    for marker in MARKERS:
        found = [m.start() for m in re.finditer(re.escape(marker), text)]
        if not found:
            return f"the marker {marker} is missing"
        if len(found) > 1:
            return f"the marker {marker} appears {len(found)} times"
        places[marker] = found[0]
    spans = []
    for open_, close in ((HEAD_OPEN, HEAD_CLOSE), (TAIL_OPEN, TAIL_CLOSE)):
        start, end = places[open_], places[close]
        if end < start:
            return f"{close} comes before {open_}"
        if not text[start + len(open_):end].strip():
            return f"the entity between {open_} and {close} is empty"
        spans.append((start, end + len(close)))
    (h_start, h_end), (t_start, t_end) = spans
    if not (h_end <= t_start or t_end <= h_start):
        return "one entity is inside the other, or they overlap"
    return None


def check_marked(where: str, text: str) -> str:
    """``text``, or a `DataError` at ``where`` saying which marker is wrong and how to fix it."""
    problem = marker_problem(text)
    if problem:
        raise DataError(where, f"bad entity markers: {problem}; {MARKER_FIX}")
    return text


def mark_spans(text: str, head: Tuple[int, int], tail: Tuple[int, int]) -> str:
    """``text`` with ``<e1>``/``</e1>`` around ``text[head[0]:head[1]]`` and ``<e2>``/``</e2>``
    around ``tail`` (character offsets, end exclusive; the spans must not overlap).

    Raises:
        ValueError: a span is empty, outside the text, or overlaps the other.

    Example:
        >>> mark_spans("Bill Gates founded Microsoft.", (0, 10), (19, 28))
        '<e1>Bill Gates</e1> founded <e2>Microsoft</e2>.'
    """
    for name, (start, end) in (("head", head), ("tail", tail)):
        if not 0 <= start < end <= len(text):
            raise ValueError(f"the {name} span [{start}, {end}) is outside the text (length {len(text)}) or empty; "
                             "give character offsets, start < end <= length, end exclusive")
    if not (head[1] <= tail[0] or tail[1] <= head[0]):
        raise ValueError(f"the head span {list(head)} and the tail span {list(tail)} overlap; "
                         "a relation needs two separate entities")
    inserts = sorted([(head[0], HEAD_OPEN), (head[1], HEAD_CLOSE), (tail[0], TAIL_OPEN), (tail[1], TAIL_CLOSE)],
                     key=lambda item: (item[0], item[1] not in (HEAD_CLOSE, TAIL_CLOSE)))  # a close before an open
    pieces, last = [], 0
    for offset, marker in inserts:
        pieces += [text[last:offset], marker]
        last = offset
    return "".join(pieces + [text[last:]])


def mark_tokens(tokens: Sequence[str], head: Tuple[int, int], tail: Tuple[int, int]) -> str:
    """The ``tokens`` joined by spaces with the head and tail *token* spans (end exclusive) marked.

    Example:
        >>> mark_tokens(["Bill", "Gates", "founded", "Microsoft", "."], (0, 2), (3, 4))
        '<e1>Bill Gates</e1> founded <e2>Microsoft</e2> .'
    """
    for name, (start, end) in (("head", head), ("tail", tail)):
        if not 0 <= start < end <= len(tokens):
            raise ValueError(f"the {name} token span [{start}, {end}) is outside the {len(tokens)} tokens or "
                             "empty; give token indices, start < end <= number of tokens, end exclusive")
    if not (head[1] <= tail[0] or tail[1] <= head[0]):
        raise ValueError(f"the head span {list(head)} and the tail span {list(tail)} overlap; "
                         "a relation needs two separate entities")
    words = list(tokens)
    for (start, end), (open_, close) in ((head, (HEAD_OPEN, HEAD_CLOSE)), (tail, (TAIL_OPEN, TAIL_CLOSE))):
        words[start] = open_ + words[start]
        words[end - 1] = words[end - 1] + close
    return " ".join(words)


class RelationJsonlSource(Source):
    """Relation examples from JSON Lines: a sentence, its head and tail entity spans, a label.

    Each non-blank line is one object with either ``text`` (a string; spans in *characters*)
    or ``tokens`` (a list of strings, joined by spaces; spans in *tokens*), a head and a tail
    span, and the label. A span is ``[start, end]`` (end exclusive, or inclusive with
    ``end_inclusive``, as in TACRED's ``subj_end``) or ``{"start": s, "end": e}``. The example's
    text marks the head as ``<e1>...</e1>`` and the tail as ``<e2>...</e2>``.

    Args:
        path: the file (UTF-8).
        text: the key of the sentence.
        tokens: the key of the token list (used when a line has no ``text`` key).
        head: the key of the head (first argument) span.
        tail: the key of the tail (second argument) span.
        label: the key of the relation label; ``None`` reads unlabelled examples.
        end_inclusive: whether span ends point at the last character / token.

    Example:
        >>> # rel.jsonl: {"text": "Bill Gates founded Microsoft.", "head": [0, 10], "tail": [19, 28], "label": "founder"}
        >>> RelationJsonlSource("rel.jsonl").read()[0]
        Example(text='<e1>Bill Gates</e1> founded <e2>Microsoft</e2>.', label='founder', where='rel.jsonl:1')
        >>> # {"tokens": ["Bill", "Gates", "founded", "Microsoft"], "head": [0, 2], "tail": [3, 4], ...}
    """

    format = "relation_jsonl"
    fields = {"text": True, "label": ("label",)}
    kinds = ("relation",)

    def __init__(self, path: FilePath, text: str = "text", tokens: str = "tokens", head: str = "head",
                 tail: str = "tail", label: Optional[str] = "label", end_inclusive: bool = False):
        self.path = str(path)
        self.keys = {"text": text, "tokens": tokens, "head": head, "tail": tail}
        self.label = label
        self.end_inclusive = bool(end_inclusive)
        problems = [(name, "must be a non-empty key name") for name, key in self.keys.items()
                    if not isinstance(key, str) or not key]
        if problems:
            raise ConfigError(problems)

    def describe(self) -> str:
        return f"relation_jsonl:{self.path}"

    def read(self) -> List[Example]:
        examples = [self._example(f"{self.path}:{number}", line) for number, line in read_lines(self.path)
                    if line.strip()]
        return require_examples(self.path, examples, 'the file has only blank lines: add one JSON object a line, '
                                '{"text": ..., "head": [start, end], "tail": [start, end], "label": ...}')

    def _example(self, where: str, line: str) -> Example:
        record = _json_object(where, line)
        head, tail = (_span(where, record, self.keys[k], self.end_inclusive) for k in ("head", "tail"))
        if self.keys["text"] in record:
            text = record[self.keys["text"]]
            if not isinstance(text, str) or not text.strip():
                raise DataError(where, f"field {self.keys['text']!r} must be a non-empty string; fill it in")
            mark = mark_spans
        elif self.keys["tokens"] in record:
            text = record[self.keys["tokens"]]
            if not isinstance(text, list) or not text or not all(isinstance(t, str) and t for t in text):
                raise DataError(where, f"field {self.keys['tokens']!r} must be a non-empty list of non-empty strings")
            mark = mark_tokens
        else:
            raise DataError(where, f"no {self.keys['text']!r} (a string) or {self.keys['tokens']!r} (a list of "
                                   f"tokens); fields present: {sorted(record)}; add one or name the key in the source")
        try:
            marked = mark(text, head, tail)
        except ValueError as err:
            raise DataError(where, str(err)) from None
        label = None
        if self.label is not None:
            label = _label(where, record, self.label)
        return Example(text=check_marked(where, marked), label=label, where=where)


class RelationDocumentsSource(Source):
    """Relation examples from documents annotated with entities and relations (joint
    entity/relation datasets such as CoNLL04 and ADE in their common JSON form, as SpERT
    distributes them: Eberts & Ulges, ECAI 2020).

    The file is a JSON array of documents, or JSON Lines with one document a line. A
    document is ``{"tokens": [...], "entities": [{"type", "start", "end"}],
    "relations": [{"type", "head", "tail"}]}``: entity spans are token indices (end
    exclusive), a relation's ``head``/``tail`` are indices into ``entities``. Every ordered
    pair of entities becomes one example (head as ``<e1>``, tail as ``<e2>``), labelled with
    the relation between them, or ``no_relation`` when there is none. An example's ``where`` is
    its document's first line (and, in a JSON array, the document's number).

    Args:
        path: the file (UTF-8).
        no_relation: the label of pairs without a relation (default ``Other``, as SemEval-2010
            names it and as `kmtl.tasks.Relation`'s ``no_relation_label`` expects).
        keep_no_relation: the fraction of no-relation pairs kept (1.0: all). Documents hold
            many more unrelated pairs than relations; a fraction below 1 draws that share of
            them (rounded), without replacement, with ``seed``; the examples keep file order.
        seed: the seed of that draw: the same seed keeps the same pairs.
        overlapping: what to do with a pair of overlapping (nested) entities, which markers
            cannot show: ``error`` (a `DataError`) or ``skip`` (left out, also when related).

    Example:
        >>> # conll04_train.json: [{"tokens": ["John", "works", "for", "IBM"],
        >>> #   "entities": [{"type": "Peop", "start": 0, "end": 1}, {"type": "Org", "start": 3, "end": 4}],
        >>> #   "relations": [{"type": "Work_For", "head": 0, "tail": 1}]}]
        >>> [(e.text, e.label) for e in RelationDocumentsSource("conll04_train.json").read()]
        [('<e1>John</e1> works for <e2>IBM</e2>', 'Work_For'), ('<e2>John</e2> works for <e1>IBM</e1>', 'Other')]
    """

    format = "relation_documents"
    fields = {"text": True, "label": True}
    kinds = ("relation",)

    def __init__(self, path: FilePath, no_relation: str = "Other", keep_no_relation: float = 1.0, seed: int = 0,
                 overlapping: Literal["error", "skip"] = "error"):
        self.path = str(path)
        self.no_relation = no_relation
        self.keep_no_relation = keep_no_relation
        self.seed = seed
        self.overlapping = overlapping
        problems = []
        if not isinstance(no_relation, str) or not no_relation.strip():
            problems.append(("no_relation", "must be a non-empty label, e.g. 'Other'"))
        if isinstance(keep_no_relation, bool) or not isinstance(keep_no_relation, (int, float)) \
                or not 0.0 <= keep_no_relation <= 1.0:
            problems.append(("keep_no_relation", f"must be a fraction between 0 and 1, not {keep_no_relation!r}"))
        if overlapping not in ("error", "skip"):
            problems.append(("overlapping", f"must be 'error' or 'skip', not {overlapping!r}"))
        if problems:
            raise ConfigError(problems)

    def describe(self) -> str:
        return f"relation_documents:{self.path}"

    def read(self) -> List[Example]:
        examples = []
        for where, document in _documents(self.path):
            examples += self._pairs(where, document)
        require_examples(self.path, examples, "no document has two entities: add entities (and relations)")
        negatives = [i for i, ex in enumerate(examples) if ex.label == self.no_relation]
        keep = round(self.keep_no_relation * len(negatives))
        if keep < len(negatives):
            chosen = set(np.random.default_rng(self.seed).choice(negatives, size=keep, replace=False).tolist())
            examples = [ex for i, ex in enumerate(examples) if ex.label != self.no_relation or i in chosen]
        return examples

    def _pairs(self, where: str, document) -> List[Example]:
        if not isinstance(document, dict):
            raise DataError(where, f"a document must be a JSON object, found {type(document).__name__}; "
                                   'write {"tokens": [...], "entities": [...], "relations": [...]}')
        tokens = document.get("tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise DataError(where, "'tokens' must be a non-empty list of non-empty strings")
        entities = [_entity(where, i, e, len(tokens)) for i, e in enumerate(_list(where, document, "entities"))]
        related = {}
        for i, relation in enumerate(_list(where, document, "relations")):
            head, tail, kind = _relation(where, i, relation, len(entities))
            if related.get((head, tail), kind) != kind:
                raise DataError(where, f"entities {head} and {tail} have two relations ({related[(head, tail)]!r} "
                                       f"and {kind!r}); a pair has one label here: keep one of them")
            if kind == self.no_relation:
                raise DataError(where, f"relation {i} is labelled {kind!r}, the no-relation label; rename it or "
                                       "set no_relation to another label")
            related[(head, tail)] = kind
        examples = []
        for h, head in enumerate(entities):
            for t, tail in enumerate(entities):
                if h == t:
                    continue
                label = related.get((h, t), self.no_relation)
                if not (head[1] <= tail[0] or tail[1] <= head[0]):
                    if self.overlapping == "skip":
                        continue
                    raise DataError(where, f"entities {h} {list(head)} and {t} {list(tail)} overlap, so markers "
                                           "cannot show the pair; read with overlapping='skip' to leave such pairs out")
                examples.append(Example(text=check_marked(where, mark_tokens(tokens, head, tail)), label=label,
                                        where=where))
        return examples


def _documents(path: str) -> Iterator[Tuple[str, object]]:
    """``(where, document)`` of a JSON array file (``path:LINE, document N``: arrays are often
    written on one line) or a JSON Lines file (``path:LINE``)."""
    lines = list(read_lines(path))
    text = "\n".join(line for _, line in lines)
    if not text.lstrip().startswith("["):
        for number, line in lines:
            if line.strip():
                yield f"{path}:{number}", _json_value(f"{path}:{number}", line)
        return
    decoder = json.JSONDecoder()
    at, index = text.index("[") + 1, 0
    while True:
        at = _skip_space(text, at)
        if at < len(text) and text[at] == "]":
            break
        index += 1
        where = f"{path}:{_line_at(text, at)}, document {index}"
        try:
            document, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}", f"not valid JSON ({e.msg} at column {e.colno}); "
                                                  "fix the document or the commas between documents") from None
        yield where, document
        at = _skip_space(text, at)
        if at < len(text) and text[at] == ",":
            at += 1
        elif at >= len(text) or text[at] != "]":
            raise DataError(f"{path}:{_line_at(text, at)}",
                            "expected ',' or ']' after a document; the JSON array is cut short or a comma is missing")


def _line_at(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _json_value(where: str, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(where, f"not valid JSON ({e.msg} at column {e.colno}); write one complete JSON object "
                               "on each line") from None


def _json_object(where: str, line: str) -> dict:
    record = _json_value(where, line)
    if not isinstance(record, dict):
        raise DataError(where, f"expected a JSON object, found {type(record).__name__}; write one object a line")
    return record


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _span(where: str, record: dict, key: str, end_inclusive: bool) -> Tuple[int, int]:
    if key not in record:
        raise DataError(where, f"missing span {key!r}; fields present: {sorted(record)}; add it as [start, end]")
    value = record[key]
    if isinstance(value, dict):
        value = [value.get("start"), value.get("end")]
    if not isinstance(value, list) or len(value) != 2 or not all(_int(v) for v in value):
        raise DataError(where, f"span {key!r} must be [start, end] or {{\"start\": s, \"end\": e}} with integer "
                               f"offsets, not {json.dumps(record[key])}")
    return value[0], value[1] + (1 if end_inclusive else 0)


def _label(where: str, record: dict, key: str) -> str:
    if key not in record:
        raise DataError(where, f"missing label {key!r}; fields present: {sorted(record)}; add it, or read without "
                               "labels (label=None)")
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(where, f"label {key!r} must be a non-empty string, not {json.dumps(value)}")
    return value.strip()


def _list(where: str, document: dict, key: str) -> list:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise DataError(where, f"{key!r} must be a list, not {type(value).__name__}")
    return value


def _entity(where: str, index: int, entity, length: int) -> Tuple[int, int]:
    if not isinstance(entity, dict) or not _int(entity.get("start")) or not _int(entity.get("end")):
        raise DataError(where, f"entity {index} must be {{\"type\", \"start\", \"end\"}} with token indices, "
                               f"not {json.dumps(entity)}")
    start, end = entity["start"], entity["end"]
    if not 0 <= start < end <= length:
        raise DataError(where, f"entity {index} spans tokens [{start}, {end}), outside the document's {length} "
                               "tokens or empty; give token indices, end exclusive")
    return start, end


def _relation(where: str, index: int, relation, count: int) -> Tuple[int, int, str]:
    if not isinstance(relation, dict) or not all(_int(relation.get(k)) for k in ("head", "tail")) \
            or not isinstance(relation.get("type"), str) or not relation["type"].strip():
        raise DataError(where, f"relation {index} must be {{\"type\": label, \"head\": entity index, \"tail\": "
                               f"entity index}}, not {json.dumps(relation)}")
    head, tail = relation["head"], relation["tail"]
    for name, value in (("head", head), ("tail", tail)):
        if not 0 <= value < count:
            raise DataError(where, f"relation {index}: {name} {value} is not one of the document's {count} entities "
                                   "(indices from 0)")
    if head == tail:
        raise DataError(where, f"relation {index} links entity {head} to itself; head and tail must differ")
    return head, tail, relation["type"].strip()
