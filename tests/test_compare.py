"""`bench compare`: flags a broken method variant, not a re-run with other seeds; refuses
mismatched inputs with exit code 2; says "inconclusive" (exit 3), never "no regression",
when the interval straddles the tolerance; states the minimum detectable drop; compares a
renamed variant with --pair. The statistics are checked against scipy and by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from scipy import stats
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UserError
from bench.report import results
from bench.report.compare import EXIT_INCONCLUSIVE, compare, mde, paired, verdict_of, welch
from bench.report.publish import publish

# A method plugin written like a third party's: it imports only `bench`. The broken
# variant has a realistic bug: it trains on the spurious attribute instead of the label.
PROBE = """
import bench


@bench.method
class Probe(bench.Method):
    name = "probe"
    description = "ERM, as a plugin under test"
    group_labels = frozenset({{"train"}})  # may read train.a (which the bug does)

    def search_space(self):
        return bench.training_space()

    def fit(self, train, val, ctx):
        head = ctx.make_head()
        data = {fix}
        ctx.trainer.fit(head, data, bench.TrainConfig.from_params(ctx.params))
        return bench.Predictor(head)
"""
GOOD = PROBE.format(fix="train")
BROKEN = PROBE.format(fix="bench.FeatureSplit(train.name, train.x, train.a, train.a, train.g, "
                          "train.eval_masks, train.n_classes, train.n_groups)  # the bug: y=a")
SMALL = ["--dataset-opt", "n_train=1000", "--dataset-opt", "n_val=400",
         "--dataset-opt", "n_test=800"]


def bench_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Baseline (seeds 0-2), the same configuration with seeds 3-5, and the broken variant."""
    tmp = tmp_path_factory.mktemp("cmp")
    env = {**os.environ, "SPURBENCH_CACHE": str(tmp / "cache"), "MLFLOW_TRACKING_URI": "",
           "OMP_NUM_THREADS": "1"}  # three small runs side by side, one thread each
    procs = {}
    for name, code, extra in (
        ("good", GOOD, []), ("reseeded", GOOD, ["--seed-offset", "3"]), ("broken", BROKEN, []),
    ):
        plugins = tmp / f"plugins-{name}"
        plugins.mkdir()
        (plugins / "probe.py").write_text(textwrap.dedent(code))
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "run", "--methods", "probe", "--plugins",
             str(plugins), "--trials", "0", "--params", "probe.epochs=5", "--seeds", "3",
             "--device", "cpu", "--runs-dir",
             str(tmp / "runs"), "--out", str(tmp / "runs" / name), "--no-progress", *SMALL,
             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    out = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        out[name] = tmp / "runs" / name
    publish(pl.read_parquet(out["good"] / "results.parquet"), tmp / "boards", plots=False)
    out["board"] = tmp / "boards" / "synthetic.json"
    return out


def test_seed_offset_is_part_of_the_run(runs):
    from bench.run.runner import RunConfig

    seeds = pl.read_parquet(runs["reseeded"] / "results.parquet")["seed"].sort().to_list()
    assert seeds == [3, 4, 5]
    assert RunConfig(seed_offset=3).identity() != RunConfig().identity()  # own run directory


def test_broken_variant_is_flagged(runs, tmp_path):
    report = tmp_path / "pr-comment.md"
    res = bench_cli("compare", str(runs["board"]), str(runs["broken"]), "--tolerance", "1",
                    "--report", str(report))
    assert res.returncode == 1, res.stdout + res.stderr
    text = report.read_text()
    assert "regression(s)" in text and "`probe`" in text and "REGRESSED" in text
    cmp = compare(runs["board"], runs["broken"], tolerance=1.0)
    (m,) = cmp.methods
    assert m.regressed and m.test == "paired t" and m.n_paired == 3
    assert m.wga.ci[1] < -1.0 and m.wga.delta < -10


