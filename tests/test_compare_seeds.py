"""`kmtl compare --seeds`: one run of every baseline and of the multi-task model per seed, each
cached; mean ± sd, the paired Δ's Student-t 95 % interval ("within noise"), Δm's interval;
tasks at their chance level flagged; the `--seeds` flag.

Cheap by design: a stand-in trainer (no training) returns metrics that depend on the task, the
seed and whether the run is multi-task, as `tests/test_compare.py` does for the cache tests.
"""

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from test_compare import SCORE, write_config, write_data

from kmtl.cli import build_parser, main

# seed -> (single-task, multi-task) primary metric of each task
SENTIMENT_SCORES = {0: (0.80, 0.90), 1: (0.82, 0.91), 2: (0.78, 0.89)}  # Δ +10, +9, +11 points: real
NER_SCORES = {0: (0.50, 0.52), 1: (0.55, 0.50), 2: (0.45, 0.49)}  # Δ +2, -5, +4 points: noise
CHANCE_SCORES = {"sentiment": (0.50, 0.50), "ner": (0.50, 0.60)}  # sentiment: majority class in both


@pytest.fixture(scope="module")
def stand_in_model():
    import kmtl
    from kmtl.backbone import tiny_encoder

    return kmtl.build_model(tiny_encoder(seed=1), [kmtl.tasks.Classification("x", ["a", "b"])])


def seeded_trainer(calls, model, table=None):
    """A `kmtl.training.train` stand-in: records each config; the score of a task is
    ``table[task][seed][multi]`` (by default `SENTIMENT_SCORES` and `NER_SCORES`; a seed they
    lack scores as seed 0)."""
    from kmtl.training import RunResult

    table = table or {"sentiment": SENTIMENT_SCORES, "ner": NER_SCORES}

    def trainer(config, verbose=0, export=None, echo=print, rerun="auto"):
        calls.append(config)
        config.run_dir.mkdir(parents=True, exist_ok=True)
        multi, seed = len(config.tasks) > 1, config.training.seed
        metrics = {}
        for t in config.tasks:
            scores = table[t.name]  # {seed: (single, multi)}, or (single, multi) at every seed
            if isinstance(scores, dict):
                scores = scores.get(seed, scores[0])
            value = scores[int(multi)]
            key = "accuracy" if t.kind == "classification" else "entity_f1"
            metrics[t.name] = {"kind": t.kind, "examples": 16, key: value}
        return RunResult(config.run_dir, metrics, {}, None, 2.0 if multi else 1.0, model, None)

    return trainer


def run_compare(tmp_path, model, calls, seeds, table=None, name="small", **kwargs):
    from kmtl.compare import compare
    from kmtl.config import load_config

    lines = []
    report = compare(load_config(write_config(tmp_path, name=name)), trainer=seeded_trainer(calls, model, table),
                     echo=lines.append, seeds=seeds, **kwargs)
    return report, "\n".join(lines)


def hand_summary(values):
    values = np.asarray(values, dtype=float)
    n, mean, sd = len(values), values.mean(), values.std(ddof=1)
    half = scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, sd, (mean - half, mean + half)


def test_seeds_train_each_seed_once_and_the_cache_serves_reruns(tmp_path, stand_in_model):
    write_data(tmp_path)
    calls = []
    report, out = run_compare(tmp_path, stand_in_model, calls, seeds=3)
    assert [(len(c.tasks), c.training.seed) for c in calls] == [(1, 0), (1, 0), (2, 0), (1, 1), (1, 1), (2, 1),
                                                               (1, 2), (1, 2), (2, 2)]
    # the config's own seed keeps <output_dir>/<name> (kmtl train's folder); the others are siblings
    multi_dirs = [c.run_dir for c in calls if len(c.tasks) > 1]
    assert [d.name for d in multi_dirs] == ["small", "small-seed1", "small-seed2"]
    assert len({c.run_dir for c in calls}) == 9  # no seed writes into another's folder
    assert report["seeds"] == [0, 1, 2]
    assert "== [1/9] seed 0: single-task baseline: sentiment" in out
    assert "== [9/9] seed 2: multi-task model: sentiment, ner" in out
    assert report["cached"] == {"sentiment": [False] * 3, "ner": [False] * 3, "multi_task": [False] * 3}
    assert len(report["runs"]["multi_task"]) == 3 and report["seconds"]["multi_task"] == 6.0

    calls.clear()
    report, out = run_compare(tmp_path, stand_in_model, calls, seeds=3)
    assert calls == [] and all(all(flags) for flags in report["cached"].values())
    assert "[9/9] seed 2: multi-task model: cached in" in out
    # one seed (the default) reuses seed 0's runs; a list trains only the seeds the cache lacks
    run_compare(tmp_path, stand_in_model, calls, seeds=None)
    assert calls == []
    report, _ = run_compare(tmp_path, stand_in_model, calls, seeds=[2, 5])
    assert [(len(c.tasks), c.training.seed) for c in calls] == [(1, 5), (1, 5), (2, 5)]
    assert report["seeds"] == [2, 5] and report["cached"]["multi_task"] == [True, False]


