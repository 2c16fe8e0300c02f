"""`bench run` as a library call: dataset → features → tune → final seeds → results → report.

A run lives in one directory (runs/<dataset>-<config hash> unless --out), so re-running
the same command resumes it: the Optuna study continues and finished seeds are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import polars as pl

from bench.data.dataset import DatasetOptions
from bench.data.features import feature_store
from bench.data.store import FeatureSplit, FeatureStore
from bench.encoders.factory import default_encoder_for, get_encoder
from bench.engine.heads import HEAD_KINDS, HeadFactory
from bench.engine.predictor import Predictor
from bench.engine.references import ReferenceStore
from bench.errors import UserError
from bench.plugins import registry
from bench.plugins.method import Context
from bench.plugins.registry import MethodEntry
from bench.report import results
from bench.report.leaderboard import Board, render_markdown, summarize
from bench.report.metrics import Metrics
from bench.run import sqlite_pragmas
from bench.run.config import RunConfig, method_names, parse_params, resolve_device
from bench.run.directory import (
    claim,
    exclusive,
    link_latest,
    read_state,
    write_json_atomic,
    write_text_atomic,
)
from bench.run.final_seeds import FinalSeeds
from bench.run.fitting import Fitter
from bench.run.progress import make_progress
from bench.run.provenance import git_commit, now, version
from bench.run.record import publish_run
from bench.run.redact import redact, remember
from bench.run.resume import Recovered, recover, report_resume, tuned_before
from bench.run.row_logging import log_row
from bench.run.tracking import Tracker, check_uri, default_uri
from bench.run.trials import TrialRounds
from bench.tuning.seeding import derive_seed, final_seeds, tuning_seed
from bench.tuning.selection import SelectionRule, check_allowed, get_rule, labels_used
from bench.tuning.space import Param, violations
from bench.tuning.space import tunable as tunable_params
from bench.tuning.study import (
    TuneOutcome,
    finished_trials,
    heartbeat,
    open_storage,
    open_study,
    tune,
)

log = logging.getLogger("bench.run")


@dataclass
class Chosen:
    """What a replicate's tuning decided (or why it decided nothing)."""

    params: dict[str, Any]
    trials: int
    best_is_default: bool | None
    failure: str | None = None