def test_rerun_with_other_seeds_is_not_flagged(runs, tmp_path):
    cmp = compare(runs["board"], runs["reseeded"], tolerance=1.0)
    (m,) = cmp.methods
    # no seed matches, so the unpaired test decides: a real test, not a free pass
    assert m.n_paired == 0 and m.test == "Welch t" and m.wga.ci is not None
    assert not m.regressed
    # 3 unpaired seeds a side cannot clear a 1-point tolerance unless the CI is that tight
    straddles = m.wga.ci[0] < -1.0
    assert cmp.exit_code == (EXIT_INCONCLUSIVE if straddles else 0)
    assert m.mde is not None and m.mde > 1.0
    # with a tolerance wider than the whole CI, it passes
    wide = str(round(abs(m.wga.ci[0]) + 1))
    res = CliRunner().invoke(app, ["compare", str(runs["board"]), str(runs["reseeded"]),
                                   "--tolerance", wide, "--report", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert "No regression" in (tmp_path / "r.md").read_text()


def test_same_results_compare_equal(runs):
    cmp = compare(runs["board"], runs["good"])
    (m,) = cmp.methods
    assert m.test == "paired t" and m.n_paired == 3 and m.wga.delta == 0 and not m.regressed
    assert cmp.exit_code == 0


def test_method_that_stops_running_is_a_regression(runs, tmp_path):
    table = pl.read_parquet(runs["good"] / "results.parquet").with_columns(
        pl.lit("failed").alias("status"), pl.lit("seed: boom").alias("reason"))
    table.write_parquet(tmp_path / "results.parquet")
    cmp = compare(runs["board"], tmp_path)
    assert cmp.exit_code == 1 and "failed in new" in cmp.methods[0].verdict


def _edited(board: Path, tmp_path: Path, **changes) -> Path:
    doc = json.loads(board.read_text())
    doc.update(changes)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("field,value,message", [
    ("dataset", "colored-digits", "differ in dataset"),
    ("encoder", "openclip:RN50:openai", "differ in encoder"),
    ("dataset_fingerprint", "0123456789abcdef", "differ in dataset contents"),
])
def test_mismatched_inputs_are_refused(runs, tmp_path, field, value, message):
    other = _edited(runs["board"], tmp_path, **{field: value})
    res = CliRunner().invoke(app, ["compare", str(runs["board"]), str(other)])
    assert isinstance(res.exception, UserError) and message in str(res.exception)


def test_bad_input_exits_2(runs, tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    res = bench_cli("compare", str(runs["board"]), str(garbage))
    assert res.returncode == 2 and res.stderr.startswith("error:")
    assert "garbage.json" in "".join(res.stderr.split())
    res = CliRunner().invoke(app, ["compare", str(runs["board"]), str(tmp_path / "missing")])
    assert isinstance(res.exception, UserError) and "missing" in str(res.exception)


# -- the statistics ------------------------------------------------------------------------
def test_paired_matches_scipy():
    base = {0: 70.0, 1: 72.0, 2: 71.0, 3: 69.5}
    new = {0: 66.0, 1: 69.0, 2: 66.5, 3: 67.0, 7: 90.0}  # seed 7 has no partner: left out
    c = paired(base, new, alpha=0.05)
    ref = stats.ttest_rel([new[s] for s in range(4)], [base[s] for s in range(4)])
    ci = ref.confidence_interval(0.95)
    assert c.p == pytest.approx(ref.pvalue) and c.delta == pytest.approx(-3.5)
    assert c.ci == pytest.approx((ci.low, ci.high))


def test_welch_matches_scipy():
    base, new = [70.0, 72.0, 71.0], [66.0, 69.5, 66.5, 67.0]
    c = welch(base, new, alpha=0.1)
    ref = stats.ttest_ind(new, base, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert c.p == pytest.approx(ref.pvalue) and c.ci == pytest.approx((ci.low, ci.high))


def test_constant_differences_are_exact():
    c = paired({0: 50.0, 1: 60.0}, {0: 45.0, 1: 55.0}, alpha=0.05)
    assert c.ci == (-5.0, -5.0) and c.p == 0.0


def test_too_few_seeds_claim_nothing(runs, tmp_path):
    table = pl.read_parquet(runs["broken"] / "results.parquet").filter(pl.col("seed") == 0)
    table.write_parquet(tmp_path / "results.parquet")
    cmp = compare(runs["board"], tmp_path)
    (m,) = cmp.methods
    assert m.test == "none" and m.wga.ci is None and m.wga.delta < -10
    # no interval: neither a regression nor a pass
    assert not m.regressed and m.inconclusive and cmp.exit_code == EXIT_INCONCLUSIVE
    assert "INCONCLUSIVE" in m.verdict and m.mde is None


def test_method_absent_from_new_is_reported_not_flagged(runs, tmp_path):
    good = pl.read_parquet(runs["good"] / "results.parquet")
    both = pl.concat([good, good.with_columns(pl.lit("other").alias("method"))])
    both.write_parquet(tmp_path / "results.parquet")
    cmp = compare(tmp_path, runs["good"])
    verdicts = {m.method: m.verdict for m in cmp.methods}
    assert verdicts["other"] == "not in new" and cmp.exit_code == 0


def test_differing_trial_budget_and_label_use_are_noted(runs, tmp_path):
    """A run tuned with 8 trials against a board published at defaults (0 trials) must say
    so: part of such a change comes from the search, not the method."""
    good = pl.read_parquet(runs["good"] / "results.parquet")
    good.with_columns(pl.lit(8).alias("trials"), pl.lit("train,val").alias("group_labels_used")
                      ).write_parquet(tmp_path / "results.parquet")
    cmp = compare(runs["board"], tmp_path)
    assert "tuning trials 0 → 8 for probe (the search differs" in " ".join(cmp.notes)
    assert "group labels used train → train,val for probe" in " ".join(cmp.notes)
    res = CliRunner().invoke(app, ["compare", str(runs["board"]), str(tmp_path)])
    assert "tuning trials 0 → 8" in res.output
    assert not method_notes_of(runs["board"], runs["good"])


def method_notes_of(a: Path, b: Path) -> list[str]:
    return [n for n in compare(a, b).notes if " for " in n]


# -- three verdicts, MDE and --pair on constructed result tables ------------------------------
def _side(tmp_path: Path, name: str, wga: dict[str, dict[int, float]]) -> Path:
    """A run directory whose results.parquet holds the given test WGA (in %) per method and
    seed; average accuracy is WGA + 10."""
    rows = [
        {"run": name, "dataset": "synthetic", "dataset_fingerprint": "f" * 16,
         "encoder": "identity", "selection": "worst-group", "head": "linear",
         "method": method, "base_method": method, "seed": seed, "status": "ok",
         "trials": 0, "test_wga": v / 100, "test_avg": (v + 10) / 100,
         "created": "2025-01-01T00:00:00"}
        for method, seeds in wga.items() for seed, v in seeds.items()
    ]
    folder = tmp_path / name
    folder.mkdir()
    results.make_frame(rows).write_parquet(folder / "results.parquet")
    return folder


BASE = {0: 80.0, 1: 78.0, 2: 82.0, 3: 79.0, 4: 81.0}


def _shifted(diffs: list[float]) -> dict[int, float]:
    return {s: BASE[s] + d for s, d in zip(BASE, diffs, strict=True)}


@pytest.mark.parametrize("diffs,verdict,code", [
    ([-5.0, -6.0, -5.5, -4.5, -5.0], "REGRESSED", 1),  # CI ≈ [-6.2, -4.2]: below -1
    ([0.1, -0.2, 0.0, 0.2, -0.1], "no regression", 0),  # CI ≈ [-0.2, +0.2]: above -1
    ([-4.0, 3.0, -1.0, 2.0, -5.0], "INCONCLUSIVE", 3),  # mean -1, CI ≈ [-5.0, +3.0]
    ([6.0, -4.0, 3.0, -2.0, 2.0], "INCONCLUSIVE", 3),  # mean +1 looks fine; CI straddles -1
])
def test_three_verdicts(tmp_path, diffs, verdict, code):
    base = _side(tmp_path, "base", {"sfr": BASE})
    new = _side(tmp_path, "new", {"sfr": _shifted(diffs)})
    cmp = compare(base, new, tolerance=1.0)
    (m,) = cmp.methods
    assert m.test == "paired t" and m.n_paired == 5
    assert m.verdict.startswith(verdict) and cmp.exit_code == code
    lo, hi = m.wga.ci
    assert m.regressed == (hi < -1) and m.inconclusive == (lo < -1 <= hi)
    res = CliRunner().invoke(app, ["compare", str(base), str(new), "--tolerance", "1"])
    assert res.exit_code == code, res.output
    if code == 3:
        assert "inconclusive" in res.output and "no regression" not in res.output
        assert f"drops of {m.mde:.1f}+ points" in " ".join(res.output.split())


def test_straddling_interval_never_passes():
    assert verdict_of((-1.5, 3.0), 1.0) == "inconclusive"
    assert verdict_of((-1.0, 3.0), 1.0) == "no regression"  # at the tolerance: passes
    assert verdict_of((-3.0, -1.01), 1.0) == "regression"
    assert verdict_of((-3.0, -1.0), 1.0) == "inconclusive"
    assert verdict_of(None, 1.0) == "inconclusive"
    assert verdict_of((0.0, 0.0), 0.0) == "no regression"


def test_regression_beats_inconclusive_in_the_exit_code(tmp_path):
    base = _side(tmp_path, "base", {"a": BASE, "b": BASE})
    new = _side(tmp_path, "new", {"a": _shifted([-5.0, -6.0, -5.5, -4.5, -5.0]),
                                  "b": _shifted([-4.0, 3.0, -1.0, 2.0, -5.0])})
    cmp = compare(base, new)
    assert [m.method for m in cmp.regressions] == ["a"]
    assert [m.method for m in cmp.inconclusive] == ["b"] and cmp.exit_code == 1


def test_mde_by_hand():
    # d = 1, 2, 3, 4: sd = 1.290994, SE = sd/2 = 0.645497; t(0.975, 3) = 3.182446,
    # t(0.8, 3) = 0.978472: MDE = 1 + (3.182446 + 0.978472) * 0.645497 = 3.685861
    assert mde(0.6454972, 3, 0.05, 0.8, 1.0) == pytest.approx(3.685861, abs=1e-5)
    c = paired({s: 50.0 for s in range(4)}, {s: 50.0 + s + 1 for s in range(4)}, 0.05)
    assert c.se == pytest.approx(0.6454972) and c.df == 3
    # the case: 3 seeds, CI [-15.0, +6.0] → SE = 10.5 / t(0.975, 2) = 2.440,
    # MDE = 1 + (4.302653 + 1.060660) * 2.440355 = 14.088: such a gate cannot see a 4.5 drop
    se = 10.5 / stats.t.ppf(0.975, 2)
    assert mde(se, 2, 0.05, 0.8, 1.0) == pytest.approx(14.088, abs=1e-3)
    # Welch: SE and Welch–Satterthwaite df from the two samples
    w = welch([70.0, 72.0, 71.0], [66.0, 69.5, 66.5, 67.0], 0.05)
    vb, vn = stats.tvar([70.0, 72.0, 71.0]) / 3, stats.tvar([66.0, 69.5, 66.5, 67.0]) / 4
    assert w.se == pytest.approx((vb + vn) ** 0.5)
    assert w.df == pytest.approx((vb + vn) ** 2 / (vb**2 / 2 + vn**2 / 3))
    assert mde(0.0, 4, 0.05, 0.8, 1.5) == 1.5  # no seed noise: any drop past the tolerance


def test_mde_is_in_the_table(tmp_path):
    base = _side(tmp_path, "base", {"sfr": BASE})
    new = _side(tmp_path, "new", {"sfr": _shifted([1.0, 2.0, 3.0, 4.0, 0.0])})
    cmp = compare(base, new, tolerance=1.0, power=0.9)
    (m,) = cmp.methods
    d = [1.0, 2.0, 3.0, 4.0, 0.0]
    se = stats.tstd(d) / 5 ** 0.5
    assert m.mde == pytest.approx(1 + (stats.t.ppf(0.975, 4) + stats.t.ppf(0.9, 4)) * se)
    res = CliRunner().invoke(app, ["compare", str(base), str(new), "--power", "0.9"])
    assert "MDE" in res.output and f"{m.mde:.1f}" in res.output and "90% power" in res.output


def test_pair_compares_a_renamed_variant(tmp_path):
    base = _side(tmp_path, "base", {"sfr": BASE, "erm": BASE})
    new = _side(tmp_path, "new", {"sfr-v2": _shifted([-5.0, -6.0, -5.5, -4.5, -5.0])})
    by_name = compare(base, new)  # matched by name only: the variant is never judged
    assert {m.method: m.verdict for m in by_name.methods}["sfr"] == "not in new"
    assert by_name.exit_code == 0
    cmp = compare(base, new, pairs=[("sfr", "sfr-v2")])
    (m,) = cmp.methods
    assert m.method == "sfr → sfr-v2" and m.n_paired == 5 and m.regressed
    assert m.wga.delta == pytest.approx(-5.2) and cmp.exit_code == 1
    assert "not compared (--pair given): erm" in cmp.notes
    res = CliRunner().invoke(app, ["compare", str(base), str(new), "--pair", "sfr=sfr-v2"])
    assert res.exit_code == 1 and "sfr → sfr-v2" in res.output
    # one run holding both: OLD and NEW read from the same table
    both = _side(tmp_path, "both", {"sfr": BASE, "sfr-v2": _shifted([0.1, -0.1, 0.0, 0.1, 0.0])})
    assert compare(both, both, pairs=[("sfr", "sfr-v2")]).exit_code == 0


@pytest.mark.parametrize("pair,message", [
    ("sfr", "expected OLD=NEW"),
    ("nope=sfr-v2", "no method 'nope' in BASELINE"),
    ("sfr=nope", "no method 'nope' in NEW"),
])
def test_bad_pair_is_refused(tmp_path, pair, message):
    base = _side(tmp_path, "base", {"sfr": BASE})
    new = _side(tmp_path, "new", {"sfr-v2": BASE})
    res = CliRunner().invoke(app, ["compare", str(base), str(new), "--pair", pair])
    assert isinstance(res.exception, UserError) and message in str(res.exception)


def test_bad_power_is_refused(tmp_path):
    base = _side(tmp_path, "base", {"sfr": BASE})
    with pytest.raises(UserError, match="--power"):
        compare(base, base, power=1.5)
