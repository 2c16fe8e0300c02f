"""`bench compare BASELINE NEW`: per-method change in test WGA and average accuracy, with
a test over seeds — the regression gate a lab puts in CI when it changes a method.

The rule (also printed in every report):
- Seeds are paired by seed number (the same seed means the same initialisation and batch
  order, so pairing removes most seed noise). With at least 2 seeds ok on both sides:
  paired t-test on the per-seed differences. With fewer than 2 matching seeds but at least
  2 seeds on each side (e.g. a re-run with --seed-offset): Welch's unpaired t-test.
  Otherwise no test: the change is reported, no significance is claimed, nothing flagged.
- The confidence interval (CI) is the two-sided (1 - alpha) t interval of the change in
  points (new - baseline, in %); alpha = 0.05 unless --alpha. When every difference is
  the same (deterministic methods) the CI is that single value.
- A method REGRESSED when its whole WGA CI lies below -tolerance: its WGA fell by more
  than the tolerance with significance (a two-sided test at alpha of "drop = tolerance").
  A method ok in the baseline that has rows but no ok seed in NEW (failed or skipped)
  also counts as a regression; one absent from NEW (a run of fewer methods) does not.
  Average accuracy is reported, never gated.
Exit codes: 0 no regression, 1 a regression, 2 bad input (bench.errors.UserError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from bench.errors import UserError
from bench.publish import read_table, split_boards

DEFAULT_ALPHA = 0.05
DEFAULT_TOLERANCE = 1.0  # points of WGA
IDENTITY = ("dataset", "encoder", "selection", "dataset_fingerprint")


@dataclass
class Side:
    """One side of a comparison: the rows of exactly one (dataset, encoder, selection)."""

    path: Path
    table: pl.DataFrame

    def value(self, col: str):  # noqa: ANN201
        return self.table[col][0]

    def ok_seeds(self, method: str, metric: str) -> dict[int, float]:
        rows = self.table.filter((pl.col("method") == method) & (pl.col("status") == "ok"))
        return {s: 100 * v for s, v in rows.select("seed", f"test_{metric}").iter_rows()}


@dataclass
class Change:
    """The change new - baseline of one metric, in points, with its test."""

    base_mean: float | None
    new_mean: float | None
    delta: float | None
    ci: tuple[float, float] | None = None
    p: float | None = None  # two-sided p-value of "no change"


@dataclass
class MethodResult:
    method: str
    n_base: int
    n_new: int
    n_paired: int
    test: str  # "paired t" | "Welch t" | "none"
    wga: Change
    avg: Change
    verdict: str
    regressed: bool = False


@dataclass
class Comparison:
    baseline: Side
    new: Side
    tolerance: float
    alpha: float
    methods: list[MethodResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MethodResult]:
        return [m for m in self.methods if m.regressed]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def load_side(path: Path, flag: str) -> Side:
    """A leaderboard JSON, a run directory or a results.parquet holding one board."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {path}: no such file or run directory")
    table = read_table(path, flag)
    if table.height == 0:
        raise UserError(f"{flag} {path}: holds no results")
    parts = split_boards(table)
    if len(parts) != 1:
        raise UserError(
            f"{flag} {path}: holds {len(parts)} leaderboards ({', '.join(p.stem for p in parts)});"
            " give one leaderboard JSON or one run directory"
        )
    return Side(path, parts[0].table)


def check_comparable(base: Side, new: Side) -> None:
    """Refuse to compare numbers measured on different data, encoders or selection rules."""
    for col in IDENTITY:
        a, b = base.value(col), new.value(col)
        if a != b:
            what = "dataset contents (fingerprint)" if col == "dataset_fingerprint" else col
            raise UserError(
                f"BASELINE {base.path} and NEW {new.path} differ in {what}: {a} vs {b}; "
                "compare results of the same dataset, encoder and selection rule"
            )


def _t(df: float, alpha: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, df))


def _constant(delta: float) -> tuple[tuple[float, float], float]:
    return (delta, delta), (0.0 if delta != 0 else 1.0)


def paired(base: dict[int, float], new: dict[int, float], alpha: float) -> Change:
    seeds = sorted(set(base) & set(new))
    d = [new[s] - base[s] for s in seeds]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    b, w = _mean([base[s] for s in seeds]), _mean([new[s] for s in seeds])
    if sd == 0:
        ci, p = _constant(mean)
        return Change(b, w, mean, ci, p)
    from scipy import stats

    half = _t(n - 1, alpha) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(
        [new[s] for s in seeds], [base[s] for s in seeds]).pvalue)
    return Change(b, w, mean, (mean - half, mean + half), p)