@dataclass
class RunResult:
    run_dir: Path
    results: pl.DataFrame
    board: Board


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of `path` that does not exist yet (what mkdir -p would create)."""
    path = Path(path).absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _quietly(*steps: Callable[[], object]) -> None:
    """Bookkeeping while an interrupt or error propagates: a failing step (the tracking
    server is gone) is logged, never allowed to replace the original exception."""
    for step in steps:
        try:
            step()
        except Exception as exc:
            log.warning("could not record the run's end: %s: %s", type(exc).__name__, exc)


class Run:
    """One `bench run`: holds the shared store, references and tracker for all methods.

    `key` names the run in a shared storage (default: <dataset>-<hash of the config>);
    a `bench worker` passes the coordinator's key.
    """

    def __init__(self, cfg: RunConfig, console: Any = None, key: str | None = None) -> None:
        cfg.check()
        self.cfg = cfg
        self.console = console
        remember(cfg.storage)
        remember(cfg.tracking_uri)
        heartbeat.interval()  # SPURBENCH_HEARTBEAT is read once trials run: check it now
        sqlite_pragmas.install()
        check_uri(cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        names = self._load_plugins(cfg)
        self.plugin = registry.get_dataset(cfg.dataset)
        if len(set(names)) != len(names):
            raise UserError(f"--methods lists a method twice: {','.join(names)}")
        self.entries = {n: registry.get_method(n) for n in names}
        self.rule: SelectionRule = get_rule(cfg.selection)
        if cfg.head not in HEAD_KINDS:
            raise UserError(f"--head {cfg.head}: expected one of {', '.join(HEAD_KINDS)}")
        self.fixed = parse_params(cfg.params, self.entries)
        for name in self.entries:
            defaults, fixed, _ = self.plan(self.entries[name])
            bad = violations(self.entries[name].create().search_space(), {**defaults, **fixed})
            if bad:
                raise UserError(f"--params for '{name}': {'; '.join(bad)}")
        if len(self.entries) == 1:  # a lone method the setting forbids is an error, not a skip
            (name, entry), = self.entries.items()
            check_allowed(name, entry.group_labels, self.rule)
        self.device = resolve_device(cfg.device)
        self.spec = self.plugin.load(
            DatasetOptions(data_root=cfg.data_root, extra=dict(cfg.dataset_opts))
        )
        for split, names in self.spec.absent_groups().items():
            if self.spec.evaluation_only and split != "test":
                continue  # no such split: nothing to warn about
            log.warning("dataset '%s': evaluation group(s) %s have no example in the %s split; "
                        "worst-group accuracy there is the minimum over the other groups",
                        self.spec.name, ", ".join(names), split)
        self.encoder_id = cfg.encoder or default_encoder_for(self.spec, self.plugin)
        self.key = key or self._default_name()
        self.run_dir = Path(cfg.out) if cfg.out else cfg.runs_dir / self.key
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise UserError(f"--out {self.run_dir}: a file, not a directory")
        created = _first_missing(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {self.run_dir}: cannot create it ({exc.strerror})") from None
        try:
            self._open(cfg)
        except BaseException:
            if created is not None:  # an early error leaves no half-made run directory
                shutil.rmtree(created, ignore_errors=True)
            raise

    def _open(self, cfg: RunConfig) -> None:
        """Storage, encoder, features, heads: the set-up that needs the run directory."""
        self.storage = cfg.storage or f"sqlite:///{(self.run_dir / 'optuna.db').resolve()}"
        open_storage(self.storage)  # a bad --storage fails now, not after encoding
        encoder = get_encoder(
            self.encoder_id, batch_size=cfg.encode_batch_size, workers=cfg.encode_workers,
            device=self.device, progress=cfg.progress,
        )
        self.store: FeatureStore = feature_store(
            self.spec, encoder, self.device, cache_dir=self._cache_dir()
        )
        self.heads = HeadFactory(
            self.store.dim, self.store.n_classes, self.device, self.store.class_text,
            self.store.visual_projection, self.store.logit_scale, cfg.head,
        )
        self.references = ReferenceStore(self.store, self.heads, self.run_dir / "references")
        self.fitter = Fitter(self.spec, self.plugin, self.store, self.heads, self.references,
                             self.rule, self.device)

    @staticmethod
    def _load_plugins(cfg: RunConfig) -> list[str]:
        """Import only the plugin files this run uses (importing all of them cost ~2 s,
        scikit-learn and every method's dependencies); the run's method names."""
        from bench.plugins.index import plugin_files

        files = plugin_files(cfg.plugins)
        if files is not None:
            names = method_names(cfg.methods, sorted(files.methods))
            if cfg.dataset in files.datasets and all(n in files.methods for n in names):
                registry.load_files([files.datasets[cfg.dataset],
                                     *sorted({files.methods[n] for n in names})])
                return names
        registry.load_plugins(cfg.plugins)  # unknown names are reported against every plugin
        return method_names(cfg.methods, list(registry.methods()))

    def _default_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.cfg.identity(), sort_keys=True).encode())
        return f"{self.cfg.dataset}-{digest.hexdigest()[:10]}"

    def _cache_dir(self) -> Path:
        from bench.data.cache import cache_dir

        return cache_dir()

    # -- one fit (bench.run.fitting) ------------------------------------------------------
    def lent_splits(self, entry: MethodEntry) -> tuple[FeatureSplit, FeatureSplit]:
        return self.fitter.lent_splits(entry)

    def context(self, entry: MethodEntry, params: dict[str, Any], seed: int) -> Context:
        return self.fitter.context(entry, params, seed)

    def fit(self, entry: MethodEntry, params: dict[str, Any], seed: int) -> Predictor:
        """One configuration outside tuning (what a final seed fits)."""
        return self.fitter.fit(entry, params, seed)

    def evaluate_splits(self, predictor: Predictor) -> tuple[Metrics | None, Metrics]:
        return self.fitter.evaluate_splits(predictor)

    # -- the whole run -------------------------------------------------------------------
    def base_row(self, entry: MethodEntry, replicate: int = 0) -> dict[str, Any]:
        return {
            "run": self.run_dir.name, "dataset": self.spec.name,
            "dataset_fingerprint": self.spec.fingerprint(), "encoder": self.encoder_id,
            "untrained": self.store.untrained, "synthetic": self.spec.synthetic,
            "head": self.heads.resolved_kind, "method": entry.name,
            "base_method": entry.base or entry.name, "selection": self.rule.name,
            "group_labels_used": ",".join(
                labels_used(entry.group_labels, self.rule, tuned=self.budget(entry) > 0)
            ),
            "bayes_wga": self.spec.bayes_wga, "spurbench_version": version(),
            "git_commit": git_commit(), "created": now(), "replicate": replicate,
            "replicates": self.cfg.replicates, "space_dim": len(self.plan(entry)[2]),
            "reason": self.untuned_reason(entry),
        }

    def untuned_reason(self, entry: MethodEntry) -> str | None:
        """Why this method runs no trials (shown on the board), or None when it is tuned."""
        if self.budget(entry):
            return None
        if self.plan(entry)[2]:
            return "run at its defaults (--trials 0)" if not self.cfg.trials else (
                "run at its defaults")
        return entry.cls.untuned_because or "it has no tunable hyperparameters"

    def execute(self) -> RunResult:
        with exclusive(self.run_dir):
            return self._execute()

    def _execute(self) -> RunResult:
        cfg = self.cfg
        claim(self.run_dir, self.identity())
        cfg.runs_dir.mkdir(parents=True, exist_ok=True)
        if cfg.out is None or Path(cfg.out).resolve().parent == cfg.runs_dir.resolve():
            link_latest(cfg.runs_dir, self.run_dir)
        state_path = self.run_dir / "state.json"
        state = read_state(state_path)
        uri = cfg.tracking_uri or default_uri(self.run_dir)
        write_json_atomic(self.run_dir / "config.json", {
            **self.cfg.identity(), "storage": redact(self.storage), "tracking_uri": redact(uri),
            "encoder_resolved": self.encoder_id})
        tracker = Tracker(uri, f"spurbench/{self.spec.name}", state.get("parent_run_id"))
        parent = tracker.start_parent(
            self.run_dir.name,
            params={"dataset": self.spec.name, "encoder": self.encoder_id,
                    "selection": self.rule.name, "trials": cfg.trials, "seeds": cfg.seeds,
                    "methods": ",".join(self.entries), "storage": self.storage},
            tags=self.tags(),
        )
        state["parent_run_id"] = parent
        write_json_atomic(state_path, state)
        publish = lambda status: publish_run(self, tracker, status)  # noqa: E731
        rows_dir = self.run_dir / "rows"
        progress = make_progress(self.console, "trials+seeds") if cfg.progress else None
        try:
            publish("running")  # from here on `bench worker --storage URL` can join
            report_resume(self.recover(tracker), self.run_dir, self.console)
            if progress is not None:
                progress.start()
            for entry in self.entries.values():
                self.run_method(entry, tracker, rows_dir, progress)
        except KeyboardInterrupt:
            _quietly(lambda: tracker.finish("KILLED"), lambda: publish("interrupted"))
            raise
        except BaseException:
            _quietly(lambda: tracker.finish("FAILED"), lambda: publish("failed"))
            raise
        finally:
            if progress is not None:
                progress.stop()
        self.recover(tracker)  # trials of workers that died meanwhile: their runs KILLED
        table = results.read_rows(rows_dir)
        table = table.filter(pl.col("method").is_in(list(self.entries)))
        results.write_atomic(table, self.run_dir / "results.parquet")
        board = summarize(table)
        md_path = self.run_dir / "leaderboard.md"
        artifacts = [md_path, self.run_dir / "results.parquet"]
        links: dict[str, str] = {}
        if board.ranked.height:
            from bench.report.plots import wga_vs_average

            artifacts.append(wga_vs_average(board, self.run_dir / "wga-vs-avg.png"))
            links["Worst-group vs average accuracy"] = "wga-vs-avg.png"
        write_text_atomic(md_path, render_markdown(board, links))
        for path in artifacts:
            tracker.artifact(parent, path)
        tracker.finish("FINISHED")
        publish("finished")
        sqlite_pragmas.checkpoint(self.run_dir)
        return RunResult(self.run_dir, table, board)

    def identity(self) -> dict[str, Any]:
        """What decides this run's numbers: its options, and the data and encoder they
        resolved to (a dataset that changed on disk is another configuration)."""
        return {**self.cfg.identity(), "encoder_resolved": self.encoder_id,
                "dataset_fingerprint": self.spec.fingerprint()}

    def tags(self) -> dict[str, str]:
        return {
            "spurbench.version": version(), "spurbench.git_commit": git_commit() or "unknown",
            "spurbench.encoder": self.encoder_id, "spurbench.dataset": self.spec.name,
            "spurbench.dataset_fingerprint": self.spec.fingerprint(),
            "spurbench.selection": self.rule.name,
            "spurbench.untrained": str(self.store.untrained).lower(),
            "spurbench.synthetic": str(self.spec.synthetic).lower(),
        }

    def log_row(self, tracker: Tracker, row: dict[str, Any]) -> None:
        log_row(tracker, self.tags(), row)

    # -- per method ----------------------------------------------------------------------
    def why_not(self, entry: MethodEntry) -> str | None:
        """Why a method cannot run in this setting (None: it can)."""
        if self.spec.evaluation_only and entry.cls.needs_training_data:
            return (f"method '{entry.name}' cannot run here: dataset '{self.spec.name}' is "
                    "evaluation-only (no training split); only methods that need no training "
                    "data run on it")
        try:
            check_allowed(entry.name, entry.group_labels, self.rule)
            why = entry.create().unsupported(self.store)
            if why is not None:
                raise UserError(f"method '{entry.name}' cannot run here: {why}")
        except UserError as exc:
            return str(exc)
        return None

    def plan(self, entry: MethodEntry) -> tuple[dict[str, Any], dict[str, Any], dict[str, Param]]:
        """(defaults, fixed, tunable) of a method under this run's --params."""
        space = entry.search_space()
        fixed = {**entry.fixed, **self.fixed.get(entry.name, {})}
        tunable = tunable_params(space, fixed)
        defaults = {k: p.default for k, p in entry.create().search_space().items()}
        return defaults, fixed, tunable

    def budget(self, entry: MethodEntry) -> int:
        return self.cfg.trials if self.plan(entry)[2] else 0

    def study_name(self, entry: MethodEntry, replicate: int = 0) -> str:
        """One study per (dataset, encoder, method, selection, replicate) and run config."""
        name = f"{self.spec.name}|{self.encoder_id}|{entry.name}|{self.rule.name}|{self.key}"
        return name + (f"|r{replicate}" if replicate else "")

    def sampler_seed(self, entry: MethodEntry, replicate: int = 0) -> int:
        """The study's sampler seed: from what decides this method's search only (data,
        encoder, head, method, selection, budget, its fixed parameters, the replicate),
        never from which other methods share the run."""
        _, fixed, _ = self.plan(entry)
        return derive_seed(
            "sampler", self.spec.fingerprint(), self.encoder_id, self.heads.resolved_kind,
            entry.name, self.rule.name, self.budget(entry), self.cfg.parallel_trials,
            json.dumps(fixed, sort_keys=True, default=str), replicate,
        ) % (2**31)

    def open_study(self, entry: MethodEntry, replicate: int = 0) -> optuna.Study:
        defaults, _, tunable = self.plan(entry)
        return open_study(
            self.storage, self.study_name(entry, replicate), self.sampler_seed(entry, replicate),
            first={k: defaults[k] for k in tunable}, budget=self.budget(entry),
        )

    def tune_method(
        self, entry: MethodEntry, tracker: Tracker, wait: bool = True,
        on_progress: Callable[[int], None] | None = None, replicate: int = 0,
    ) -> TuneOutcome | None:
        """Tune one method in the run's shared study; every trial is a nested MLflow run.

        The coordinator (wait=True) and each `bench worker` (wait=False) call this; None
        when there is nothing to tune (--trials 0, or every parameter fixed).
        """
        defaults, fixed, tunable = self.plan(entry)
        budget = self.budget(entry)
        if not budget:
            return None
        study = self.open_study(entry, replicate)
        rounds = TrialRounds(
            self.fitter, tracker, entry, defaults, tuning_seed(replicate), study.study_name,
            f"{socket.gethostname()}/{os.getpid()}", self.tags(),
        )

        if on_progress is not None:  # what earlier runs finished (tune() goes on from it)
            on_progress(min(len(finished_trials(study)), budget))
        return tune(study, tunable, fixed, budget, None, self.cfg.timeout, None, wait,
                    defaults, width=self.cfg.parallel_trials, rounds=rounds,
                    progress=on_progress)

    def recover(self, tracker: Tracker) -> Recovered:
        """After a crash: fail trials of dead processes, mark their MLflow runs KILLED."""
        studies = [self.open_study(entry, r) for entry in self.entries.values()
                   if self.budget(entry) and self.why_not(entry) is None
                   for r in range(self.cfg.replicates)]
        return recover(studies, tracker)

    def _skip(self, entry: MethodEntry, tracker: Tracker, rows_dir: Path, why: str) -> None:
        if len(self.entries) == 1:
            raise UserError(why)
        row = {**self.base_row(entry), "status": "skipped", "reason": why, "trials": 0}
        results.write_atomic(results.make_frame([row]), rows_dir / f"{entry.name}-skipped.parquet")
        self.log_row(tracker, row)

    def run_method(self, entry: MethodEntry, tracker: Tracker, rows_dir: Path, progress) -> None:  # noqa: ANN001
        why = self.why_not(entry)
        if why is not None:
            self._skip(entry, tracker, rows_dir, why)
            return
        task = None
        if progress is not None:
            task = progress.add_task(
                entry.name, total=(self.budget(entry) + self.cfg.seeds) * self.cfg.replicates)
        done = [0]

        def advance(n: int = 1) -> None:
            done[0] += n
            if progress is not None:
                progress.update(task, completed=done[0])

        for replicate in range(self.cfg.replicates):
            self.run_replicate(entry, tracker, rows_dir, replicate, progress, task, advance)

    def run_replicate(
        self, entry: MethodEntry, tracker: Tracker, rows_dir: Path, replicate: int,
        progress: Any, task: Any, advance: Callable[[int], None],
    ) -> None:
        """One sweep replicate of a method: tune (its own sampler seed), select, then its
        own final seeds."""
        row = self.base_row(entry, replicate)
        chosen = self.choose(entry, tracker, rows_dir, replicate, advance)
        tag = f"-r{replicate}" if replicate else ""
        failed_tuning = rows_dir / f"{entry.name}{tag}-failed.parquet"
        if chosen.failure is not None:
            row.update(status="failed", trials=chosen.trials, reason=chosen.failure)
            results.write_atomic(results.make_frame([row]), failed_tuning)
            self.log_row(tracker, row)
            return
        failed_tuning.unlink(missing_ok=True)
        seeds = FinalSeeds(self.fitter, tracker, entry, rows_dir, self.tags(),
                           batch=self.cfg.parallel_trials > 1)
        seeds.run({**row, "trials": chosen.trials, "best_is_default": chosen.best_is_default},
                  chosen.params, self.final_seeds(replicate), advance)

    def final_seeds(self, replicate: int) -> list[int]:
        return final_seeds(self.cfg.seed_offset, self.cfg.seeds, replicate)

    def choose(
        self, entry: MethodEntry, tracker: Tracker, rows_dir: Path, replicate: int,
        advance: Callable[[int], None],
    ) -> Chosen:
        """The parameters a replicate's final seeds use: what its tuning chose (kept once
        a seed ran), or the defaults and fixed values when nothing is tuned."""
        defaults, fixed, _ = self.plan(entry)
        budget = self.budget(entry)
        before = tuned_before(rows_dir, entry.name, self.final_seeds(replicate))
        if before is not None:
            advance(min(before["trials"], budget))
            return Chosen(before["params"], before["trials"], before["best_is_default"])
        if not budget:
            return Chosen({**defaults, **fixed}, 0, None)
        last = [0]

        def on_progress(n: int) -> None:  # n: this replicate's finished trials
            advance(n - last[0])
            last[0] = n

        outcome = self.tune_method(entry, tracker, wait=True, on_progress=on_progress,
                                   replicate=replicate)
        assert outcome is not None
        if not outcome.completed:
            reason = "; ".join(outcome.failures[:3]) or "no trial completed"
            return Chosen({}, outcome.finished, None, f"every trial failed: {reason}")
        return Chosen({**defaults, **outcome.best_params}, outcome.finished,
                      outcome.best_is_default)


def run(cfg: RunConfig, console: Any = None) -> RunResult:
    return Run(cfg, console).execute()


__all__ = ["RunConfig", "RunResult", "run", "asdict"]
