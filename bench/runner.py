"""`bench run` as a library call: dataset → features → tune → final seeds → results → report.

A run lives in one directory (runs/<dataset>-<config hash> unless --out), so re-running
the same command resumes it: the Optuna study continues and finished seeds are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import torch

from bench import registry, results
from bench.dataset import DatasetOptions
from bench.encoders import default_encoder_for, get_encoder
from bench.errors import UserError
from bench.features import feature_store
from bench.heads import HEAD_KINDS, HeadFactory
from bench.leaderboard import Board, render_markdown, summarize
from bench.method import Context
from bench.metrics import Metrics, evaluate
from bench.predictor import Predictor
from bench.provenance import git_commit, now, version
from bench.redact import redact
from bench.references import ReferenceStore
from bench.registry import MethodEntry
from bench.seeding import derive_seed, generator
from bench.selection import SelectionRule, check_allowed, get_rule, labels_used, select_score
from bench.store import FeatureStore
from bench.tracking import Tracker, default_uri
from bench.trainer import Trainer
from bench.tuning import finished_trials, open_study, tune

log = logging.getLogger("bench.run")


@dataclass
class RunConfig:
    dataset: str = "synthetic"
    methods: list[str] | None = None  # None: every registered method
    dataset_opts: dict[str, str] = field(default_factory=dict)
    data_root: Path | None = None
    encoder: str | None = None
    head: str = "auto"
    selection: str = "worst-group"
    trials: int = 8
    seeds: int = 3
    params: list[str] = field(default_factory=list)
    out: Path | None = None
    runs_dir: Path = Path("runs")
    storage: str | None = None
    tracking_uri: str | None = None
    device: str = "auto"
    plugins: list[Path] = field(default_factory=list)
    timeout: float | None = None
    progress: bool = True

    def identity(self) -> dict[str, Any]:
        """What decides the numbers: the run directory's name hashes exactly this."""
        return {
            "dataset": self.dataset, "methods": sorted(self.methods or []),
            "dataset_opts": dict(sorted(self.dataset_opts.items())),
            "encoder": self.encoder, "head": self.head, "selection": self.selection,
            "trials": self.trials, "seeds": self.seeds, "params": sorted(self.params),
        }


@dataclass
class RunResult:
    run_dir: Path
    results: pl.DataFrame
    board: Board


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available on this machine")
    return device


def parse_params(items: list[str], entries: dict[str, MethodEntry]) -> dict[str, dict[str, Any]]:
    """--params METHOD.NAME=VALUE → {method: {name: value}}, checked against search spaces."""
    fixed: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise UserError(f"--params {item}: expected METHOD.NAME=VALUE, e.g. erm.lr=0.01")
        if method not in entries:
            raise UserError(f"--params {item}: method '{method}' is not in --methods")
        space = entries[method].search_space()
        if name not in space:
            raise UserError(
                f"--params {item}: '{method}' has no tunable parameter '{name}'; "
                f"it has {', '.join(sorted(space)) or 'none'}"
            )
        fixed.setdefault(method, {})[name] = space[name].parse(key, value)
    return fixed


