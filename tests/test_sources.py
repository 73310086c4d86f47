"""Tests of the file sources (TSV/CSV, JSONL, CoNLL): good input, bad input, real data."""

import shutil
from pathlib import Path

import pytest

from kmtl.data.example import Example
from kmtl.data.sources import (
    ConllSource,
    CsvSource,
    DelimitedSource,
    JsonlSource,
    Source,
    TsvSource,
    read_lines,
)
from kmtl.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(tmp_path, name, content):
    """Writes ``content`` (str as UTF-8, or bytes) to ``tmp_path/name``; returns the path str."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def raises_data_error(source, where, *fragments):
    """Reads ``source``, expects a DataError at ``where`` whose message has all fragments."""
    with pytest.raises(DataError) as info:
        source.read()
    err = info.value
    assert err.where == where
    assert str(err).startswith(f"{where}: ")
    for fragment in fragments:
        assert fragment in err.message, f"{fragment!r} not in {err.message!r}"
    return err


# -- DelimitedSource: good input ------------------------------------------------------------


def test_tsv_header_names_and_literal_quotes(tmp_path):
    path = write(
        tmp_path,
        "train.tsv",
        'sentence\tlabel\nhe said "hi \t1\n"quoted" and \'single\'\t0\nit\'s ""odd""\t1\n',
    )
    src = TsvSource(path, text="sentence", label="label")
    assert src.read() == [
        Example(text='he said "hi', label="1", where=f"{path}:2"),
        Example(text="\"quoted\" and 'single'", label="0", where=f"{path}:3"),
        Example(text='it\'s ""odd""', label="1", where=f"{path}:4"),
    ]
    assert src.describe() == f"tsv:{path}"
    assert isinstance(src, Source)
    assert isinstance(src, DelimitedSource) and src.delimiter == "\t"


def test_tsv_int_columns_without_header(tmp_path):
    path = write(tmp_path, "ag.tsv", "first text\tWorld\nsecond text\tSports\n")
    examples = TsvSource(path, text=0, label=1, header=False).read()
    assert [(e.text, e.label, e.where) for e in examples] == [
        ("first text", "World", f"{path}:1"),
        ("second text", "Sports", f"{path}:2"),
    ]
    # negative numbers count from the end
    assert TsvSource(path, text=-2, label=-1, header=False).read() == examples


def test_tsv_int_columns_with_header(tmp_path):
    path = write(tmp_path, "t.tsv", "a\tb\tc\nx\ty\tz\n")
    (example,) = TsvSource(path, text=2, text_pair="a", label=1).read()
    assert (example.text, example.text_pair, example.label) == ("z", "x", "y")


def test_tsv_pair_unlabelled_and_blank_lines(tmp_path):
    path = write(tmp_path, "p.tsv", "s1\ts2\tscore\n\nA man.\tA person.\t4.750\n\n\n")
    (example,) = TsvSource(path, text="s1", text_pair="s2").read()
    assert example == Example(text="A man.", text_pair="A person.", where=f"{path}:3")
    assert example.label is None


def test_tsv_label_separator(tmp_path):
    path = write(tmp_path, "m.tsv", "text\ttags\nfirst\tsports | politics\nsecond\t\nthird\tart\n")
    src = TsvSource(path, text="text", label="tags", label_separator="|")
    labels = [e.label for e in src.read()]
    assert labels == [("sports", "politics"), (), ("art",)]


def test_tsv_windows_line_endings_and_bom(tmp_path):
    content = b"\xef\xbb\xbfsentence\tlabel\r\nhello there\tpos\r\nbye\tneg\r\n"
    path = write(tmp_path, "w.tsv", content)
    examples = TsvSource(path, text="sentence", label="label").read()
    assert [(e.text, e.label) for e in examples] == [("hello there", "pos"), ("bye", "neg")]


def test_csv_quoting(tmp_path):
    path = write(
        tmp_path,
        "r.csv",
        'text,label\n"Hello, world",pos\n"He said ""hi""",neg\n"two\nlines",pos\nplain,neg\n',
    )
    src = CsvSource(path, text="text", label="label")
    assert src.read() == [
        Example(text="Hello, world", label="pos", where=f"{path}:2"),
        Example(text='He said "hi"', label="neg", where=f"{path}:3"),
        Example(text="two\nlines", label="pos", where=f"{path}:4"),
        Example(text="plain", label="neg", where=f"{path}:6"),
    ]
    assert src.describe() == f"csv:{path}"
    # the same file read by DelimitedSource with quoting=True
    same = DelimitedSource(path, "text", label="label", delimiter=",", quoting=True)
    assert same.read() == src.read()


