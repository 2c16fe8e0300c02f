"""`bench gate`: the stopping rule keeps its error rate under optional stopping (checked by
simulation, alongside a naive rule that does not); on the embedded synthetic dataset it
catches SFR without its reweighting as a regression within the seed cap, passes a method
against itself (Δ exactly 0 on paired seeds: the pairing is real), pairs a renamed variant
seed for seed, and resumes from its rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UserError
from bench.plugins import registry
from bench.report.compare import t_quantile, verdict_of
from bench.report.gate import (
    Design,
    GateConfig,
    design,
    gate,
    look,
    parse_arm,
    schedule,
    sequential,
)
from bench.run.runner import Run

# -- the stopping rule, by simulation ----------------------------------------------------------
ALPHA, TOL, SIGMA, SIMS = 0.05, 1.0, 3.6, 2000
DESIGN = design(TOL, ALPHA, 0.8, per_round=5, max_seeds=20)  # the command's defaults
SLACK = 0.01  # ~3 binomial SEs at 2.5% over 2000 sequences


def _sequences(mean: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, SIGMA, size=(SIMS, DESIGN.cap))


def _rate(seqs: np.ndarray, verdict: str, rule=sequential) -> float:  # noqa: ANN001
    return float(np.mean([rule(list(s), DESIGN).verdict == verdict for s in seqs]))


def _naive(diffs: list[float], d: Design) -> object:
    """Peeking without correction: a full-alpha interval at every look."""
    single = Design(d.tolerance, d.alpha, d.power, (d.cap,))
    for k, n in enumerate(d.looks, start=1):
        lk = look(diffs[:n], single, k)
        if lk.verdict != "inconclusive":
            return lk
    return lk


def test_schedule_is_fixed_in_advance():
    assert schedule(5, 20) == (5, 10, 15, 20)
    assert schedule(4, 10) == (4, 8, 10)
    assert DESIGN.alpha_look == pytest.approx(0.0125)


def test_false_regression_rate_is_kept_under_optional_stopping():
    """At the worst case of "no regression" (true Δ exactly −tolerance), the gate calls a
    regression in at most alpha/2 of the sequences, although it looks up to four times."""
    seqs = _sequences(-TOL, seed=1)
    assert _rate(seqs, "regression") <= ALPHA / 2 + SLACK
    # the simulation can see the inflation it guards against: uncorrected peeking
    assert _rate(seqs, "regression", _naive) > ALPHA / 2 + SLACK


def test_false_pass_rate_is_kept_under_optional_stopping():
    """Just beyond the tolerance (a real regression), the gate says "no regression" in at
    most alpha/2 of the sequences."""
    seqs = _sequences(-TOL - 1e-9, seed=2)
    assert _rate(seqs, "no regression") <= ALPHA / 2 + SLACK
    assert _rate(seqs, "no regression", _naive) > ALPHA / 2 + SLACK


def test_stated_mde_at_the_cap_is_detected():
    """A true drop equal to the MDE the gate states for its cap (from the true sd) is caught
    with about the stated 80% power or more (earlier looks only add chances)."""
    se = SIGMA / DESIGN.cap**0.5
    df = DESIGN.cap - 1
    drop = TOL + (t_quantile(1 - DESIGN.alpha_look / 2, df) + t_quantile(0.8, df)) * se
    assert _rate(_sequences(-drop, seed=3), "regression") >= 0.75


def test_look_interval_uses_the_split_alpha():
    diffs = [-4.0, -6.0, -3.0, -5.0, -2.0]
    lk = look(diffs, DESIGN, 1)
    se = np.std(diffs, ddof=1) / 5**0.5
    half = t_quantile(1 - 0.0125 / 2, 4) * se
    assert lk.ci == pytest.approx((-4 - half, -4 + half))
    assert lk.verdict == verdict_of(lk.ci, TOL)
    assert look([], DESIGN, 1).verdict == "inconclusive"  # no pairs, no claim
    assert look([0.0, 0.0], DESIGN, 1).ci == (0.0, 0.0)


# -- arm syntax --------------------------------------------------------------------------------
def test_arm_syntax():
    registry.load_plugins([])
    arm = parse_arm("sfr:dropout=0,epochs=5", "--new")
    assert arm.entry.name == "sfr" and arm.given == {"dropout": 0.0, "epochs": 5}
    assert arm.params["dropout"] == 0.0 and arm.params["disagreement"] == "tv"  # defaults kept
    variant = parse_arm("sfr-nodropout", "--new")
    assert variant.params == {**parse_arm("sfr", "--old").params, "dropout": 0.0}


@pytest.mark.parametrize("args,message", [
    (["--new", "sfr:dropout"], "expected METHOD or METHOD:KEY=VALUE"),
    (["--new", "sfr:nope=1"], "has no tunable parameter 'nope'"),
    (["--new", "sfrr"], "unknown method 'sfrr'"),
    (["--new", "sfr:dropout=2"], "dropout"),
    (["--new", "sfr", "--seeds-per-round", "1"], "--seeds-per-round 1"),
    (["--new", "sfr", "--max-seeds", "3"], "--max-seeds 3"),
    (["--new", "sfr", "--alpha", "0"], "--alpha 0"),
])
def test_bad_input_is_refused(args, message, tmp_path):
    res = CliRunner().invoke(app, ["gate", "--old", "sfr", *args, "--out", str(tmp_path / "g")])
    assert isinstance(res.exception, UserError) and message in str(res.exception), res.output


# -- the gate on synthetic ---------------------------------------------------------------------
def _cfg(tmp_path, old: str, new: str, name: str) -> GateConfig:  # noqa: ANN001
    return GateConfig(old=old, new=new, device="cpu", out=tmp_path / name,
                      runs_dir=tmp_path / "runs")


# SFR without its instance reweighting (= the sfr-noweights variant): a drop of tens of
# points on synthetic, so the gate must call it a regression at its first looks. (The
# issue's own example, dropout=0, costs ~3-5 points there: whether 20 paired seeds decide
# it against a 1-point tolerance depends on the draw, so it is not a test of the gate.)
ABLATION = "sfr:weighting=none,group_norm=False"


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """sfr against sfr without its instance reweighting: the command as a user runs it."""
    tmp = tmp_path_factory.mktemp("gate")
    res = CliRunner().invoke(app, ["gate", "--old", "sfr", "--new", ABLATION,
                                   "--device", "cpu", "--out", str(tmp / "ablation")])
    return tmp, res


def test_reweighting_ablation_is_a_regression_within_the_cap(ablation):
    tmp, res = ablation
    assert res.exit_code == 1, res.output
    doc = json.loads((tmp / "ablation" / "gate.json").read_text())
    assert doc["verdict"] == "regression" and len(doc["seeds"]) <= doc["design"]["looks"][-1]
    final = doc["looks"][-1]
    assert final["ci"][1] < -1.0 and final["n"] == len(doc["seeds"])
    assert "look 1/4" in res.output and "verdict: regression" in res.output
    assert "minimum detectable drop" in res.output


def test_resumes_from_its_rows(ablation, monkeypatch):
    tmp, first = ablation

    def no_fit(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a finished seed was fitted again")

    monkeypatch.setattr(Run, "fit", no_fit)
    res = CliRunner().invoke(app, ["gate", "--old", "sfr", "--new", ABLATION,
                                   "--device", "cpu", "--out", str(tmp / "ablation")])
    assert res.exit_code == 1, res.output
    assert res.output.splitlines()[:2] == first.output.splitlines()[:2]


def test_other_configuration_in_the_same_out_is_refused(ablation):
    tmp, _ = ablation
    res = CliRunner().invoke(app, ["gate", "--old", "sfr", "--new", "sfr:dropout=0.1",
                                   "--device", "cpu", "--out", str(tmp / "ablation")])
    assert isinstance(res.exception, UserError) and "another configuration" in str(res.exception)


def test_method_against_itself_is_no_regression_with_delta_exactly_zero(tmp_path):
    result = gate(_cfg(tmp_path, "sfr", "sfr", "same"))
    assert result.verdict == "no regression" and result.exit_code == 0
    (lk,) = result.looks  # decided at the first look
    assert lk.delta == 0.0 and lk.ci == (0.0, 0.0)  # same seed, same data order: identical


def test_renamed_variant_is_paired_seed_for_seed(ablation, tmp_path):
    """`sfr-noweights` is `sfr` without reweighting under another name; its own seed stream
    would differ (the harness derives it from the method name), so the gate draws both arms
    from OLD's: its differences equal those of `sfr:weighting=none,...` exactly."""
    tmp, _ = ablation
    result = gate(_cfg(tmp_path, "sfr", "sfr-noweights", "renamed"))
    by_params = json.loads((tmp / "ablation" / "gate.json").read_text())
    assert [lk.delta for lk in result.looks] == [lk["delta"] for lk in by_params["looks"]]
    assert result.verdict == "regression"


def test_gate_rows_feed_compare(ablation):
    from bench.report.compare import compare

    tmp, _ = ablation
    cmp = compare(tmp / "ablation" / "old", tmp / "ablation" / "new")
    (m,) = cmp.methods
    assert m.test == "paired t" and m.n_paired >= 5 and m.wga.delta < 0
