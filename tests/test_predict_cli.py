"""`kmtl predict` input handling (issue 15): invalid UTF-8, wrong field types, option order,
``--text`` / ``--jsonl`` modes, one output line per input line (blank lines included).

One untrained tiny model (a sentence and a pair classifier) is exported once for the module;
its predictions are random, the tests check which rows come out and what the errors say.
"""

import io
import json

import pytest

from kmtl.cli import main


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    import kmtl
    from kmtl.backbone import tiny_encoder
    from kmtl.export import export_saved_model

    tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
             kmtl.tasks.PairClassification("paraphrase", ["different", "same"])]
    model = kmtl.build_model(tiny_encoder(seed=0), tasks, max_length=16)
    return export_saved_model(model, model.preprocessor, tmp_path_factory.mktemp("predict"), "m")


def predict(capsys, monkeypatch, args, stdin=None):
    """``kmtl predict`` in-process; ``stdin`` bytes go through a real (strict UTF-8) text wrapper."""
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def test_invalid_utf8_on_stdin_and_in_arguments_is_replaced(export, capsys, monkeypatch):
    code, rows, _ = predict(capsys, monkeypatch, [export], stdin=b"caf\xe9 film\n{\"text\": \"ok\"}\n")
    assert code == 0
    assert [r["text"] for r in rows] == ["caf\ufffd film", "ok"]
    assert rows[0]["sentiment_label"] in ("negative", "positive")
    # a shell hands Python invalid bytes as lone surrogates (surrogateescape)
    code, rows, _ = predict(capsys, monkeypatch, [export, "caf\udce9"])
    assert code == 0 and rows[0]["text"] == "caf\ufffd"


def test_blank_lines_keep_one_output_line_per_input_line(export, capsys, monkeypatch):
    code, rows, _ = predict(capsys, monkeypatch, [export], stdin=b"a good film\n\n   \r\nthe end\n")
    assert code == 0
    assert [r["text"] for r in rows] == ["a good film", "", "   ", "the end"]
    code, rows, _ = predict(capsys, monkeypatch, [export, "--signature", "paraphrase"], stdin=b"a\tb\n\nc\td\n")
    assert code == 0 and len(rows) == 3
    assert (rows[1]["text"], rows[1]["text_pair"]) == ("", "")
    assert rows[2]["paraphrase_label"] in ("different", "same")


def test_a_field_that_is_not_a_string_says_so(export, capsys, monkeypatch):
    code, _, err = predict(capsys, monkeypatch, [export], stdin=b'{"text": "fine"}\n{"text": 5}\n')
    assert code == 2
    assert "<stdin>:2" in err and "'text' must be a string, got int 5" in err and "missing" not in err
    code, _, err = predict(capsys, monkeypatch, [export], stdin=b'{"txt": "typo"}\n')
    assert code == 2 and "<stdin>:1" in err and "missing ['text']" in err


def test_options_after_the_export_folder_and_between_texts(export, capsys, monkeypatch):
    code, rows, _ = predict(capsys, monkeypatch, [export, "--signature", "paraphrase", "a b\ta c", "x\ty"])
    assert code == 0 and [r["text_pair"] for r in rows] == ["a c", "y"]
    code, rows, _ = predict(capsys, monkeypatch, [export, "one", "--signature", "sentiment", "two", "--", "-three"])
    assert code == 0 and [r["text"] for r in rows] == ["one", "two", "-three"]
    with pytest.raises(SystemExit) as exit_:  # an unknown option is still refused, by argparse
        main(["predict", str(export), "--sign", "paraphrase", "--bogus", "a"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_text_and_jsonl_input_modes(export, capsys, monkeypatch):
    lines = b'{"text": "a braced title"}\n{not json either\n'
    code, rows, _ = predict(capsys, monkeypatch, [export, "--text"], stdin=lines)
    assert code == 0 and [r["text"] for r in rows] == ['{"text": "a braced title"}', "{not json either"]
    code, _, err = predict(capsys, monkeypatch, [export], stdin=lines)  # auto: a "{" line is JSON
    assert code == 2 and "<stdin>:2: not valid JSON" in err and "--text" in err
    code, _, err = predict(capsys, monkeypatch, [export, "--jsonl"], stdin=b'{"text": "a"}\nplain\n')
    assert code == 2 and "<stdin>:2: not valid JSON" in err
    code, rows, _ = predict(capsys, monkeypatch, [export, "--jsonl", '{"text": "from an argument"}'])
    assert code == 0 and rows[0]["text"] == "from an argument"
    code, rows, _ = predict(capsys, monkeypatch, [export, "{ not JSON, a text argument"])
    assert code == 0 and rows[0]["text"] == "{ not JSON, a text argument"
    with pytest.raises(SystemExit):
        main(["predict", str(export), "--text", "--jsonl"])
    capsys.readouterr()


def test_input_parsing_alone():
    from kmtl.serving.predict_input import parse_stdin, split_lines

    assert split_lines("a\n\nb\r\n") == ["a", "", "b"]
    assert split_lines("no final newline") == ["no final newline"]
    assert split_lines("") == []
    assert parse_stdin(b'x\n\n{"text": "y", "text_pair": "z"}\n') == ["x", "", {"text": "y", "text_pair": "z"}]
    assert parse_stdin(b"[1, 2]\n") == ["[1, 2]"]  # auto: only "{" lines are JSON
    with pytest.raises(Exception, match=r"<stdin>:1: expected a JSON object"):
        parse_stdin(b"[1, 2]\n", mode="jsonl")