def test_other_delimiter_describe(tmp_path):
    path = write(tmp_path, "x.txt", "text;label\nok;1\n")
    src = DelimitedSource(path, text="text", label="label", delimiter=";")
    assert src.read()[0].label == "1"
    assert src.describe() == f"delimited:{path}"


# -- DelimitedSource: bad input -------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.tsv")
    raises_data_error(TsvSource(path, text="sentence"), path, "no such file", "check the path")


def test_directory_instead_of_file(tmp_path):
    raises_data_error(TsvSource(tmp_path, text=0, header=False), str(tmp_path), "not a file")


def test_empty_file(tmp_path):
    path = write(tmp_path, "e.tsv", "")
    raises_data_error(TsvSource(path, text="sentence"), path, "no examples in file")
    path = write(tmp_path, "blank.tsv", "\n\r\n  \n")
    raises_data_error(TsvSource(path, text="sentence"), path, "no examples in file")


def test_header_only(tmp_path):
    path = write(tmp_path, "h.tsv", "sentence\tlabel\n")
    raises_data_error(TsvSource(path, text="sentence", label="label"), path, "no examples in file")


def test_not_utf8(tmp_path):
    content = "sentence\tlabel\ncafé\tpos\n".encode("utf-8") + "naïve\tneg\n".encode("latin-1")
    path = write(tmp_path, "l1.tsv", content)
    raises_data_error(
        TsvSource(path, text="sentence", label="label"),
        f"{path}:3",
        "is not valid UTF-8",
        "byte 0xef at column 3",
        "re-encode the file as UTF-8",
    )


def test_wrong_column_count(tmp_path):
    path = write(tmp_path, "c.tsv", "sentence\tlabel\nfine\t1\none\ttab\ttoo many\t0\n")
    raises_data_error(
        TsvSource(path, text="sentence", label="label"),
        f"{path}:3",
        "expected 2 columns separated by '\\t'",
        "found 4",
        "stray or missing separator",
        "quoting=True",
    )
    path = write(tmp_path, "n.tsv", "a\t1\n\nb\n")
    raises_data_error(
        TsvSource(path, text=0, label=1, header=False), f"{path}:3", "expected 2 columns", "found 1"
    )


def test_csv_unclosed_quote(tmp_path):
    path = write(tmp_path, "q.csv", 'text,label\n"oops,pos\nfine,neg\n')
    raises_data_error(
        CsvSource(path, text="text", label="label"), f"{path}:2", "found 1", "unbalanced quote"
    )


def test_header_lacks_column(tmp_path):
    path = write(tmp_path, "g.tsv", "sentence1\tsentence2\tscore\na\tb\t1\n")
    raises_data_error(
        TsvSource(path, text="sentence1", label="label"),
        f"{path}:1",
        "no column 'label' in header ['sentence1', 'sentence2', 'score']",
        "use one of these names",
    )


def test_column_index_out_of_range(tmp_path):
    path = write(tmp_path, "o.tsv", "a\tb\n")
    raises_data_error(
        TsvSource(path, text=0, label=2, header=False), f"{path}:1", "column 2", "out of range"
    )


def test_empty_text_and_label(tmp_path):
    path = write(tmp_path, "t.tsv", "sentence\tlabel\nok\t1\n  \t0\n")
    raises_data_error(
        TsvSource(path, text="sentence", label="label"), f"{path}:3", "empty text", "fill it in"
    )
    path = write(tmp_path, "l.tsv", "sentence\tlabel\nok\t\n")
    raises_data_error(
        TsvSource(path, text="sentence", label="label"), f"{path}:2", "empty label", "label=None"
    )


def test_delimited_config_errors():
    with pytest.raises(ConfigError, match="header=False"):
        TsvSource("x.tsv", text="sentence", header=False)
    with pytest.raises(ConfigError, match="column name or a 0-based column number"):
        TsvSource("x.tsv", text=1.5)
    with pytest.raises(ConfigError, match="one character"):
        CsvSource("x.csv", text="t", delimiter=";;")


# -- JsonlSource ----------------------------------------------------------------------------


