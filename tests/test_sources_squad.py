"""Question-answering sources for ``span_qa``: SQuAD v1.1 JSON (`SquadSource`) and JSON Lines
(`QaJsonlSource`), their answer checks, their errors (place and fix), and the real SQuAD files."""

import json
import re

import pytest

from kmtl.data import Example
from kmtl.data.sources import QaJsonlSource, SquadSource
from kmtl.data.sources.squad import check_answer
from kmtl.errors import ConfigError, DataError
from kmtl.registry import SOURCES


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


CONTEXT = "  Paris is the capital of France. Paris is big.\n"  # spaces and a newline: kept as they are


def _squad(tmp_path, questions, context=CONTEXT, name="squad.json"):
    data = {"version": "1.1", "data": [{"title": "Paris", "paragraphs": [{"context": context, "qas": questions}]}]}
    return write(tmp_path / name, json.dumps(data))


def _qa(ident, question="Where is Paris?", answers=((26, "France"),)):
    record = {"id": ident, "question": question}
    if answers is not None:
        record["answers"] = [{"answer_start": s, "text": t} for s, t in answers]
    return record


def _error(source) -> DataError:
    with pytest.raises(DataError) as err:
        source.read()
    return err.value


# ------------------------------------------------------------------------------ SquadSource
def test_squad_reads_questions_contexts_and_answers(tmp_path):
    path = _squad(tmp_path, [_qa("q1", "  Where is Paris?\n"),
                             _qa("q2", "Which city?", answers=((2, "Paris"), (34, "Paris"), (2, "Paris"))),
                             _qa("q3", "Unanswered?", answers=None),
                             _qa("q4", "Empty answers?", answers=())])
    examples = SquadSource(path).read()
    assert examples == [
        Example(text="Where is Paris?", text_pair=CONTEXT, label=((26, "France"),),
                where=f"{path}: data[0].paragraphs[0].qas[0] (id q1)"),
        Example(text="Which city?", text_pair=CONTEXT, label=((2, "Paris"), (34, "Paris"), (2, "Paris")),
                where=f"{path}: data[0].paragraphs[0].qas[1] (id q2)"),
        Example(text="Unanswered?", text_pair=CONTEXT, label=None, where=f"{path}: data[0].paragraphs[0].qas[2] (id q3)"),
        Example(text="Empty answers?", text_pair=CONTEXT, label=None,
                where=f"{path}: data[0].paragraphs[0].qas[3] (id q4)"),
    ]
    for example in examples:
        for start, text in example.label or ():
            assert example.text_pair[start:start + len(text)] == text


def test_squad_offsets_are_characters_and_a_bom_is_dropped(tmp_path):
    context = "Zoë visited Kraków in 2019."
    data = {"data": [{"paragraphs": [{"context": context, "qas": [_qa("q", "When?", ((22, "2019"),))]}]}]}
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))
    [example] = SquadSource(path).read()
    assert example.label == ((22, "2019"),) and example.text_pair == context


@pytest.mark.parametrize("questions, place, message", [
    ([_qa("q1", answers=((27, "France"),))], "qas[0] (id q1)",
     "answers[0]: the context has 'rance.' at answer_start 27, not the answer 'France'; the answer occurs at offset 26: "
     "set answer_start to 26"),
    ([_qa("q1", answers=((30, "Paris"),))], "qas[0] (id q1)",
     "the answer occurs at 2 offsets, the nearest 34: set answer_start to 34"),
    ([_qa("q1", answers=((26, "Spain"),))], "qas[0] (id q1)",
     "answers[0]: the context has 'Franc' at answer_start 26, not the answer 'Spain'; the answer text does not occur "
     "in the context: copy it from the context"),
    ([_qa("q1", answers=((26, "France"), (999, "France")))], "qas[0] (id q1)",
     "answers[1]: answer_start 999 is past the end of the context (48 characters); the answer occurs at offset 26"),
    ([_qa("q1", answers=((-1, "France"),))], "qas[0] (id q1)",
     'answers[0]: "answer_start" must be a non-negative integer (the character offset of the answer in the context), '
     "found -1; fix the offset"),
    ([_qa("q1", answers=((True, "France"),))], "qas[0] (id q1)", '"answer_start" must be a non-negative integer'),
    ([_qa("q1", answers=(("26", "France"),))], "qas[0] (id q1)", 'found "26"; fix the offset'),
    ([_qa("q1", answers=((26, ""),))], "qas[0] (id q1)",
     'answers[0]: "text" must be a non-empty string (the answer as it appears in the context), found ""; fill it in'),
    ([_qa("q1", question="   ")], "qas[0] (id q1)",
     'no "question" text (found an empty string); fill it in or delete the question'),
    ([_qa("q1"), _qa("q1")], "qas[1] (id q1)",
     "question id 'q1' is used again (first at data[0].paragraphs[0].qas[0]); give every question its own id"),
    ([{**_qa("q1", answers=()), "is_impossible": True}], "qas[0] (id q1)",
     "SQuAD v2 unanswerable question); span_qa reads answerable questions (SQuAD v1.1 style): remove the "
     "unanswerable questions"),
    ([{"question": "Where?"}], "qas[0]", 'no "id" (found null); give every question its own id'),
    ([_qa("q1") | {"answers": "France"}], "qas[0] (id q1)", '"answers" must be a list of'),
    (["Where?"], "qas[0]", "a question must be a JSON object, found a string"),
])
def test_squad_errors_name_the_json_path_and_the_fix(tmp_path, questions, place, message):
    path = _squad(tmp_path, questions)
    err = _error(SquadSource(path))
    assert err.where == f"{path}: data[0].paragraphs[0].{place}"
    assert message in err.message


