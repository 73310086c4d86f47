"""Run folders on a rerun (issue 15): nothing written before the input is validated, a backup of
another config refused with the fix named, a finished run kept unless ``--overwrite``, and
TensorBoard logs never appended across runs."""

import json
import textwrap

import pytest

from kmtl.cli import main
from kmtl.demo import DEMO_CONFIG

CORPUS = DEMO_CONFIG.parent / "corpus"


def write_config(tmp_path, weighting="static", train_file=None, name="rerun", file="config.yaml"):
    train_file = train_file or CORPUS / "sentiment" / "train.tsv"
    text = f"""
    name: {name}
    backbone: tiny
    max_length: 16
    tasks:
      - name: sentiment
        kind: classification
        labels: [negative, positive]
        limit: 16
        train: {{format: tsv, path: {train_file}, text: sentence, label: label}}
    mixture: {{batch_size: 8, length_buckets: [16]}}   # 2 steps an epoch, one shape
    training: {{epochs: 2, learning_rate: 1.0e-3}}
    weighting: {{strategy: {weighting}}}
    output_dir: {tmp_path}/runs
    export: {{enabled: false}}
    """
    path = tmp_path / file
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def bad_data(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\ngood\tpositive\nmeh\tneutral\n", encoding="utf-8")
    return path


def run_cli(capsys, *args):
    code = main(["train", *map(str, args), "--verbose", "0"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def snapshot(run):
    """The bytes of every file a finished run leaves (to check that a refused rerun changed none)."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def event_files(run):
    return sorted((run / "logs" / "train").glob("events.out.tfevents.*"))


def test_data_error_writes_no_run_folder(tmp_path, capsys):
    code, err = run_cli(capsys, write_config(tmp_path, train_file=bad_data(tmp_path)))
    assert code == 2 and "'neutral'" in err
    assert not (tmp_path / "runs").exists()  # not even config.json


def test_stale_backup_finished_run_and_overwrite(tmp_path, capsys, monkeypatch):
    import keras

    from kmtl.training import trainer

    run = tmp_path / "runs" / "rerun"

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:  # after epoch 1's backup (step 2)
                raise RuntimeError("simulated crash")

    real = trainer._fit_from_backup
    monkeypatch.setattr(trainer, "_fit_from_backup",
                        lambda *a, callbacks, **k: real(*a, callbacks=callbacks + [Crash()], **k))
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["train", str(write_config(tmp_path)), "--verbose", "0"])
    monkeypatch.setattr(trainer, "_fit_from_backup", real)
    assert json.loads((run / "backup" / "state.json").read_text())["global_step"] == 2
    crashed = snapshot(run)

    # the config changed (uncertainty weighting has variables static has not): the backup cannot be resumed
    changed = write_config(tmp_path, weighting="uncertainty")
    code, err = run_cli(capsys, changed)
    assert code == 2 and "backup of another config" in err and "--restart" in err and "`name:`" in err
    assert snapshot(run) == crashed and (run / "backup" / "state.json").is_file()  # nothing touched

    assert run_cli(capsys, changed, "--restart")[0] == 0
    assert (run / "run.json").is_file() and not (run / "backup").exists()
    assert len(event_files(run)) == 1  # the crashed run's logs were cleared, not appended to
    finished = snapshot(run)

    for flags in ([], ["--resume"], ["--restart"]):  # a finished run is kept unless --overwrite
        code, err = run_cli(capsys, changed, *flags)
        assert code == 2 and "finished run" in err and "--overwrite" in err
    assert snapshot(run) == finished

    code, err = run_cli(capsys, write_config(tmp_path, train_file=bad_data(tmp_path), file="bad.yaml"), "--overwrite")
    assert code == 2 and "'neutral'" in err
    assert snapshot(run) == finished  # a failed --overwrite leaves the finished run (and its config.json) alone

    assert run_cli(capsys, changed, "--overwrite")[0] == 0
    assert (run / "run.json").is_file() and snapshot(run)["model.weights.h5"] != finished["model.weights.h5"]
    assert len(event_files(run)) == 1  # the old run's curves are gone, not mixed with the new ones


def test_rerun_flags_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "c.yaml", "--restart", "--overwrite"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_plan_run_decisions(tmp_path):
    from kmtl.config import load_config
    from kmtl.training.run_folder import RunFolderError, config_hash, plan_run, start_run

    config = load_config(write_config(tmp_path))
    run = tmp_path / "runs" / "rerun"
    assert plan_run(config, "resume").resume is False and not run.exists()  # planning writes nothing

    (run / "backup").mkdir(parents=True)
    state = {"epoch": 1, "step": 0, "steps_per_epoch": 2, "config_hash": config_hash(config)}
    (run / "backup" / "state.json").write_text(json.dumps(state))
    assert plan_run(config, "auto").resume and plan_run(config, "resume").resume
    assert not plan_run(config, "restart").resume
    other = load_config(write_config(tmp_path, weighting="uncertainty"))
    assert config_hash(other) != config_hash(config)
    assert config_hash(config.model_copy(update={"output_dir": tmp_path / "elsewhere"})) == config_hash(config)
    with pytest.raises(RunFolderError, match="--restart"):
        plan_run(other, "auto")
    assert not plan_run(other, "overwrite").resume

    (run / "logs" / "train").mkdir(parents=True)
    start_run(plan_run(config, "auto"), config)  # a resume keeps the logs and the backup
    assert (run / "logs" / "train").is_dir() and (run / "backup" / "state.json").is_file()
    assert json.loads((run / "config.json").read_text())["name"] == "rerun"
    (run / "run.json").write_text("{}")
    with pytest.raises(RunFolderError, match="--overwrite"):
        plan_run(config, "resume")
    start_run(plan_run(other, "overwrite"), other)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    assert json.loads((run / "config.json").read_text())["weighting"]["strategy"] == "uncertainty"


def test_step_backup_refuses_another_configs_backup(tmp_path):
    from kmtl.training.backup import StaleBackupError, StepBackup

    (tmp_path / "state.json").write_text(json.dumps({"epoch": 1, "step": 0, "steps_per_epoch": 2,
                                                     "config_hash": "aaaa"}))
    assert StepBackup(tmp_path, 2, config_hash="aaaa").resume_point() == (1, 0)
    with pytest.raises(StaleBackupError, match="--restart"):
        StepBackup(tmp_path, 2, config_hash="bbbb").resume_point()
    with pytest.raises(StaleBackupError, match="2 steps per epoch, this run has 3"):
        StepBackup(tmp_path, 3, config_hash="aaaa").resume_point()
