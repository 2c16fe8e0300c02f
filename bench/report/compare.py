"""`bench compare BASELINE NEW`: per-method change in test WGA and average accuracy, with
a test over seeds — the regression gate a lab puts in CI when it changes a method.

The rule (also printed in every report):
- Seeds are paired by seed number (the same seed means the same initialisation and batch
  order, so pairing removes most seed noise). With at least 2 seeds ok on both sides:
  paired t-test on the per-seed differences. With fewer than 2 matching seeds but at least
  2 seeds on each side (e.g. a re-run with --seed-offset): Welch's unpaired t-test.
  Otherwise no test: the change is reported, no significance is claimed.
- The confidence interval (CI) is the two-sided (1 - alpha) t interval of the change in
  points (new - baseline, in %); alpha = 0.05 unless --alpha. When every difference is
  the same (deterministic methods) the CI is that single value.
- Three verdicts on WGA, against the tolerance (points):
  REGRESSED when the whole CI lies below -tolerance (a drop beyond the tolerance, at
  level alpha/2 one-sided); "no regression" only when the whole CI lies at or above
  -tolerance; INCONCLUSIVE when the CI straddles -tolerance, or there is no CI (fewer
  than 2 seeds): the seeds at hand cannot tell. A method ok in the baseline that has rows
  but no ok seed in NEW (failed or skipped) also counts as a regression; one absent from
  NEW (a run of fewer methods) is not judged. Average accuracy is reported, never gated.
- MDE, the minimum detectable drop: the true WGA drop (points) the gate flags as a
  regression with probability `power` (80%) given the seed noise at hand,
  MDE = tolerance + (t_{1-alpha/2, df} + t_{power, df}) * SE, with SE and df those of the
  test (paired: sd(d)/sqrt(n), n - 1; Welch: sqrt(s1²/n1 + s2²/n2), Welch–Satterthwaite).
- --pair OLD=NEW compares method OLD of the baseline with method NEW of the candidate
  (a variant under a new name); with --pair only the named pairs are compared.
Exit codes: 0 no regression, 1 a regression, 2 bad input (bench.errors.UserError),
3 inconclusive (no regression, but at least one method the seeds cannot clear).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from bench.errors import UserError
from bench.report.publish import read_table, split_boards

DEFAULT_ALPHA = 0.05
DEFAULT_TOLERANCE = 1.0  # points of WGA
DEFAULT_POWER = 0.8
EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE = 0, 1, 2, 3
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
    se: float | None = None  # standard error of delta (0: every difference equal)
    df: float | None = None  # degrees of freedom of the t distribution of the test


@dataclass
class MethodResult:
    method: str  # "OLD → NEW" for a --pair
    n_base: int
    n_new: int
    n_paired: int
    test: str  # "paired t" | "Welch t" | "none"
    wga: Change
    avg: Change
    verdict: str
    regressed: bool = False
    inconclusive: bool = False
    mde: float | None = None  # minimum detectable WGA drop, points (see the module doc)


@dataclass
class Comparison:
    baseline: Side
    new: Side
    tolerance: float
    alpha: float
    power: float = DEFAULT_POWER
    methods: list[MethodResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MethodResult]:
        return [m for m in self.methods if m.regressed]

    @property
    def inconclusive(self) -> list[MethodResult]:
        return [m for m in self.methods if m.inconclusive]

    @property
    def exit_code(self) -> int:
        """1 beats 3 beats 0: a proven regression is reported even beside unclear methods."""
        if self.regressions:
            return EXIT_REGRESSION
        return EXIT_INCONCLUSIVE if self.inconclusive else EXIT_OK


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


def check_comparable(base: Side, new: Side, across_encoders: bool = False) -> None:
    """Refuse to compare numbers measured on different data, encoders or selection rules
    (encoders may differ with `across_encoders`: one method on two backbones)."""
    for col in IDENTITY:
        if across_encoders and col == "encoder":
            continue
        a, b = base.value(col), new.value(col)
        if a != b:
            what = "dataset contents (fingerprint)" if col == "dataset_fingerprint" else col
            raise UserError(
                f"BASELINE {base.path} and NEW {new.path} differ in {what}: {a} vs {b}; "
                "compare results of the same dataset, encoder and selection rule (one method "
                "on two encoders: --across-encoders)"
            )


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom (cached: the gate's
    stopping-rule simulation asks for the same few thousands of times)."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


def _t(df: float, alpha: float) -> float:
    return t_quantile(1 - alpha / 2, df)


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
        return Change(b, w, mean, ci, p, 0.0, n - 1)
    from scipy import stats

    se = sd / math.sqrt(n)
    half = _t(n - 1, alpha) * se
    p = float(stats.ttest_rel(
        [new[s] for s in seeds], [base[s] for s in seeds]).pvalue)
    return Change(b, w, mean, (mean - half, mean + half), p, se, n - 1)


def welch(base: list[float], new: list[float], alpha: float) -> Change:
    mb, mn = _mean(base), _mean(new)
    vb, vn = _var(base) / len(base), _var(new) / len(new)
    delta = mn - mb
    se = math.sqrt(vb + vn)
    if se == 0:
        ci, p = _constant(delta)
        return Change(mb, mn, delta, ci, p, 0.0, len(base) + len(new) - 2)
    from scipy import stats

    df = (vb + vn) ** 2 / (vb**2 / (len(base) - 1) + vn**2 / (len(new) - 1))
    half = _t(df, alpha) * se
    p = float(stats.ttest_ind(new, base, equal_var=False).pvalue)
    return Change(mb, mn, delta, (delta - half, delta + half), p, se, df)


def mde(se: float, df: float, alpha: float, power: float, tolerance: float) -> float:
    """The smallest true WGA drop (points, positive) flagged as a regression with
    probability `power`: the gate flags when delta + t_{1-alpha/2}·SE < -tolerance, so a
    true drop D is caught with probability ≈ power when
    D = tolerance + (t_{1-alpha/2, df} + t_{power, df})·SE (the usual MDE formula, with the
    observed SE in place of the unknown one)."""
    if se == 0:
        return tolerance
    return tolerance + (_t(df, alpha) + t_quantile(power, df)) * se


def verdict_of(ci: tuple[float, float] | None, tolerance: float) -> str:
    """"regression" (CI wholly below -tolerance), "no regression" (wholly at or above it),
    else "inconclusive": a CI that straddles the tolerance never passes."""
    if ci is None:
        return "inconclusive"
    if ci[1] < -tolerance:
        return "regression"
    if ci[0] >= -tolerance:
        return "no regression"
    return "inconclusive"


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
                   alpha: float, power: float = DEFAULT_POWER,
                   new_method: str | None = None) -> MethodResult:
    """`method` in the baseline against `new_method` (default: the same name) in NEW."""
    other = new_method or method
    label = method if other == method else f"{method} → {other}"
    bw, nw = base.ok_seeds(method, "wga"), new.ok_seeds(other, "wga")
    n_paired = len(set(bw) & set(nw))
    if not bw and not nw:
        return MethodResult(label, 0, 0, 0, "none", Change(None, None, None),
                            Change(None, None, None), "not run on either side")
    if not nw:
        status = _status(new, other)
        if status == "absent":  # NEW ran a subset of the methods: nothing to judge
            return MethodResult(label, len(bw), 0, 0, "none",
                                Change(_mean(list(bw.values())), None, None),
                                Change(None, None, None), "not in new")
        return MethodResult(
            label, len(bw), 0, 0, "none", Change(_mean(list(bw.values())), None, None),
            Change(None, None, None), f"REGRESSED: ok in baseline, {status} in new",
            regressed=True,
        )
    if not bw:
        return MethodResult(label, 0, len(nw), 0, "none",
                            Change(None, _mean(list(nw.values())), None),
                            Change(None, None, None), f"new ({_status(base, method)} in baseline)")
    test, wga = _change(bw, nw, alpha)
    _, avg = _change(base.ok_seeds(method, "avg"), new.ok_seeds(other, "avg"), alpha)
    drop = None if wga.se is None else mde(wga.se, wga.df, alpha, power, tolerance)
    kind = verdict_of(wga.ci, tolerance)
    if kind == "regression":
        verdict = f"REGRESSED: WGA fell by more than {tolerance:g} points"
    elif kind == "inconclusive" and wga.ci is None:
        verdict = "INCONCLUSIVE: fewer than 2 seeds a side, no test"
    elif kind == "inconclusive":
        verdict = (f"INCONCLUSIVE: CI straddles −{tolerance:g}; only a drop of "
                   f"{drop:.1f}+ points is detectable with these seeds")
    elif wga.ci[0] > tolerance:
        verdict = "improved"
    else:
        verdict = "no regression"
    return MethodResult(label, len(bw), len(nw), n_paired, test, wga, avg, verdict,
                        regressed=kind == "regression", inconclusive=kind == "inconclusive",
                        mde=drop)


def _status(side: Side, method: str) -> str:
    rows = side.table.filter(pl.col("method") == method)
    if rows.height == 0:
        return "absent"
    return "/".join(sorted(set(rows["status"].to_list())))


def parse_pairs(items: list[str]) -> list[tuple[str, str]]:
    """--pair OLD=NEW (repeatable) → [(OLD, NEW)]."""
    pairs = []
    for item in items:
        old, sep, new = (x.strip() for x in item.partition("="))
        if not sep or not old or not new:
            raise UserError(f"--pair {item}: expected OLD=NEW, e.g. --pair sfr=sfr-v2")
        pairs.append((old, new))
    return pairs


def check_decision(tolerance: float, alpha: float, power: float) -> None:
    """The settings of a regression decision (compare and gate): a user error if invalid."""
    if tolerance < 0:
        raise UserError(f"--tolerance {tolerance}: must be 0 or more (points of WGA)")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha}: must be between 0 and 1")
    if not 0 < power < 1:
        raise UserError(f"--power {power}: must be between 0 and 1 (e.g. 0.8)")


def compare(baseline: Path, new: Path, tolerance: float = DEFAULT_TOLERANCE,
            alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
            pairs: list[tuple[str, str]] | None = None,
            across_encoders: bool = False) -> Comparison:
    """Compare every method by name, or with `pairs` only those (OLD in the baseline,
    NEW in the candidate): a variant under a new name is compared with what it changes."""
    check_decision(tolerance, alpha, power)
    base, nw = load_side(baseline, "BASELINE"), load_side(new, "NEW")
    check_comparable(base, nw, across_encoders)
    out = Comparison(base, nw, tolerance, alpha, power)
    if across_encoders and base.value("encoder") != nw.value("encoder"):
        out.notes.append(f"across encoders: BASELINE {base.value('encoder')} vs NEW "
                         f"{nw.value('encoder')}; seeds are paired by number (same data "
                         "order), the features differ")
    base_names = set(base.table["method"].to_list())
    new_names = set(nw.table["method"].to_list())
    if pairs:
        for old, other in pairs:
            if old not in base_names:
                raise UserError(f"--pair {old}={other}: no method '{old}' in BASELINE "
                                f"({', '.join(sorted(base_names))})")
            if other not in new_names:
                raise UserError(f"--pair {old}={other}: no method '{other}' in NEW "
                                f"({', '.join(sorted(new_names))})")
        out.methods = [compare_method(o, base, nw, tolerance, alpha, power, n) for o, n in pairs]
        left = sorted((base_names | new_names) - {m for p in pairs for m in p})
        if left:
            out.notes.append(f"not compared (--pair given): {', '.join(left)}")
        names = [o for o, _ in pairs]
    else:
        names = sorted(base_names | new_names)
        out.methods = [compare_method(m, base, nw, tolerance, alpha, power) for m in names]
    for col, what in (("head", "head"), ("git_commit", "git commit"),
                      ("spurbench_version", "spurbench version")):
        a = sorted(set(base.table[col].drop_nulls().to_list()))
        b = sorted(set(nw.table[col].drop_nulls().to_list()))
        if a != b:
            out.notes.append(f"{what} differs: {', '.join(a) or '?'} → {', '.join(b) or '?'}")
    out.notes += method_notes(base, nw, names, dict(pairs or []))
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


def method_notes(base: Side, new: Side, methods: list[str],
                 pairs: dict[str, str] | None = None) -> list[str]:
    """Methods whose tuning budget or group-label use differs between the sides: their
    change may come from the search or the supervision, not the method's code (e.g. a
    run with 8 trials against a board published at defaults). One note per change,
    naming every method it applies to."""
    changed: dict[tuple[str, str, str], list[str]] = {}
    pairs = pairs or {}
    for m in methods:
        other = pairs.get(m, m)
        for col in METHOD_SETTINGS:
            a, b = _setting(base, m, col), _setting(new, other, col)
            if a is not None and b is not None and a != b:
                changed.setdefault((col, a, b), []).append(m if other == m else f"{m} → {other}")
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
         _num(m.mde), _num(m.avg.delta, True), _ci(m.avg), m.verdict]
        for m in cmp.methods
    ]


HEADER = ["Method", "Seeds base/new/paired", "Test", "WGA base", "WGA new", "Δ WGA",
          "Δ WGA CI", "p", "MDE", "Δ Avg", "Δ Avg CI", "Verdict"]


def rule_text(cmp: Comparison) -> str:
    level = round(100 * (1 - cmp.alpha), 2)
    return (
        f"Accuracies in %, Δ = new − baseline. Paired t-test over seeds ok on both sides "
        f"(Welch's t-test when fewer than 2 seeds match; no test with fewer than 2 seeds a side); "
        f"CI: two-sided {level:g}% t interval (alpha = {cmp.alpha:g}). A method regresses when "
        f"its whole Δ WGA CI lies below −{cmp.tolerance:g} points (tolerance), or when it was "
        "ok in the baseline and has no ok seed in new; it passes only when its whole CI lies "
        f"at or above −{cmp.tolerance:g}; otherwise it is inconclusive. MDE: the smallest true "
        f"WGA drop flagged with {100 * cmp.power:g}% power at these seeds, "
        "tolerance + (t(1−α/2, df) + t(power, df))·SE of the test."
    )


def summary(cmp: Comparison) -> str:
    """One line: the overall verdict and its exit code."""
    if cmp.regressions:
        return (f"regression: {', '.join(m.method for m in cmp.regressions)} "
                f"(exit {EXIT_REGRESSION})")
    if cmp.inconclusive:
        worst = max((m.mde for m in cmp.inconclusive if m.mde is not None), default=None)
        more = ("" if worst is None else
                f"; these seeds detect only drops of {worst:.1f}+ points: add seeds "
                "(or use `bench gate`)")
        return (f"inconclusive: {', '.join(m.method for m in cmp.inconclusive)}{more} "
                f"(exit {EXIT_INCONCLUSIVE})")
    return f"no regression (exit {EXIT_OK})"


def render_markdown(cmp: Comparison) -> str:
    base, new = cmp.baseline, cmp.new
    if cmp.regressions:
        verdict = (f"❌ **{len(cmp.regressions)} regression(s)**: "
                   + ", ".join(f"`{m.method}`" for m in cmp.regressions))
    elif cmp.inconclusive:
        verdict = ("⚠️ **Inconclusive**: " + ", ".join(f"`{m.method}`" for m in cmp.inconclusive)
                   + " (the CI straddles the tolerance, or there is no test)")
    else:
        verdict = "✅ **No regression**"
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
    lines += ["", rule_text(cmp), "", summary(cmp), ""]
    return "\n".join(lines)


def print_comparison(cmp: Comparison, console) -> None:  # noqa: ANN001 - a rich Console
    from rich.table import Table

    table = Table(title=f"compare: {cmp.baseline.path} → {cmp.new.path}")
    for col in HEADER:
        table.add_column(col)
    for cells, m in zip(rows(cmp), cmp.methods, strict=True):
        style = "red" if m.regressed else "yellow" if m.inconclusive else None
        table.add_row(*cells, style=style)
    console.print(table)
    for n in cmp.notes:
        console.print(f"note: {n}")
    console.print(rule_text(cmp), highlight=False)
    color = "red" if cmp.regressions else "yellow" if cmp.inconclusive else "green"
    console.print(f"[{color}]{summary(cmp)}[/{color}]", highlight=False)
