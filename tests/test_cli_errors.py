"""Bad input at the command line: one clear message naming the place, exit status 2, no traceback."""

import subprocess
import sys
import textwrap

import pytest

from kmtl.cli import main


def config(tmp_path, train_file, kind="classification", labels="[negative, positive]", extra=""):
    text = f"""
    name: bad
    backbone: tiny
    tasks:
      - name: sentiment
        kind: {kind}
        labels: {labels}
        train: {{format: tsv, path: {train_file}, text: sentence, label: label}}
    training: {{epochs: 1}}
    output_dir: {tmp_path}/runs
    export: {{dir: {tmp_path}/saved_models}}
    """
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text) + extra, encoding="utf-8")
    return path


def tsv(tmp_path, body: bytes, name="train.tsv"):
    path = tmp_path / name
    path.write_bytes(b"sentence\tlabel\n" + body)
    return path


def run_cli(capsys, *args):
    code = main(list(map(str, args)))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_label_outside_label_set_names_file_and_line(tmp_path, capsys):
    train = tsv(tmp_path, b"good film\tpositive\nbad film\tnegative\nmeh\tneutral\n")
    code, err = run_cli(capsys, "train", config(tmp_path, train))
    assert code == 2
    assert f"{train}:4" in err and "'neutral'" in err and "add it to the task's `labels`" in err
    assert not (tmp_path / "runs" / "bad" / "model.weights.h5").exists()
    assert not (tmp_path / "saved_models").exists()


def test_wrong_column_count_names_file_and_line(tmp_path, capsys):
    train = tsv(tmp_path, b"good film\tpositive\nbad\tfilm\tnegative\n")
    code, err = run_cli(capsys, "train", config(tmp_path, train))
    assert code == 2 and f"{train}:3" in err and "columns" in err


def test_non_utf8_bytes_name_file_and_line(tmp_path, capsys):
    train = tsv(tmp_path, b"good film\tpositive\ncaf\xe9 film\tnegative\n")
    code, err = run_cli(capsys, "train", config(tmp_path, train))
    assert code == 2 and f"{train}:3" in err and "UTF-8" in err


def test_empty_split_is_reported(tmp_path, capsys):
    train = tsv(tmp_path, b"")
    code, err = run_cli(capsys, "train", config(tmp_path, train))
    assert code == 2 and str(train) in err and "no examples" in err


def test_malformed_conll_line(tmp_path, capsys):
    conll = tmp_path / "ner.conll"
    conll.write_text("John\tB-PER\nlives\nthere\tO\n", encoding="utf-8")
    text = f"""
    backbone: tiny
    tasks:
      - name: ner
        kind: tagging
        train: {{format: conll, path: {conll}}}
    output_dir: {tmp_path}/runs
    """
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(text))
    code, err = run_cli(capsys, "train", cfg)
    assert code == 2 and f"{conll}:2" in err


def test_non_numeric_regression_score(tmp_path, capsys):
    train = tsv(tmp_path, b"good film\t4.5\nbad film\tabc\n")
    code, err = run_cli(capsys, "train", config(tmp_path, train, kind="regression", labels="null"))
    assert code == 2 and f"{train}:3" in err and "'abc'" in err


def test_config_problems_are_all_reported_with_key_paths(tmp_path, capsys):
    text = """
    backbone: tiny
    tasks:
      - name: Sentiment
        kind: clasification
        train: {format: tsv, path: nowhere.tsv}
    mixture: {sampling: temprature}
    """
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(text))
    code, err = run_cli(capsys, "train", cfg)
    assert code == 2
    assert "tasks[0].name" in err and "tasks[0].kind" in err and "mixture.sampling" in err
    assert "temperature" in err  # the valid choices are listed


def test_missing_config_file(tmp_path, capsys):
    code, err = run_cli(capsys, "train", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml" in err


def test_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, err = run_cli(capsys, "export", tmp_path)
    assert code == 2 and "not a finished kmtl run" in err


@pytest.mark.parametrize("args", [["train", "missing.yaml"]])
def test_real_process_exit_code_and_no_traceback(tmp_path, args):
    out = subprocess.run([sys.executable, "-m", "kmtl.cli", *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "missing.yaml" in out.stderr