def parse_dataset_opts(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--dataset-opt {item}: expected KEY=VALUE")
        out[key] = value
    return out


def _link_latest(runs_dir: Path, run_dir: Path) -> None:
    latest = runs_dir / "latest"
    try:
        tmp = runs_dir / f".latest.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(run_dir.resolve(), runs_dir.resolve()))
        os.replace(tmp, latest)
    except OSError as exc:  # e.g. a filesystem without symlinks: say so, keep going
        log.warning("could not point %s at %s: %s", latest, run_dir, exc)


class Run:
    """One `bench run`: holds the shared store, references and tracker for all methods."""

    def __init__(self, cfg: RunConfig, console: Any = None) -> None:
        self.cfg = cfg
        self.console = console
        registry.load_plugins(cfg.plugins)
        self.plugin = registry.get_dataset(cfg.dataset)
        names = cfg.methods or list(registry.methods())
        if len(set(names)) != len(names):
            raise UserError(f"--methods lists a method twice: {','.join(names)}")
        self.entries = {n: registry.get_method(n) for n in names}
        self.rule: SelectionRule = get_rule(cfg.selection)
        if cfg.head not in HEAD_KINDS:
            raise UserError(f"--head {cfg.head}: expected one of {', '.join(HEAD_KINDS)}")
        if cfg.trials < 0:
            raise UserError(f"--trials {cfg.trials}: must be 0 or more")
        if cfg.seeds < 1:
            raise UserError(f"--seeds {cfg.seeds}: must be 1 or more")
        self.fixed = parse_params(cfg.params, self.entries)
        if len(self.entries) == 1:  # a lone method the setting forbids is an error, not a skip
            (name, entry), = self.entries.items()
            check_allowed(name, entry.group_labels, self.rule)
        self.device = resolve_device(cfg.device)
        self.spec = self.plugin.load(
            DatasetOptions(data_root=cfg.data_root, extra=dict(cfg.dataset_opts))
        )
        self.encoder_id = cfg.encoder or default_encoder_for(self.spec)
        self.run_dir = Path(cfg.out) if cfg.out else cfg.runs_dir / self._default_name()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        encoder = get_encoder(self.encoder_id)
        self.store: FeatureStore = feature_store(
            self.spec, encoder, self.device, cache_dir=self._cache_dir()
        )
        self.heads = HeadFactory(
            self.store.dim, self.store.n_classes, self.device, self.store.class_text,
            self.store.visual_projection, self.store.logit_scale, cfg.head,
        )
        self.references = ReferenceStore(self.store, self.heads, self.run_dir / "references")
        self.storage = cfg.storage or f"sqlite:///{(self.run_dir / 'optuna.db').resolve()}"

    def _default_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.cfg.identity(), sort_keys=True).encode())
        return f"{self.cfg.dataset}-{digest.hexdigest()[:10]}"

    def _cache_dir(self) -> Path:
        return Path(os.environ.get("SPURBENCH_CACHE", Path.home() / ".cache" / "spurbench"))

    # -- one fit -----------------------------------------------------------------------
    def context(self, method: str, params: dict[str, Any], seed: int) -> Context:
        gen = generator(self.spec.name, method, "seed", seed)
        torch.manual_seed(derive_seed(self.spec.name, method, "torch", seed))
        return Context(
            params=params, seed=seed, device=self.device, generator=gen, store=self.store,
            trainer=Trainer(self.device, gen), references=self.references, heads=self.heads,
            log=logging.getLogger(f"bench.method.{method}"),
        )

    def fit(self, entry: MethodEntry, params: dict[str, Any], seed: int, trial=None) -> Predictor:  # noqa: ANN001
        ctx = self.context(entry.name, params, seed)
        val = self.store.splits["val"]
        if trial is not None:
            def report(epoch: int, head: torch.nn.Module) -> None:
                score = select_score(evaluate(Predictor(head), val, self.store).as_dict(), self.rule)
                trial.report(score, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

            ctx.trainer.reporter = report
        return entry.create().fit(self.store.splits["train"], val, ctx)

    def evaluate_splits(self, predictor: Predictor) -> tuple[Metrics, Metrics]:
        return (
            evaluate(predictor, self.store.splits["val"], self.store),
            evaluate(predictor, self.store.splits["test"], self.store),
        )

    # -- the whole run -------------------------------------------------------------------
    def base_row(self, entry: MethodEntry) -> dict[str, Any]:
        return {
            "run": self.run_dir.name, "dataset": self.spec.name,
            "dataset_fingerprint": self.spec.fingerprint(), "encoder": self.encoder_id,
            "untrained": self.store.untrained, "synthetic": self.spec.synthetic,
            "head": self.heads.resolved_kind, "method": entry.name,
            "base_method": entry.base or entry.name, "selection": self.rule.name,
            "group_labels_used": ",".join(labels_used(entry.group_labels, self.rule)),
            "bayes_wga": self.spec.bayes_wga, "spurbench_version": version(),
            "git_commit": git_commit(), "created": now(),
        }

    def execute(self) -> RunResult:
        cfg = self.cfg
        cfg.runs_dir.mkdir(parents=True, exist_ok=True)
        if cfg.out is None or Path(cfg.out).resolve().parent == cfg.runs_dir.resolve():
            _link_latest(cfg.runs_dir, self.run_dir)
        state_path = self.run_dir / "state.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        (self.run_dir / "config.json").write_text(
            json.dumps({**self.cfg.identity(), "storage": redact(self.storage),
                        "encoder_resolved": self.encoder_id}, indent=2, default=str)
        )
        uri = cfg.tracking_uri or default_uri(self.run_dir)
        tracker = Tracker(uri, f"spurbench/{self.spec.name}", state.get("parent_run_id"))
        parent = tracker.start_parent(
            self.run_dir.name,
            params={"dataset": self.spec.name, "encoder": self.encoder_id,
                    "selection": self.rule.name, "trials": cfg.trials, "seeds": cfg.seeds,
                    "methods": ",".join(self.entries), "storage": self.storage},
            tags=self.tags(),
        )
        state["parent_run_id"] = parent
        state_path.write_text(json.dumps(state))
        rows_dir = self.run_dir / "rows"
        progress = _progress(self.console) if cfg.progress else None
        try:
            if progress is not None:
                progress.start()
            for name, entry in self.entries.items():
                self.run_method(entry, tracker, rows_dir, progress)
        except KeyboardInterrupt:
            tracker.finish("KILLED")
            raise
        except BaseException:
            tracker.finish("FAILED")
            raise
        finally:
            if progress is not None:
                progress.stop()
        table = results.read_rows(rows_dir)
        table = table.filter(pl.col("method").is_in(list(self.entries)))
        results.write_atomic(table, self.run_dir / "results.parquet")
        board = summarize(table)
        md_path = self.run_dir / "leaderboard.md"
        md_path.write_text(render_markdown(board))
        for path in (md_path, self.run_dir / "results.parquet"):
            tracker.artifact(parent, path)
        tracker.finish("FINISHED")
        return RunResult(self.run_dir, table, board)

    def tags(self) -> dict[str, str]:
        return {
            "spurbench.version": version(), "spurbench.git_commit": git_commit() or "unknown",
            "spurbench.encoder": self.encoder_id, "spurbench.dataset": self.spec.name,
            "spurbench.dataset_fingerprint": self.spec.fingerprint(),
            "spurbench.selection": self.rule.name,
            "spurbench.untrained": str(self.store.untrained).lower(),
            "spurbench.synthetic": str(self.spec.synthetic).lower(),
        }

    def run_method(self, entry: MethodEntry, tracker: Tracker, rows_dir: Path, progress) -> None:  # noqa: ANN001
        cfg = self.cfg
        row = self.base_row(entry)
        try:
            check_allowed(entry.name, entry.group_labels, self.rule)
        except UserError as exc:
            results.write_atomic(
                results.make_frame([{**row, "status": "skipped", "reason": str(exc), "trials": 0}]),
                rows_dir / f"{entry.name}-skipped.parquet",
            )
            return
        space = entry.search_space()
        fixed = {**entry.fixed, **self.fixed.get(entry.name, {})}
        tunable = {k: p for k, p in space.items() if k not in fixed}
        defaults = {k: p.default for k, p in entry.create().search_space().items()}
        task = None
        budget = cfg.trials if tunable else 0
        if progress is not None:
            task = progress.add_task(entry.name, total=budget + cfg.seeds)
        params = {**defaults, **fixed}
        n_trials = 0
        if budget:
            study_name = f"{self.spec.name}|{self.encoder_id}|{entry.name}|{self.rule.name}"
            study = open_study(self.storage, study_name, derive_seed(study_name) % (2**31))
            done_before = {t.number for t in finished_trials(study)}
            if progress is not None:
                progress.advance(task, min(len(done_before), budget))

            def objective(p: dict[str, Any], trial: optuna.trial.Trial):  # noqa: ANN202
                predictor = self.fit(entry, {**defaults, **p}, seed=0, trial=trial)
                val = evaluate(predictor, self.store.splits["val"], self.store)
                return select_score(val.as_dict(), self.rule), {
                    f"val_{k}": v for k, v in val.as_dict().items()
                }

            def on_trial(t: optuna.trial.FrozenTrial) -> None:
                tracker.nested(
                    f"{entry.name}/trial-{t.number}", params={**defaults, **t.params, **fixed},
                    metrics={k: v for k, v in t.user_attrs.items() if isinstance(v, float)},
                    tags={"spurbench.kind": "trial", "spurbench.method": entry.name,
                          "spurbench.state": t.state.name,
                          **({"spurbench.fail_reason": t.user_attrs["fail_reason"]}
                             if "fail_reason" in t.user_attrs else {})},
                    status="FINISHED" if t.state.name in ("COMPLETE", "PRUNED") else "FAILED",
                )
                if progress is not None:
                    progress.advance(task)

            outcome = tune(study, tunable, fixed, budget, objective, cfg.timeout, on_trial)
            n_trials = outcome.finished
            if not outcome.completed:
                reason = "; ".join(outcome.failures[:3]) or "no trial completed"
                results.write_atomic(
                    results.make_frame([{**row, "status": "failed", "trials": n_trials,
                                         "reason": f"every trial failed: {reason}"}]),
                    rows_dir / f"{entry.name}-failed.parquet",
                )
                return
            params = {**defaults, **outcome.best_params}
        (rows_dir / f"{entry.name}-failed.parquet").unlink(missing_ok=True)
        for seed in range(cfg.seeds):
            path = rows_dir / f"{entry.name}-seed{seed}.parquet"
            if path.exists():
                if progress is not None:
                    progress.advance(task)
                continue
            seed_row = {**row, "trials": n_trials, "seed": seed, "params": json.dumps(params, sort_keys=True)}
            try:
                predictor = self.fit(entry, params, seed)
                val, test = self.evaluate_splits(predictor)
            except UserError:
                raise
            except Exception as exc:
                seed_row.update(status="failed", reason=redact(f"seed {seed}: {type(exc).__name__}: {exc}"))
                results.write_atomic(results.make_frame([seed_row]), rows_dir / f"{entry.name}-seed{seed}-failed.parquet")
                tracker.nested(f"{entry.name}/seed-{seed}", params=params,
                               tags={"spurbench.kind": "final", "spurbench.method": entry.name},
                               status="FAILED")
                continue
            seed_row.update(status="ok", **results.metric_fields(val, test))
            results.write_atomic(results.make_frame([seed_row]), path)
            tracker.nested(
                f"{entry.name}/seed-{seed}", params=params,
                metrics={**val.as_dict("val_"), **test.as_dict("test_")},
                tags={"spurbench.kind": "final", "spurbench.method": entry.name,
                      "spurbench.seed": str(seed), **self.tags()},
            )
            if progress is not None:
                progress.advance(task)


def _progress(console: Any):  # noqa: ANN202
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("trials+seeds"), TimeElapsedColumn(), console=console, transient=False,
    )


def run(cfg: RunConfig, console: Any = None) -> RunResult:
    return Run(cfg, console).execute()


__all__ = ["RunConfig", "RunResult", "run", "asdict"]
