"""`bench gate`: a regression gate with power. Fits OLD and NEW side by side on paired
seeds, at fixed hyperparameters, adding seeds in rounds until the interval on the paired
WGA difference is decisive against the tolerance or the seed cap is reached.

Why sequential: three seeds detect only drops of ~15 points (see `bench compare`'s MDE);
fits take fractions of a second here, so seeds are cheap, but looking at the data after
every round and stopping when it "looks decisive" inflates the error rate unless the
intervals account for the looks.

The stopping rule (docs/regression-gate.md has the proof):
- The looks are fixed before any fit: after n_1 < n_2 < … < n_K paired seeds
  (--seeds-per-round, up to --max-seeds). K does not depend on the data.
- At look k the interval is the paired t interval at level 1 − alpha/K (Bonferroni split
  of alpha over the K looks): mean(d) ± t_{1−alpha/(2K), n_k−1} · sd(d)/√n_k, where d are
  the per-seed differences NEW − OLD of test WGA in points.
- Stop with "regression" when the interval lies wholly below −tolerance, with
  "no regression" when it lies wholly at or above −tolerance; otherwise add a round;
  "inconclusive" when the cap is reached.
- By the union bound the K intervals cover the true mean difference simultaneously with
  probability ≥ 1 − alpha, whatever the stopping time; so a false "regression" (true drop
  within the tolerance) has probability ≤ alpha/2, and so has a false "no regression"
  (true drop beyond it). Assumption: per-seed differences are i.i.d. normal (the paired
  t-test's assumption, as in `bench compare`).

Pairing: seed s of both arms uses the same initialisation, batch order and dropout
stream. The harness derives those from (dataset, method name, seed), so when NEW is
another method name (`sfr` vs `sfr-v2`) both arms draw from OLD's stream (`Fitter.stream`);
the ERM reference model depends on the seed only and is shared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bench.errors import UserError
from bench.plugins import registry
from bench.plugins.registry import MethodEntry
from bench.report import results
from bench.report.compare import (
    EXIT_INCONCLUSIVE,
    EXIT_OK,
    EXIT_REGRESSION,
    check_decision,
    mde,
    t_quantile,
    verdict_of,
)
from bench.run.config import RunConfig, parse_params
from bench.run.runner import Run
from bench.tuning.space import violations

DEFAULT_MAX_SEEDS = 20
DEFAULT_PER_ROUND = 5
EXIT_CODES = {"no regression": EXIT_OK, "regression": EXIT_REGRESSION,
              "inconclusive": EXIT_INCONCLUSIVE}


# -- the stopping rule -------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """What the error guarantee depends on; fixed before the first fit."""

    tolerance: float
    alpha: float
    power: float
    looks: tuple[int, ...]  # paired seeds at each look, increasing

    @property
    def alpha_look(self) -> float:
        """Bonferroni: each look's two-sided interval spends alpha/K."""
        return self.alpha / len(self.looks)

    @property
    def cap(self) -> int:
        return self.looks[-1]


def schedule(per_round: int, max_seeds: int) -> tuple[int, ...]:
    """Looks after every `per_round` seeds, the last at `max_seeds` exactly."""
    if per_round < 2:
        raise UserError(f"--seeds-per-round {per_round}: must be 2 or more (a paired t "
                        "interval needs 2 seeds)")
    if max_seeds < per_round:
        raise UserError(f"--max-seeds {max_seeds}: must be at least --seeds-per-round "
                        f"({per_round})")
    looks = list(range(per_round, max_seeds + 1, per_round))
    if looks[-1] != max_seeds:
        looks.append(max_seeds)
    return tuple(looks)


def design(tolerance: float, alpha: float, power: float, per_round: int,
           max_seeds: int) -> Design:
    check_decision(tolerance, alpha, power)
    return Design(tolerance, alpha, power, schedule(per_round, max_seeds))


@dataclass
class Look:
    """The state of the gate after one look."""

    index: int  # 1-based
    n: int  # paired seeds ok on both arms
    delta: float | None  # mean NEW − OLD, points
    ci: tuple[float, float] | None  # the look's 1 − alpha/K interval
    se: float | None
    mde: float | None  # minimum detectable drop now (points, at the look's level)
    mde_at_cap: float | None  # the same projected to the cap, from the observed sd
    verdict: str  # "regression" | "no regression" | "inconclusive"