def welch(base: list[float], new: list[float], alpha: float) -> Change:
    mb, mn = _mean(base), _mean(new)
    vb, vn = _var(base) / len(base), _var(new) / len(new)
    delta = mn - mb
    se = math.sqrt(vb + vn)
    if se == 0:
        ci, p = _constant(delta)
        return Change(mb, mn, delta, ci, p)
    from scipy import stats

    df = (vb + vn) ** 2 / (vb**2 / (len(base) - 1) + vn**2 / (len(new) - 1))
    half = _t(df, alpha) * se
    p = float(stats.ttest_ind(new, base, equal_var=False).pvalue)
    return Change(mb, mn, delta, (delta - half, delta + half), p)


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _var(v: list[float]) -> float:
    m = _mean(v)
    return sum((x - m) ** 2 for x in v) / (len(v) - 1)


def _change(base: dict[int, float], new: dict[int, float], alpha: float) -> tuple[str, Change]:
    if len(set(base) & set(new)) >= 2:
        return "paired t", paired(base, new, alpha)
    if len(base) >= 2 and len(new) >= 2:
        return "Welch t", welch(list(base.values()), list(new.values()), alpha)
    b = _mean(list(base.values())) if base else None
    w = _mean(list(new.values())) if new else None
    return "none", Change(b, w, None if b is None or w is None else w - b)


def compare_method(method: str, base: Side, new: Side, tolerance: float,
                   alpha: float) -> MethodResult:
    bw, nw = base.ok_seeds(method, "wga"), new.ok_seeds(method, "wga")
    n_paired = len(set(bw) & set(nw))
    if not bw and not nw:
        return MethodResult(method, 0, 0, 0, "none", Change(None, None, None),
                            Change(None, None, None), "not run on either side")
    if not nw:
        status = _status(new, method)
        if status == "absent":  # NEW ran a subset of the methods: nothing to judge
            return MethodResult(method, len(bw), 0, 0, "none",
                                Change(_mean(list(bw.values())), None, None),
                                Change(None, None, None), "not in new")
        return MethodResult(
            method, len(bw), 0, 0, "none", Change(_mean(list(bw.values())), None, None),
            Change(None, None, None), f"REGRESSED: ok in baseline, {status} in new",
            regressed=True,
        )
    if not bw:
        return MethodResult(method, 0, len(nw), 0, "none",
                            Change(None, _mean(list(nw.values())), None),
                            Change(None, None, None), f"new ({_status(base, method)} in baseline)")
    test, wga = _change(bw, nw, alpha)
    _, avg = _change(base.ok_seeds(method, "avg"), new.ok_seeds(method, "avg"), alpha)
    regressed = wga.ci is not None and wga.ci[1] < -tolerance
    if regressed:
        verdict = f"REGRESSED: WGA fell by more than {tolerance:g} points"
    elif wga.ci is None:
        verdict = "no test (fewer than 2 seeds): not flagged"
    elif wga.ci[0] > tolerance:
        verdict = "improved"
    elif wga.delta is not None and wga.delta < -tolerance:
        verdict = "worse, not significant"
    else:
        verdict = "no significant change"
    return MethodResult(method, len(bw), len(nw), n_paired, test, wga, avg, verdict, regressed)


def _status(side: Side, method: str) -> str:
    rows = side.table.filter(pl.col("method") == method)
    if rows.height == 0:
        return "absent"
    return "/".join(sorted(set(rows["status"].to_list())))


def compare(baseline: Path, new: Path, tolerance: float = DEFAULT_TOLERANCE,
            alpha: float = DEFAULT_ALPHA) -> Comparison:
    if tolerance < 0:
        raise UserError(f"--tolerance {tolerance}: must be 0 or more (points of WGA)")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha}: must be between 0 and 1")
    base, nw = load_side(baseline, "BASELINE"), load_side(new, "NEW")
    check_comparable(base, nw)
    out = Comparison(base, nw, tolerance, alpha)
    names = sorted(set(base.table["method"].to_list()) | set(nw.table["method"].to_list()))
    out.methods = [compare_method(m, base, nw, tolerance, alpha) for m in names]
    for col, what in (("head", "head"), ("git_commit", "git commit"),
                      ("spurbench_version", "spurbench version")):
        a = sorted(set(base.table[col].drop_nulls().to_list()))
        b = sorted(set(nw.table[col].drop_nulls().to_list()))
        if a != b:
            out.notes.append(f"{what} differs: {', '.join(a) or '?'} → {', '.join(b) or '?'}")
    out.notes += method_notes(base, nw, names)
    return out