def test_jsonl_reads_labels_of_each_kind(tmp_path):
    path = write(
        tmp_path,
        "d.jsonl",
        '{"text": "a great film", "label": "pos"}\n'
        "\n"
        '{"text": "meh", "label": 2.5, "extra": 1}\r\n'
        '{"text": "so so", "label": 3}\n'
        '{"text": "news", "label": ["sports", "politics"]}',
    )
    examples = JsonlSource(path).read()
    assert examples == [
        Example(text="a great film", label="pos", where=f"{path}:1"),
        Example(text="meh", label=2.5, where=f"{path}:3"),
        Example(text="so so", label=3, where=f"{path}:4"),
        Example(text="news", label=("sports", "politics"), where=f"{path}:5"),
    ]
    assert isinstance(examples[2].label, int)
    assert JsonlSource(path).describe() == f"jsonl:{path}"


def test_jsonl_pair_unlabelled_and_separator(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"s1": "A man.", "s2": "A person.", "tags": "x|y"}\n')
    (example,) = JsonlSource(path, text="s1", text_pair="s2", label=None).read()
    assert (example.text, example.text_pair, example.label) == ("A man.", "A person.", None)
    (example,) = JsonlSource(path, text="s1", label="tags", label_separator="|").read()
    assert example.label == ("x", "y")


def test_jsonl_bad_json(tmp_path):
    path = write(tmp_path, "b.jsonl", '{"text": "ok", "label": "a"}\n{"text": "oops", "label": }\n')
    raises_data_error(
        JsonlSource(path), f"{path}:2", "not valid JSON (", "one complete JSON object"
    )


def test_jsonl_missing_field(tmp_path):
    path = write(tmp_path, "m.jsonl", '{"sentence": "hi", "label": "a"}\n')
    raises_data_error(
        JsonlSource(path),
        f"{path}:1",
        "missing field 'text'; fields present: ['label', 'sentence']",
        "name the right key",
    )


def test_jsonl_not_an_object(tmp_path):
    path = write(tmp_path, "l.jsonl", '{"text": "ok", "label": "a"}\n["text", "label"]\n')
    raises_data_error(JsonlSource(path), f"{path}:2", "expected a JSON object, found list")


def test_jsonl_bad_values(tmp_path):
    path = write(tmp_path, "v.jsonl", '{"text": "  ", "label": "a"}\n')
    raises_data_error(JsonlSource(path), f"{path}:1", "empty text in field 'text'", "fill it in")
    path = write(tmp_path, "n.jsonl", '{"text": 12, "label": "a"}\n')
    raises_data_error(JsonlSource(path), f"{path}:1", "field 'text' must be a string")
    path = write(tmp_path, "o.jsonl", '{"text": "hi", "label": {"a": 1}}\n')
    raises_data_error(JsonlSource(path), f"{path}:1", "field 'label' must be a string")


def test_jsonl_empty_and_not_utf8(tmp_path):
    path = write(tmp_path, "e.jsonl", "\n\n")
    raises_data_error(JsonlSource(path), path, "no examples in file")
    path = write(tmp_path, "u.jsonl", b'{"text": "caf\xe9", "label": "a"}\n')
    raises_data_error(JsonlSource(path), f"{path}:1", "not valid UTF-8 (byte 0xe9 at column 14)")


# -- ConllSource ----------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU B-ORG
rejects O
German B-MISC


Peter B-PER
Blackburn I-PER
-DOCSTART- -X- -X- O