def test_seed_statistics_match_a_hand_computation(tmp_path, stand_in_model):
    write_data(tmp_path)
    report, out = run_compare(tmp_path, stand_in_model, [], seeds=[0, 1, 2])
    for task, scores in (("sentiment", SENTIMENT_SCORES), ("ner", NER_SCORES)):
        d = report["tasks"][task]
        single = [scores[s][0] for s in range(3)]
        multi = [scores[s][1] for s in range(3)]
        diff = [m - s for s, m in zip(single, multi)]
        rel = [100 * (m - s) / s for s, m in zip(single, multi)]
        assert d["n"] == 3 and d["per_seed"]["difference"] == pytest.approx(diff)
        assert (d["single_task"], d["single_task_sd"]) == pytest.approx(hand_summary(single)[:2])
        assert (d["multi_task"], d["multi_task_sd"]) == pytest.approx(hand_summary(multi)[:2])
        mean, sd, ci = hand_summary(diff)
        assert (d["difference"], d["difference_sd"]) == pytest.approx((mean, sd))
        assert d["difference_ci95"] == pytest.approx(list(ci))
        assert d["relative_percent"] == pytest.approx(np.mean(rel))
        assert d["relative_percent_ci95"] == pytest.approx(list(hand_summary(rel)[2]))
    per_seed_dm = [np.mean([100 * (SENTIMENT_SCORES[s][1] - SENTIMENT_SCORES[s][0]) / SENTIMENT_SCORES[s][0],
                            100 * (NER_SCORES[s][1] - NER_SCORES[s][0]) / NER_SCORES[s][0]]) for s in range(3)]
    mean, sd, ci = hand_summary(per_seed_dm)
    assert report["delta_m_per_seed"] == pytest.approx(per_seed_dm)
    assert (report["delta_m"], report["delta_m_sd"]) == pytest.approx((mean, sd))
    assert report["delta_m_ci95"] == pytest.approx(list(ci))
    assert f"Δm = {mean:+.2f} % ± {sd:.2f} over 3 seeds, 95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}] %" in out

    # the saved reports carry the same figures: JSON, Markdown, TensorBoard, error bars in deltas.png
    folder = tmp_path / "runs" / "small" / "compare"
    saved = json.loads((folder / "compare.json").read_text())
    assert saved["tasks"]["ner"]["difference_ci95"] == pytest.approx(report["tasks"]["ner"]["difference_ci95"])
    md = (folder / "compare.md").read_text()
    assert "| task | metric | n | single-task | multi-task | Δ (points) | Δ 95 % CI | Δ (relative) | note |" in md
    s_mean, s_sd, _ = hand_summary([v[0] for v in SENTIMENT_SCORES.values()])
    assert f"| sentiment | accuracy ↑ | 3 | {s_mean:.4f} ± {s_sd:.4f} |" in md
    assert "(seed 0)" not in md and (folder / "deltas.png").stat().st_size > 0