METHOD_SETTINGS = {  # per-method settings that change what a number means
    "trials": "tuning trials",
    "group_labels_used": "group labels used",
}


def _setting(side: Side, method: str, col: str) -> str | None:
    vals = side.table.filter(pl.col("method") == method)[col].drop_nulls().to_list()
    if not vals:
        return None
    return ", ".join(sorted({str(v) or "none" for v in vals}))


def method_notes(base: Side, new: Side, methods: list[str]) -> list[str]:
    """Methods whose tuning budget or group-label use differs between the sides: their
    change may come from the search or the supervision, not the method's code (e.g. a
    run with 8 trials against a board published at defaults). One note per change,
    naming every method it applies to."""
    changed: dict[tuple[str, str, str], list[str]] = {}
    for m in methods:
        for col in METHOD_SETTINGS:
            a, b = _setting(base, m, col), _setting(new, m, col)
            if a is not None and b is not None and a != b:
                changed.setdefault((col, a, b), []).append(m)
    notes = []
    for (col, a, b), ms in changed.items():
        why = "the search differs" if col == "trials" else "the supervision differs"
        notes.append(f"{METHOD_SETTINGS[col]} {a} → {b} for {', '.join(ms)} ({why}: "
                     "a change there is not only the method's)")
    return notes


# -- rendering --------------------------------------------------------------------------------
def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def _ci(c: Change) -> str:
    return "—" if c.ci is None else f"[{c.ci[0]:+.1f}, {c.ci[1]:+.1f}]"


def _p(c: Change) -> str:
    if c.p is None:
        return "—"
    return "<0.001" if c.p < 0.001 else f"{c.p:.3f}"


def rows(cmp: Comparison) -> list[list[str]]:
    """Table cells per method, shared by the console and the markdown report."""
    return [
        [m.method, f"{m.n_base}/{m.n_new}/{m.n_paired}", m.test, _num(m.wga.base_mean),
         _num(m.wga.new_mean), _num(m.wga.delta, True), _ci(m.wga), _p(m.wga),
         _num(m.avg.delta, True), _ci(m.avg), m.verdict]
        for m in cmp.methods
    ]


HEADER = ["Method", "Seeds base/new/paired", "Test", "WGA base", "WGA new", "Δ WGA",
          "Δ WGA CI", "p", "Δ Avg", "Δ Avg CI", "Verdict"]


def rule_text(cmp: Comparison) -> str:
    level = round(100 * (1 - cmp.alpha), 2)
    return (
        f"Accuracies in %, Δ = new − baseline. Paired t-test over seeds ok on both sides "
        f"(Welch's t-test when fewer than 2 seeds match; no test with fewer than 2 seeds a side); "
        f"CI: two-sided {level:g}% t interval (alpha = {cmp.alpha:g}). A method regresses when "
        f"its whole Δ WGA CI lies below −{cmp.tolerance:g} points (tolerance), or when it was "
        "ok in the baseline and has no ok seed in new."
    )


def render_markdown(cmp: Comparison) -> str:
    base, new = cmp.baseline, cmp.new
    verdict = (
        f"❌ **{len(cmp.regressions)} regression(s)**: "
        + ", ".join(f"`{m.method}`" for m in cmp.regressions)
        if cmp.regressions else "✅ **No regression**"
    )
    lines = [
        "## spurbench compare", "",
        verdict, "",
        f"`{base.value('dataset')}` · `{base.value('encoder')}` · selection "
        f"`{base.value('selection')}` (fingerprint `{base.value('dataset_fingerprint')}`); "
        f"tolerance {cmp.tolerance:g} points.", "",
        f"- baseline: `{base.path}`",
        f"- new: `{new.path}`",
    ]
    lines += [f"- note: {n}" for n in cmp.notes]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for cells in rows(cmp):
        cells = [f"`{cells[0]}`"] + cells[1:]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", rule_text(cmp), ""]
    return "\n".join(lines)


def print_comparison(cmp: Comparison, console) -> None:  # noqa: ANN001 - a rich Console
    from rich.table import Table

    table = Table(title=f"compare: {cmp.baseline.path} → {cmp.new.path}")
    for col in HEADER:
        table.add_column(col)
    for cells, m in zip(rows(cmp), cmp.methods, strict=True):
        style = "red" if m.regressed else None
        table.add_row(*cells, style=style)
    console.print(table)
    for n in cmp.notes:
        console.print(f"note: {n}")
    console.print(rule_text(cmp), highlight=False)
    if cmp.regressions:
        names = ", ".join(m.method for m in cmp.regressions)
        console.print(f"[red]regression:[/red] {names}")
    else:
        console.print("[green]no regression[/green]")