@pytest.mark.parametrize("data, place, message", [
    ({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}, ": data[0].paragraphs[0]",
     'no "context" text (found null); give each paragraph its text as "context"'),
    ({"data": [{"title": "t", "paragraphs": [{"context": "c"}]}]}, ": data[0].paragraphs[0]",
     'no "qas" list (found null); give each paragraph a "qas" list'),
    ({"data": [{"title": "t"}]}, ": data[0]", 'no "paragraphs" list (found null); give each article a "paragraphs" list'),
    ({"version": "1.1"}, "", 'no "data" list (found null); is it a SQuAD v1.1 file?'),
    ([1, 2], "", "the file must be a JSON object, found a list"),
    ({"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": []}]}]}, "",
     "no examples in file; no questions: add questions"),
])
def test_squad_structure_errors(tmp_path, data, place, message):
    path = write(tmp_path / "bad.json", json.dumps(data))
    err = _error(SquadSource(path))
    assert err.where == f"{path}{place}"
    assert message in err.message


def test_squad_invalid_json_names_line_and_column(tmp_path):
    path = write(tmp_path / "bad.json", '{"data": [\n  {"title": "t",\n   "paragraphs": [}\n]}\n')
    err = _error(SquadSource(path))
    assert err.where == f"{path}:3"
    assert re.match(r"not valid JSON \(Expecting value at line 3, column 19\); fix the file", err.message)


@pytest.mark.parametrize("content, where, message", [
    (None, "", "no such file; check the path"),
    (b"  \n", "", "no examples in file; the file is empty"),
    (b'{"data": [\n"caf\xe9"]}', ":2", "is not valid UTF-8 (byte 0xe9 at column 5)"),
])
def test_squad_file_errors_are_the_line_readers(tmp_path, content, where, message):
    path = tmp_path / "file.json"
    if content is not None:
        path.write_bytes(content)
    err = _error(SquadSource(path))
    assert (err.where, message in err.message) == (f"{path}{where}", True)
    assert "not a file" in _error(SquadSource(tmp_path)).message


# ------------------------------------------------------------------------------ QaJsonlSource
def _jsonl(tmp_path, *records, name="qa.jsonl"):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return write(tmp_path / name, "\n".join(lines) + "\n")