def test_a_delta_whose_interval_holds_zero_is_within_noise(tmp_path, stand_in_model):
    from kmtl.compare.stats import summary, verdict

    write_data(tmp_path)
    report, out = run_compare(tmp_path, stand_in_model, [], seeds=3)
    sentiment, ner = report["tasks"]["sentiment"], report["tasks"]["ner"]
    assert ner["difference_ci95"][0] < 0 < ner["difference_ci95"][1]
    assert ner["within_noise"] is True and ner["verdict"] == "within noise"
    assert sentiment["difference_ci95"][0] > 0
    assert sentiment["within_noise"] is False and sentiment["verdict"] == "multi-task better"
    table = out.split("\nseeds:")[0]
    assert [line.split()[0] for line in table.splitlines() if line.endswith("within noise")] == ["ner"]
    assert [line.split()[0] for line in table.splitlines() if line.endswith("multi-task better")] == ["sentiment"]
    # one value has no spread; a worse Δ with a tight interval is "worse"
    assert verdict(summary([0.3])) == "one seed: no spread" and verdict(summary([])) == "n/a"
    assert verdict(summary([-0.3, -0.31, -0.29])) == "multi-task worse"
    assert summary([1.0, float("nan"), 3.0])["n"] == 2


def test_a_task_at_its_majority_class_is_flagged_and_its_delta_is_not_a_result(tmp_path, stand_in_model):
    from kmtl.compare.chance import constant_predictor
    from kmtl.config import load_config

    write_data(tmp_path)
    # sentiment: 8 of its 16 examples are positive: majority-class accuracy 0.5 on dev
    levels = constant_predictor(load_config(write_config(tmp_path)).task("sentiment"))
    assert levels["metrics"]["accuracy"] == pytest.approx(0.5) and "most frequent training label" in levels["how"]
    assert constant_predictor(load_config(write_config(tmp_path)).task("ner"))["metrics"]["entity_f1"] == 0.0

    one, out = run_compare(tmp_path, stand_in_model, [], seeds=None, table=CHANCE_SCORES)
    assert one["chance"]["sentiment"]["level"] == pytest.approx(0.5)
    assert one["chance"]["sentiment"]["single_task"] and one["chance"]["sentiment"]["multi_task"]
    assert one["chance"]["sentiment"]["delta"] == "not a result"
    assert not one["chance"]["ner"]["single_task"] and not one["chance"]["ner"]["multi_task"]
    assert "⚠ sentiment: accuracy at chance in both runs" in out and "its Δ is not a result" in out
    assert "| sentiment | accuracy ↑ | 0.5000 | 0.5000 | +0.00 | +0.00 % | not a result: at chance in both |" in (
        tmp_path / "runs" / "small" / "compare" / "compare.md").read_text()
    # Δm without the task that learnt nothing: ner alone, +20 %
    assert one["delta_m_without_chance"] == {"left_out": ["sentiment"], "delta_m": pytest.approx(20.0)}

    many, out = run_compare(tmp_path, stand_in_model, [], seeds=2, table=CHANCE_SCORES, retrain=True)
    assert many["tasks"]["sentiment"]["verdict"] == "not a result: at chance in both"
    assert many["delta_m_without_chance"]["left_out"] == ["sentiment"]
    # a collapse in the multi-task model alone is flagged on its side, and its Δ stays a finding
    collapse = {"sentiment": (0.80, 0.505), "ner": (0.50, 0.60)}
    report, out = run_compare(tmp_path, stand_in_model, [], seeds=None, table=collapse, retrain=True)
    assert report["chance"]["sentiment"]["multi_task"] and not report["chance"]["sentiment"]["single_task"]
    assert report["chance"]["sentiment"]["delta"] == "kept" and "delta_m_without_chance" not in report
    assert "⚠ sentiment: multi-task accuracy at chance (0.5050" in out


