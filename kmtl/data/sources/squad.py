"""Extractive question answering (SQuAD style): a question, a context, answer spans in the context.

Every question is an `Example` with ``text`` the question (stripped), ``text_pair`` the
context *exactly as in the file* (answer offsets index into it, so it is never stripped or
changed) and ``label`` a tuple of ``(answer_start, answer_text)`` pairs — ``answer_start`` a
character offset (a Python ``str`` index) into the context, in file order, duplicates kept —
or ``None`` for an unanswered question (a test file). Task kind ``span_qa`` (`kmtl.tasks.span_qa`)
reads them. Every answer is checked: ``context[start:start + len(text)] == text``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kmtl.data.example import Example
from kmtl.data.sources.base import Source, read_lines, require_examples
from kmtl.errors import ConfigError, DataError
from kmtl.registry import FilePath

Answer = Tuple[int, str]

_SQUAD_LAYOUT = ('{"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ..., "question": ..., '
                 '"answers": [{"answer_start": ..., "text": ...}]}]}]}]}')
_JSONL_LINE = '{"question": ..., "context": ..., "answers": [{"text": ..., "answer_start": ...}]}'


def check_answer(where: str, name: str, context: str, start: Any, text: Any) -> Answer:
    """``(start, text)`` when ``text`` is at character offset ``start`` of ``context``; else a
    `DataError` at ``where`` (``name`` says which answer) with what the context has there and,
    when the text occurs elsewhere, the nearest offset to use.

    Example:
        >>> check_answer("qa.jsonl:1", 'key "answers"[0]', "Paris is in France.", 0, "Paris")
        (0, 'Paris')
        >>> check_answer("qa.jsonl:1", 'key "answers"[0]', "Paris is in France.", 1, "Paris")
        Traceback (most recent call last):
        DataError: qa.jsonl:1: key "answers"[0]: the context has 'aris ' at answer_start 1, not the answer
        'Paris'; the answer occurs at offset 0: set answer_start to 0 (...)
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise DataError(where, f'{name}: "answer_start" must be a non-negative integer (the character offset of '
                               f"the answer in the context), found {json.dumps(start)}; fix the offset")
    if not isinstance(text, str) or not text:
        raise DataError(where, f'{name}: "text" must be a non-empty string (the answer as it appears in the '
                               f"context), found {json.dumps(text)}; fill it in or delete the answer")
    if context[start:start + len(text)] != text:
        raise DataError(where, f"{name}: {_mismatch(context, start, text)}")
    return start, text


def _mismatch(context: str, start: int, text: str) -> str:
    """What the context has at ``start`` instead of ``text``, and the fix."""
    if start >= len(context):
        found = f"answer_start {start} is past the end of the context ({len(context)} characters)"
    else:
        found = f"the context has {context[start:start + len(text)]!r} at answer_start {start}, not the answer {text!r}"
    offsets = _occurrences(context, text)
    if not offsets:
        return (f"{found}; the answer text does not occur in the context: copy it from the context "
                "(same case, spacing and punctuation) or fix the context")
    nearest = min(offsets, key=lambda offset: (abs(offset - start), offset))
    at = f"offset {nearest}" if len(offsets) == 1 else f"{len(offsets)} offsets, the nearest {nearest}"
    return (f"{found}; the answer occurs at {at}: set answer_start to {nearest} "
            "(answer_start counts characters from 0, not bytes or tokens)")


def _occurrences(context: str, text: str) -> List[int]:
    offsets, at = [], context.find(text)
    while at >= 0:
        offsets.append(at)
        at = context.find(text, at + 1)
    return offsets


def _found(value) -> str:
    """``value``'s JSON type for messages, ``an empty string`` for a blank string."""
    return "an empty string" if isinstance(value, str) and not value.strip() else _json_type(value)


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else "a value")


def _load_json(path: str) -> Any:
    """The JSON document of the file at ``path`` (read and checked by `read_lines`)."""
    text = "\n".join(line for _, line in read_lines(path))  # line breaks are whitespace between JSON tokens
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}", f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                                              f"fix the file (a SQuAD v1.1 file is {_SQUAD_LAYOUT})") from None


def _list(where: str, record: dict, key: str, fix: str) -> list:
    value = record.get(key)
    if not isinstance(value, list):
        raise DataError(where, f"no {json.dumps(key)} list (found {_json_type(value)}); {fix}")
    return value