BRUSSELS B-LOC
1996-08-22 O"""


def test_conll_sentences(tmp_path):
    path = write(tmp_path, "train.txt", CONLL)
    src = ConllSource(path)
    assert src.read() == [
        Example(
            tokens=("EU", "rejects", "German"), label=("B-ORG", "O", "B-MISC"), where=f"{path}:3"
        ),
        Example(tokens=("Peter", "Blackburn"), label=("B-PER", "I-PER"), where=f"{path}:8"),
        Example(tokens=("BRUSSELS", "1996-08-22"), label=("B-LOC", "O"), where=f"{path}:12"),
    ]
    assert src.describe() == f"conll:{path}"


def test_conll_columns_tabs_and_crlf(tmp_path):
    path = write(tmp_path, "c.txt", "New York\tNNP\tB-LOC\r\nis\tVBZ\tO\r\n\r\n")
    (example,) = ConllSource(path, delimiter="\t").read()
    assert example.tokens == ("New York", "is") and example.label == ("B-LOC", "O")
    (example,) = ConllSource(path, delimiter="\t", tag_column=1).read()
    assert example.label == ("NNP", "VBZ")
    (example,) = ConllSource(path, delimiter="\t", tag_column=None).read()
    assert example.tokens == ("New York", "is") and example.label is None


def test_conll_too_few_columns(tmp_path):
    path = write(tmp_path, "f.txt", "EU B-ORG\nrejects\n")
    raises_data_error(
        ConllSource(path),
        f"{path}:2",
        "expected at least 2 columns (token and tag)",
        "found 1",
        "give every token a tag",
    )
    raises_data_error(ConllSource(path, tag_column=3), f"{path}:1", "expected at least 4 columns")


def test_conll_empty_token(tmp_path):
    path = write(tmp_path, "t.txt", "EU\tB-ORG\n\tO\n")
    raises_data_error(ConllSource(path, delimiter="\t"), f"{path}:2", "empty token")


def test_conll_no_sentences(tmp_path):
    path = write(tmp_path, "d.txt", "-DOCSTART- O\n\n")
    raises_data_error(ConllSource(path), path, "no examples in file")
    path = str(tmp_path / "missing.txt")
    raises_data_error(ConllSource(path), path, "no such file")


def test_conll_not_utf8(tmp_path):
    path = write(tmp_path, "u.txt", b"EU B-ORG\n\nM\xfcnchen B-LOC\n")
    raises_data_error(ConllSource(path), f"{path}:3", "byte 0xfc at column 2", "re-encode")


def test_conll_config_errors():
    with pytest.raises(ConfigError, match="token_column"):
        ConllSource("x.txt", token_column="0")


def test_read_lines(tmp_path):
    path = write(tmp_path, "x.txt", b"\xef\xbb\xbfa\r\n\nb")
    assert list(read_lines(path)) == [(1, "a"), (2, ""), (3, "b")]


# -- real data (../shared/data) -------------------------------------------------------------


def shared(relative, tmp_path, lines=200):
    """Copies the first ``lines`` lines of a shared data file into tmp_path (or skips)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found (only CI and dev machines have it)")
    source = SHARED_DATA / relative
    target = tmp_path / source.name
    if lines is None:
        shutil.copyfile(source, target)
    else:
        with open(source, "rb") as f:
            target.write_bytes(b"".join(line for _, line in zip(range(lines), f)))
    return str(target)


def test_real_sst2(tmp_path):
    path = shared("sst2/train.tsv", tmp_path)
    examples = TsvSource(path, text="sentence", label="label").read()
    assert len(examples) == 199
    assert examples[0] == Example(text="when are bears bears and", label="1", where=f"{path}:2")
    assert {e.label for e in examples} == {"0", "1"}
    assert all(e.text == e.text.strip() and e.text for e in examples)


def test_real_ag_news(tmp_path):
    path = shared("ag_news/dev.tsv", tmp_path)
    examples = TsvSource(path, text=0, label=1, header=False).read()
    assert len(examples) == 200
    assert {e.label for e in examples} <= {"World", "Sports", "Business", "Sci/Tech"}
    # line 15 is a CSV-style quoted field: with quoting off, the quotes are kept as text
    assert examples[14].where == f"{path}:15"
    assert examples[14].text.startswith('" NEW YORK (Reuters)')
    assert '""http://' in examples[14].text


def test_real_conll2003(tmp_path):
    path = shared("conll2003/train.txt", tmp_path)
    examples = ConllSource(path, delimiter="\t").read()
    assert examples[0].tokens[:3] == ("EU", "rejects", "German")
    assert examples[0].label[:3] == ("B-organisation", "O", "B-misc")
    assert examples[0].where == f"{path}:1"
    tags = {tag for e in examples for tag in e.label}
    types = {"person", "organisation", "location", "misc"}
    assert tags <= {"O"} | {f"{p}-{t}" for p in "BI" for t in types}
    assert all(len(e.tokens) == len(e.label) for e in examples)
    assert ConllSource(path).read() == examples  # whitespace splitting agrees


def test_real_wnut17(tmp_path):
    path = shared("wnut17/train.conll", tmp_path)
    examples = ConllSource(path).read()
    assert examples[0].tokens[0] == "@paulwalk"
    assert "B-location" in {tag for e in examples for tag in e.label}
    assert all(len(e.tokens) == len(e.label) > 0 for e in examples)


def test_real_stsb(tmp_path):
    path = shared("stsb/dev.tsv", tmp_path, lines=None)
    examples = TsvSource(path, text="sentence1", text_pair="sentence2", label="score").read()
    assert len(examples) == 1500
    assert examples[0] == Example(
        text="A man with a hard hat is dancing.",
        text_pair="A man wearing a hard hat is dancing.",
        label="5.000",
        where=f"{path}:2",
    )
    assert all(0.0 <= float(e.label) <= 5.0 for e in examples)
    assert any('"' in e.text_pair for e in examples)  # quotes are literal, not CSV quoting