def test_chance_levels_of_regression_and_a_skewed_label_set(tmp_path):
    from kmtl.compare.chance import at_chance, chance_levels, level_of
    from kmtl.config import load_config

    write_data(tmp_path)
    rows = ["sentence\tlabel"] + [f"text {i}\t{'pos' if i % 4 else 'neg'}" for i in range(16)]
    (tmp_path / "skew.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    skew = """
  - name: skew
    kind: classification
    train: {format: tsv, path: skew.tsv, text: sentence, label: label}
    dev: {format: tsv, path: skew.tsv, text: sentence, label: label}"""
    config = load_config(write_config(tmp_path, name="mixed", tasks=skew + SCORE))
    levels = chance_levels(config, tmp_path / "cache")
    assert levels["skew"]["metrics"]["accuracy"] == pytest.approx(0.75)  # always "pos"
    assert levels["skew"]["metrics"]["macro_f1"] == pytest.approx((2 * 0.75 / 1.75 + 0) / 2)
    train = [i % 5 for i in range(16)]
    assert levels["score"]["metrics"]["mse"] == pytest.approx(np.mean((np.array(train) - np.mean(train)) ** 2))
    assert level_of(levels["score"], "pearson") == 0.0 and level_of(levels["skew"], "macro_f1") == pytest.approx(0.4286, 1e-3)
    assert at_chance(0.05, "pearson", 0.0) and not at_chance(-0.3, "pearson", 0.0)
    assert at_chance(0.755, "accuracy", 0.75) and not at_chance(0.77, "accuracy", 0.75)
    assert at_chance(2.0, "mse", 2.0) and not at_chance(1.5, "mse", 2.0) and not at_chance(None, "accuracy", 0.5)
    assert len(list((tmp_path / "cache" / "chance").glob("*.json"))) == 2  # cached per task
    assert chance_levels(config, tmp_path / "cache") == json.loads(json.dumps(levels))


def test_one_seed_keeps_the_one_seed_report(tmp_path, stand_in_model):
    from test_compare import stand_in_trainer

    from kmtl.compare import compare
    from kmtl.config import load_config

    write_data(tmp_path)
    lines = []
    report = compare(load_config(write_config(tmp_path)), trainer=stand_in_trainer([], stand_in_model),
                     echo=lines.append, seeds=1)
    # what tests/test_compare.py expects of a one-seed report, unchanged
    assert set(report["tasks"]["ner"]) == {"metric", "lower_is_better", "single_task", "multi_task", "difference",
                                           "relative_percent"}
    assert {"tasks", "delta_m", "seconds", "parameters", "metrics", "cached", "command", "date"} <= set(report)
    assert report["seeds"] == [0] and report["delta_m"] == pytest.approx(6.25)
    assert report["seconds"] == {"single_task": {"sentiment": 1.0, "ner": 1.0}, "single_task_total": 2.0,
                                 "multi_task": 2.0}
    assert report["metrics"]["multi_task"]["sentiment"]["accuracy"] == pytest.approx(0.9)
    assert not any("_sd" in key or "ci95" in key for key in report)
    out = "\n".join(lines)
    assert "single-task baseline: sentiment" in out and "seed 0:" not in out and "[1/3]" in out
    assert "one seed (training.seed 0): no spread" in out
    md = (tmp_path / "runs" / "small" / "compare" / "compare.md").read_text()
    assert "| task | metric | single-task | multi-task | Δ (points) | Δ (relative) |\n|---|---|---:|---:|---:|---:|" in md
    assert "| sentiment | accuracy ↑ | 0.8000 | 0.9000 | +10.00 | +12.50 % |" in md


def test_seeds_flag_parses_counts_and_lists_and_refuses_bad_values(tmp_path, capsys, monkeypatch):
    import kmtl.compare

    parser = build_parser()
    assert parser.parse_args(["compare", "c.yaml", "--seeds", "2"]).seeds == 2
    assert parser.parse_args(["compare", "c.yaml", "--seeds", "0,3"]).seeds == [0, 3]
    assert parser.parse_args(["compare", "c.yaml"]).seeds is None

    write_data(tmp_path)
    config = write_config(tmp_path)
    seen = []
    monkeypatch.setattr(kmtl.compare, "compare", lambda config, **kwargs: seen.append(kwargs))
    assert main(["compare", str(config), "--seeds", "0,3"]) == 0
    assert seen[-1]["seeds"] == [0, 3] and seen[-1]["command"].endswith("--seeds 0,3")
    assert main(["compare", str(config), "--seeds", "2", "-q"]) == 0 and seen[-1]["seeds"] == 2

    for bad, why in (("0", "a count of at least 1"), ("a", "'a' is not a count"), ("1,x", "not a list of integer"),
                     ("1,1", "given twice")):
        with pytest.raises(SystemExit) as exit_:
            main(["compare", str(config), "--seeds", bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --seeds" in err and why in err and "Traceback" not in err
    assert len(seen) == 2  # nothing ran


def test_resolve_seeds_from_python():
    from kmtl.compare import resolve_seeds
    from kmtl.errors import KmtlError

    assert resolve_seeds(4, None) == [4] and resolve_seeds(4, 2) == [4, 5] and resolve_seeds(4, (9, 1)) == [9, 1]
    for bad in (0, [], [1, 1], [-1], [1.5], True):
        with pytest.raises(KmtlError, match="seed"):
            resolve_seeds(0, bad)