def _object(where: str, value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(where, f"{what} must be a JSON object, found {_json_type(value)}; "
                               f"a SQuAD v1.1 file is {_SQUAD_LAYOUT}")
    return value


class SquadSource(Source):
    """Questions from an official SQuAD v1.1 JSON file (Rajpurkar et al., EMNLP 2016), for ``span_qa``.

    The file is one JSON object::

        {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [
            {"context": "Super Bowl 50 was an American football game ...",
             "qas": [{"id": "56be4db0acb8001400a502ec",
                      "question": "Which NFL team represented the AFC at Super Bowl 50?",
                      "answers": [{"answer_start": 177, "text": "Denver Broncos"}]}]}]}]}

    Each question is one `Example`: ``text`` the question (stripped), ``text_pair`` the
    context exactly as in the file, ``label`` a tuple of ``(answer_start, text)`` pairs in file
    order (dev files give several, duplicates kept), or ``None`` for a question without answers
    (a test file). Every answer must be at its ``answer_start`` (a character offset) in the
    context. ``where`` is ``"<path>: data[i].paragraphs[j].qas[k] (id <id>)"``. Questions need
    their own ids; SQuAD v2's unanswerable questions (``"is_impossible": true``) are refused.

    Args:
        path: the file (UTF-8), e.g. ``dev-v1.1.json``.

    Example:
        >>> SquadSource("../shared/data/squad_v1.1/dev-v1.1.json").read()[0]
        Example(text='Which NFL team represented the AFC at Super Bowl 50?', text_pair='Super Bowl 50 was ...',
        label=((177, 'Denver Broncos'), (177, 'Denver Broncos'), (177, 'Denver Broncos')),
        where='../shared/data/squad_v1.1/dev-v1.1.json: data[0].paragraphs[0].qas[0] (id 56be4db0acb8001400a502ec)')
    """

    format = "squad"
    fields = {"text": True, "text_pair": True, "answers": True}
    kinds = ("span_qa",)

    def __init__(self, path: FilePath):
        self.path = str(path)

    def describe(self) -> str:
        return f"squad:{self.path}"

    def read(self) -> List[Example]:
        document = _object(self.path, _load_json(self.path), "the file")
        articles = _list(self.path, document, "data", f"is it a SQuAD v1.1 file? It is {_SQUAD_LAYOUT} "
                         "(for one question a line, use format: qa_jsonl)")
        examples, seen = [], {}
        for i, article in enumerate(articles):
            place = f"data[{i}]"
            article = _object(f"{self.path}: {place}", article, "an article")
            paragraphs = _list(f"{self.path}: {place}", article, "paragraphs",
                               'give each article a "paragraphs" list of {"context": ..., "qas": [...]}')
            for j, paragraph in enumerate(paragraphs):
                examples += self._paragraph(f"{place}.paragraphs[{j}]", paragraph, seen)
        return require_examples(self.path, examples, 'no questions: add questions to the paragraphs\' "qas" lists')

    def _paragraph(self, place: str, paragraph: Any, seen: Dict[str, str]) -> List[Example]:
        where = f"{self.path}: {place}"
        paragraph = _object(where, paragraph, "a paragraph")
        context = paragraph.get("context")
        if not isinstance(context, str) or not context.strip():
            raise DataError(where, f'no "context" text (found {_found(context)}); '
                                   'give each paragraph its text as "context"')
        questions = _list(where, paragraph, "qas", 'give each paragraph a "qas" list of its questions '
                          '({"id": ..., "question": ..., "answers": [...]}), or delete the paragraph')
        return [self._question(f"{place}.qas[{k}]", context, question, seen) for k, question in enumerate(questions)]

    def _question(self, place: str, context: str, question: Any, seen: Dict[str, str]) -> Example:
        question = _object(f"{self.path}: {place}", question, "a question")
        ident = question.get("id")
        if isinstance(ident, bool) or not isinstance(ident, (str, int)) or not str(ident).strip():
            raise DataError(f"{self.path}: {place}", f'no "id" (found {_found(ident)}); give every question '
                                                     "its own id (a string)")
        where = f"{self.path}: {place} (id {ident})"
        if str(ident) in seen:
            raise DataError(where, f"question id {str(ident)!r} is used again (first at {seen[str(ident)]}); "
                                   "give every question its own id")
        seen[str(ident)] = place
        if question.get("is_impossible") is True:
            raise DataError(where, '"is_impossible": true (a SQuAD v2 unanswerable question); span_qa reads '
                                   "answerable questions (SQuAD v1.1 style): remove the unanswerable questions")
        text = question.get("question")
        if not isinstance(text, str) or not text.strip():
            raise DataError(where, f'no "question" text (found {_found(text)}); '
                                   "fill it in or delete the question")
        return Example(text=text.strip(), text_pair=context, label=self._answers(where, context, question),
                       where=where)

    @staticmethod
    def _answers(where: str, context: str, question: dict) -> Optional[Tuple[Answer, ...]]:
        answers = question.get("answers")
        if answers is None or answers == []:
            return None
        if not isinstance(answers, list):
            raise DataError(where, f'"answers" must be a list of {{"answer_start": ..., "text": ...}}, found '
                                   f"{_json_type(answers)}; fix it (or remove it for an unanswered question)")
        label = []
        for n, answer in enumerate(answers):
            if not isinstance(answer, dict):
                raise DataError(where, f'answers[{n}] must be an object {{"answer_start": ..., "text": ...}}, '
                                       f"found {_json_type(answer)}; fix it")
            label.append(check_answer(where, f"answers[{n}]", context, answer.get("answer_start"),
                                      answer.get("text")))
        return tuple(label)


class QaJsonlSource(Source):
    """Questions from JSON Lines, for ``span_qa``: one question with its context and answers a line.

    Each non-blank line is one object::

        {"question": "Where is Paris?", "context": "Paris is in France.",
         "answers": [{"text": "France", "answer_start": 12}]}

    ``answers`` is a list of ``{"text", "answer_start"}`` objects or, as Hugging Face's
    ``squad`` dataset writes it (``Dataset.to_json``), one object of two lists of equal
    length, ``{"text": ["France"], "answer_start": [12]}``. A line without answers (no key, null,
    or empty lists) is an unanswered question (``label=None``). The `Example` is as
    `SquadSource` makes it: the question stripped, the context unchanged, ``label`` a tuple
    of ``(answer_start, text)`` pairs, each checked against the context; ``where`` is
    ``"<path>:<line>"``.

    Args:
        path: the file (UTF-8).
        question: the key of the question.
        context: the key of the context (the passage the answers are in).
        answers: the key of the answers.

    Example:
        >>> # qa.jsonl: {"question": "Where is Paris?", "context": "Paris is in France.",
        >>> #            "answers": {"text": ["France"], "answer_start": [12]}}
        >>> QaJsonlSource("qa.jsonl").read()[0]
        Example(text='Where is Paris?', text_pair='Paris is in France.', label=((12, 'France'),), where='qa.jsonl:1')
        >>> QaJsonlSource("qa.jsonl", question="q", context="passage", answers="spans")
    """

    format = "qa_jsonl"
    fields = {"text": True, "text_pair": True, "answers": True}
    kinds = ("span_qa",)

    def __init__(self, path: FilePath, question: str = "question", context: str = "context", answers: str = "answers"):
        self.path = str(path)
        self.keys = {"question": question, "context": context, "answers": answers}
        problems = [(name, f"must be a non-empty key name, not {key!r}") for name, key in self.keys.items()
                    if not isinstance(key, str) or not key]
        if problems:
            raise ConfigError(problems)

    def describe(self) -> str:
        return f"qa_jsonl:{self.path}"

    def read(self) -> List[Example]:
        examples = [self._example(f"{self.path}:{number}", line) for number, line in read_lines(self.path)
                    if line.strip()]
        return require_examples(self.path, examples, f"the file has only blank lines: add one question a line, "
                                                     f"{_JSONL_LINE}")

    def _example(self, where: str, line: str) -> Example:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(where, f"not valid JSON ({e.msg} at column {e.colno}); write one complete JSON object "
                                   f"a line, e.g. {_JSONL_LINE}") from None
        if not isinstance(record, dict):
            raise DataError(where, f"expected a JSON object, found {_json_type(record)}; write one object a line, "
                                   f"e.g. {_JSONL_LINE}")
        question = self._string(where, record, "question")
        context = self._string(where, record, "context")
        return Example(text=question.strip(), text_pair=context, label=self._answers(where, record, context),
                       where=where)

    def _string(self, where: str, record: dict, option: str) -> str:
        key = self.keys[option]
        if key not in record:
            raise DataError(where, f"key {json.dumps(key)}: missing (keys present: {sorted(record)}); add it, or "
                                   f"name the {option} key in the source ({option}: <key>)")
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise DataError(where, f"key {json.dumps(key)}: the {option} must be a non-empty string, found "
                                   f"{_found(value)}; "
                                   "fill it in or delete the line")
        return value

    def _answers(self, where: str, record: dict, context: str) -> Optional[Tuple[Answer, ...]]:
        key = self.keys["answers"]
        name = f"key {json.dumps(key)}"
        pairs = _answer_pairs(where, name, record.get(key))
        if not pairs:
            return None
        return tuple(check_answer(where, f"{name}[{n}]", context, start, text) for n, (start, text) in enumerate(pairs))


def _answer_pairs(where: str, name: str, value: Any) -> Sequence[Tuple[Any, Any]]:
    """The ``(answer_start, text)`` pairs of an answers value in either layout (unchecked)."""
    layouts = ('a list of {"text": ..., "answer_start": ...} objects or {"text": [...], "answer_start": [...]} '
               "(two lists of equal length)")
    if value is None:
        return ()
    if isinstance(value, dict):
        starts, texts = value.get("answer_start"), value.get("text")
        if not isinstance(starts, list) or not isinstance(texts, list):
            raise DataError(where, f'{name}: an object of answers needs "text" and "answer_start" lists, found '
                                   f"{_json_type(texts)} and {_json_type(starts)}; the answers are {layouts}")
        if len(starts) != len(texts):
            raise DataError(where, f'{name}: "text" has {len(texts)} answers but "answer_start" has {len(starts)}; '
                                   "give one answer_start per text")
        return list(zip(starts, texts))
    if isinstance(value, list):
        for n, answer in enumerate(value):
            if not isinstance(answer, dict):
                raise DataError(where, f"{name}[{n}] must be an object {{\"text\": ..., \"answer_start\": ...}}, "
                                       f"found {_json_type(answer)}; the answers are {layouts}")
        return [(answer.get("answer_start"), answer.get("text")) for answer in value]
    raise DataError(where, f"{name}: found {_json_type(value)}; the answers are {layouts} (or leave the key out for "
                           "an unanswered question)")