def look(diffs: Sequence[float], d: Design, index: int) -> Look:
    """The interval and verdict of one look on the paired differences seen so far."""
    n = len(diffs)
    if n < 2:
        delta = diffs[0] if n else None
        return Look(index, n, delta, None, None, None, None, "inconclusive")
    mean = sum(diffs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(1 - d.alpha_look / 2, n - 1) * se
    ci = (mean - half, mean + half)
    return Look(index, n, mean, ci, se, mde(se, n - 1, d.alpha_look, d.power, d.tolerance),
                mde(sd / math.sqrt(d.cap), d.cap - 1, d.alpha_look, d.power, d.tolerance),
                verdict_of(ci, d.tolerance))


def sequential(diffs: Sequence[float], d: Design) -> Look:
    """Apply the stopping rule to a sequence of paired differences (at least the cap's
    worth): the look it stops at. The gate and the error-rate simulation share this."""
    if len(diffs) < d.cap:
        raise ValueError(f"{len(diffs)} differences for a design capped at {d.cap}")
    last = None
    for k, n in enumerate(d.looks, start=1):
        last = look(diffs[:n], d, k)
        if last.verdict != "inconclusive":
            break
    assert last is not None
    return last


# -- the arms ----------------------------------------------------------------------------------
@dataclass
class Arm:
    """One side of the gate: a method with its parameters fixed (defaults + given)."""

    label: str  # "old" | "new"
    spec: str  # as given on the command line
    entry: MethodEntry
    params: dict[str, Any]
    given: dict[str, Any]


def parse_arm(spec: str, flag: str) -> Arm:
    """`METHOD` or `METHOD:KEY=VALUE[,KEY=VALUE…]` (KEY=VALUE as in --params METHOD.KEY=VALUE,
    checked against the method's search space). Plugins must be loaded first."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    pairs = [kv.strip() for kv in rest.split(",") if kv.strip()]
    if not name or any("=" not in kv or kv.startswith("=") for kv in pairs):
        raise UserError(f"{flag} {spec}: expected METHOD or METHOD:KEY=VALUE,… "
                        "e.g. sfr:dropout=0")
    entry = registry.get_method(name)
    items = [f"{name}.{kv}" for kv in pairs]
    try:
        given = parse_params(items, {name: entry}).get(name, {})
    except UserError as exc:  # reword "--params sfr.x=1: …" for this flag
        raise UserError(f"{flag} {spec}: {str(exc).split(': ', 1)[-1]}") from None
    space = entry.create().search_space()
    params = {**{k: p.default for k, p in space.items()}, **entry.fixed, **given}
    bad = violations(space, params)
    if bad:
        raise UserError(f"{flag} {spec}: {'; '.join(bad)}")
    return Arm(flag.lstrip("-"), spec, entry, params, given)


# -- the gate ----------------------------------------------------------------------------------
@dataclass
class GateResult:
    design: Design
    old: Arm
    new: Arm
    out: Path
    looks: list[Look] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # seeds fitted, both arms
    notes: list[str] = field(default_factory=list)
    failure: str | None = None  # NEW failed where OLD did not: a regression

    @property
    def final(self) -> Look:
        return self.looks[-1]

    @property
    def verdict(self) -> str:
        return "regression" if self.failure else self.final.verdict

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


@dataclass
class GateConfig:
    old: str
    new: str
    dataset: str = "synthetic"
    dataset_opts: dict[str, str] = field(default_factory=dict)
    data_root: Path | None = None
    encoder: str | None = None
    head: str = "auto"
    selection: str = "worst-group"
    tolerance: float = 1.0
    alpha: float = 0.05
    power: float = 0.8
    per_round: int = DEFAULT_PER_ROUND
    max_seeds: int = DEFAULT_MAX_SEEDS
    seed_offset: int = 0
    out: Path | None = None
    runs_dir: Path = Path("runs")
    device: str = "auto"
    plugins: list[Path] = field(default_factory=list)

    def identity(self, old: Arm, new: Arm) -> dict[str, Any]:
        """What decides a seed's rows (not the design: rows stay valid when it changes)."""
        return {"kind": "gate", "dataset": self.dataset,
                "dataset_opts": dict(sorted(self.dataset_opts.items())),
                "encoder": self.encoder, "head": self.head, "selection": self.selection,
                "old": {"method": old.entry.name, "params": old.given},
                "new": {"method": new.entry.name, "params": new.given},
                "stream": old.entry.name}


def _default_out(cfg: GateConfig, identity: dict[str, Any]) -> Path:
    import hashlib

    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return cfg.runs_dir / f"gate-{cfg.dataset}-{digest.hexdigest()[:10]}"


def _fit(run: Run, arm: Arm, seed: int, rows_dir: Path, run_name: str) -> dict[str, Any]:
    """One seed of one arm, or its saved row (a rerun resumes)."""
    path = results.seed_row_path(rows_dir, arm.entry.name, seed)
    if path.exists():
        try:
            return pl.read_parquet(path).row(0, named=True)
        except Exception:  # a torn file: fit again
            path.unlink(missing_ok=True)
    row = {**run.base_row(arm.entry), "run": run_name, "trials": 0, "seed": seed,
           "params": json.dumps(arm.params, sort_keys=True, default=str)}
    try:
        val, test = run.evaluate_splits(run.fit(arm.entry, arm.params, seed))
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        row.update(status="failed", reason=f"seed {seed}: {type(exc).__name__}: {exc}")
    else:
        row.update(status="ok", **results.metric_fields(val, test))
    results.write_atomic(results.make_frame([row]), path)
    return row


def gate(cfg: GateConfig, on_look: Callable[[Look, GateResult], None] | None = None,
         console: Any = None) -> GateResult:
    """Run the gate: rounds of paired seeds until a decisive look or the cap."""
    from bench.run.directory import claim, exclusive, write_json_atomic

    d = design(cfg.tolerance, cfg.alpha, cfg.power, cfg.per_round, cfg.max_seeds)
    if cfg.seed_offset < 0:
        raise UserError(f"--seed-offset {cfg.seed_offset}: must be 0 or more")
    registry.load_plugins(cfg.plugins)
    old, new = parse_arm(cfg.old, "--old"), parse_arm(cfg.new, "--new")
    identity = cfg.identity(old, new)
    out = Path(cfg.out) if cfg.out else _default_out(cfg, identity)
    names = list(dict.fromkeys([old.entry.name, new.entry.name]))
    run = Run(RunConfig(
        dataset=cfg.dataset, methods=names, dataset_opts=dict(cfg.dataset_opts),
        data_root=cfg.data_root, encoder=cfg.encoder, head=cfg.head, selection=cfg.selection,
        trials=0, seeds=d.cap, seed_offset=cfg.seed_offset, out=out / "work",
        runs_dir=cfg.runs_dir, device=cfg.device, plugins=list(cfg.plugins), progress=False,
    ), console)
    run.fitter.stream = old.entry.name  # seed s: one realisation for both arms
    for arm in (old, new):
        why = run.why_not(arm.entry)
        if why is not None:
            raise UserError(f"--{arm.label} {arm.spec}: {why}")
    identity.update(dataset_fingerprint=run.spec.fingerprint(), encoder=run.encoder_id)
    result = GateResult(d, old, new, out)
    seeds = list(range(cfg.seed_offset, cfg.seed_offset + d.cap))
    with exclusive(out):
        claim(out, identity)
        arm_rows: dict[str, dict[int, dict[str, Any]]] = {"old": {}, "new": {}}
        start = 0
        for k, n in enumerate(d.looks, start=1):
            for seed in seeds[start:n]:
                for arm in (old, new):
                    arm_rows[arm.label][seed] = _fit(
                        run, arm, seed, out / arm.label / "rows", f"{out.name}-{arm.label}")
                o, w = arm_rows["old"][seed], arm_rows["new"][seed]
                if o["status"] == "ok" and w["status"] != "ok" and result.failure is None:
                    result.failure = f"NEW failed where OLD did not: {w.get('reason')}"
                elif o["status"] != "ok":
                    result.notes.append(f"seed {seed} left out: OLD {o['status']} "
                                        f"({o.get('reason')})")
            start = n
            result.seeds = seeds[:n]
            diffs = [100 * (arm_rows["new"][s]["test_wga"] - arm_rows["old"][s]["test_wga"])
                     for s in seeds[:n]
                     if arm_rows["old"][s]["status"] == "ok"
                     and arm_rows["new"][s]["status"] == "ok"]
            current = look(diffs, d, k)
            result.looks.append(current)
            if on_look is not None:
                on_look(current, result)
            if result.failure or current.verdict != "inconclusive":
                break
        for arm in (old, new):
            table = results.make_frame([arm_rows[arm.label][s] for s in result.seeds])
            results.write_atomic(table, out / arm.label / "results.parquet")
        write_json_atomic(out / "gate.json", summary(result))
    return result


def summary(result: GateResult) -> dict[str, Any]:
    """gate.json: the design, every look and the verdict, for CI logs and audits."""
    d = result.design
    return {
        "old": {"spec": result.old.spec, "method": result.old.entry.name,
                "params": result.old.params},
        "new": {"spec": result.new.spec, "method": result.new.entry.name,
                "params": result.new.params},
        "design": {**asdict(d), "alpha_per_look": d.alpha_look,
                   "rule": "Bonferroni-split repeated paired t intervals"},
        "looks": [asdict(lk) for lk in result.looks],
        "seeds": result.seeds, "notes": result.notes, "failure": result.failure,
        "verdict": result.verdict, "exit_code": result.exit_code,
    }


# -- rendering ---------------------------------------------------------------------------------
def look_line(lk: Look, result: GateResult) -> str:
    d = result.design
    level = f"{100 * (1 - d.alpha_look):.4g}%"
    head = f"look {lk.index}/{len(d.looks)}: {lk.n} paired seeds"
    if lk.ci is None:
        return f"{head}: too few ok pairs for an interval → inconclusive"
    more = ""
    if lk.verdict == "inconclusive" and not result.failure and lk.index < len(d.looks):
        more = f", adding {d.looks[lk.index] - d.looks[lk.index - 1]} seeds"
    return (f"{head}, Δ WGA {lk.delta:+.2f}, {level} CI [{lk.ci[0]:+.2f}, {lk.ci[1]:+.2f}], "
            f"MDE {lk.mde:.1f} (at the cap of {d.cap}: {lk.mde_at_cap:.1f}) → "
            f"{lk.verdict}{more}")


def final_lines(result: GateResult) -> list[str]:
    d, lk = result.design, result.final
    lines = [f"gate: {result.old.spec} (OLD) vs {result.new.spec} (NEW), tolerance "
             f"{d.tolerance:g} points, alpha {d.alpha:g} over {len(d.looks)} looks "
             f"({', '.join(map(str, d.looks))} seeds; Bonferroni, {d.alpha_look:.4g} per look)"]
    if lk.ci is not None:
        lines.append(f"Δ WGA {lk.delta:+.2f} points over {lk.n} paired seeds, CI "
                     f"[{lk.ci[0]:+.2f}, {lk.ci[1]:+.2f}] (simultaneous over the looks at "
                     f"{100 * (1 - d.alpha):g}%); minimum detectable drop {lk.mde:.1f} points "
                     f"at {100 * d.power:g}% power")
    lines += [f"note: {n}" for n in result.notes]
    if result.failure:
        lines.append(result.failure)
    lines.append(f"rows: {result.out / 'old'}, {result.out / 'new'}; summary: "
                 f"{result.out / 'gate.json'}")
    why = {"regression": f"WGA fell by more than {d.tolerance:g} points",
           "no regression": f"any WGA drop is within {d.tolerance:g} points",
           "inconclusive": f"the interval still straddles −{d.tolerance:g} at the cap of "
                           f"{d.cap} seeds; raise --max-seeds or --tolerance"}[result.verdict]
    if result.failure:
        why = "NEW failed on a seed"
    lines.append(f"verdict: {result.verdict} ({why}; exit {result.exit_code})")
    return lines