def test_qa_jsonl_reads_both_answer_layouts(tmp_path):
    path = _jsonl(tmp_path,
                  {"question": " Where is Paris? ", "context": CONTEXT, "answers": [{"text": "France", "answer_start": 26}]},
                  "",
                  {"question": "Which city?", "context": CONTEXT,
                   "answers": {"text": ["Paris", "Paris", "Paris"], "answer_start": [2, 34, 2]}},
                  {"question": "Unanswered?", "context": CONTEXT},
                  {"question": "HF unanswered?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}},
                  {"question": "Empty?", "context": CONTEXT, "answers": []})
    examples = QaJsonlSource(path).read()
    assert [(e.text, e.text_pair, e.label, e.where) for e in examples] == [
        ("Where is Paris?", CONTEXT, ((26, "France"),), f"{path}:1"),
        ("Which city?", CONTEXT, ((2, "Paris"), (34, "Paris"), (2, "Paris")), f"{path}:3"),
        ("Unanswered?", CONTEXT, None, f"{path}:4"),
        ("HF unanswered?", CONTEXT, None, f"{path}:5"),
        ("Empty?", CONTEXT, None, f"{path}:6"),
    ]


def test_qa_jsonl_reads_other_key_names(tmp_path):
    path = _jsonl(tmp_path, {"q": "Where?", "passage": CONTEXT, "spans": [{"text": "France", "answer_start": 26}]})
    [example] = QaJsonlSource(path, question="q", context="passage", answers="spans").read()
    assert (example.text, example.label) == ("Where?", ((26, "France"),))
    with pytest.raises(ConfigError, match="context: must be a non-empty key name"):
        QaJsonlSource(path, context="")


GOOD = {"question": "Where?", "context": CONTEXT}


@pytest.mark.parametrize("line, message", [
    ({**GOOD, "answers": [{"text": "France", "answer_start": 27}]},
     "key \"answers\"[0]: the context has 'rance.' at answer_start 27, not the answer 'France'; the answer occurs "
     "at offset 26: set answer_start to 26"),
    ({**GOOD, "answers": {"text": ["France", "Paris"], "answer_start": [26, 3]}},
     'key "answers"[1]: the context has \'aris \' at answer_start 3, not the answer \'Paris\'; the answer occurs at '
     "2 offsets, the nearest 2: set answer_start to 2"),
    ({**GOOD, "answers": {"text": ["France"], "answer_start": [26, 3]}},
     'key "answers": "text" has 1 answers but "answer_start" has 2; give one answer_start per text'),
    ({**GOOD, "answers": {"text": "France", "answer_start": 26}},
     'key "answers": an object of answers needs "text" and "answer_start" lists, found a string and a number'),
    ({**GOOD, "answers": ["France"]}, 'key "answers"[0] must be an object {"text": ..., "answer_start": ...}, '
                                      "found a string"),
    ({**GOOD, "answers": "France"}, 'key "answers": found a string; the answers are a list of'),
    ({**GOOD, "answers": [{"text": "France", "answer_start": 2.5}]},
     'key "answers"[0]: "answer_start" must be a non-negative integer'),
    ({**GOOD, "answers": [{"answer_start": 26}]}, 'key "answers"[0]: "text" must be a non-empty string'),
    ({"context": CONTEXT}, "key \"question\": missing (keys present: ['context']); add it, or name the question key "
                           "in the source (question: <key>)"),
    ({**GOOD, "context": " \n"}, 'key "context": the context must be a non-empty string, found an empty string; '
                                 "fill it in"),
    ({**GOOD, "question": 3}, 'key "question": the question must be a non-empty string, found a number'),
    ('{"question": "Where?",', "not valid JSON (Expecting property name enclosed in double quotes at column 23); "
                               "write one complete JSON object a line"),
    ("[1]", "expected a JSON object, found a list; write one object a line"),
])
def test_qa_jsonl_errors_name_file_line_key_and_fix(tmp_path, line, message):
    path = _jsonl(tmp_path, {**GOOD, "answers": [{"text": "France", "answer_start": 26}]}, line)
    err = _error(QaJsonlSource(path))
    assert err.where == f"{path}:2"
    assert message in err.message


def test_qa_jsonl_blank_file_is_a_data_error(tmp_path):
    path = _jsonl(tmp_path, "", " ")
    err = _error(QaJsonlSource(path))
    assert (err.where, err.message.startswith("no examples in file")) == (str(path), True)


def test_check_answer_is_shared_and_returns_the_pair():
    assert check_answer("x:1", "answer", "Paris is in France.", 12, "France") == (12, "France")
    with pytest.raises(DataError, match="set answer_start to 12"):
        check_answer("x:1", "answer", "Paris is in France.", 11, "France")


# ------------------------------------------------------------------------------ registry, real data
def test_the_registry_reads_both_formats():
    for fmt, cls, keys in (("squad", SquadSource, ["path"]),
                           ("qa_jsonl", QaJsonlSource, ["path", "question", "context", "answers"])):
        entry = SOURCES.get(fmt)
        assert entry.load() is cls
        assert [o.key for o in entry.options] == keys
        assert entry.attributes["kinds"] == ("span_qa",)
        assert entry.attributes["fields"] == {"text": True, "text_pair": True, "answers": True}


def test_the_real_squad_files(shared_data):
    folder = shared_data / "squad_v1.1"
    train = SquadSource(folder / "train-v1.1.first11articles.json").read()
    assert len(train) == 3807
    assert all(len(e.label) == 1 for e in train)
    dev = SquadSource(folder / "dev-v1.1.json").read()
    assert len(dev) == 10570
    assert all(1 <= len(e.label) <= 6 for e in dev)
    assert len({e.where.rsplit("(id ", 1)[1] for e in dev}) == 10570
    for example in train + dev:
        assert example.text and example.text == example.text.strip()
        for start, text in example.label:
            assert example.text_pair[start:start + len(text)] == text
    assert dev[0].label == ((177, "Denver Broncos"),) * 3
    assert dev[0].text == "Which NFL team represented the AFC at Super Bowl 50?"
