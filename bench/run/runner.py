"""`bench run` as a library call: dataset → features → tune → final seeds → results → report.

A run lives in one directory (runs/<dataset>-<config hash> unless --out), so re-running
the same command resumes it: the Optuna study continues and finished seeds are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import torch

from bench.data.dataset import Dataset, DatasetOptions
from bench.data.features import feature_store
from bench.data.store import FeatureSplit, FeatureStore, lend
from bench.encoders.factory import default_encoder_for, get_encoder
from bench.engine.heads import HEAD_KINDS, HeadFactory, head_kind
from bench.engine.predictor import Predictor
from bench.engine.references import ReferenceStore
from bench.engine.trainer import Trainer
from bench.errors import UserError
from bench.plugins import registry
from bench.plugins.method import Context
from bench.plugins.registry import MethodEntry
from bench.report import results
from bench.report.leaderboard import Board, render_markdown, summarize
from bench.report.metrics import Metrics, evaluate
from bench.report.publish import row_tags
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
from bench.run.progress import make_progress
from bench.run.provenance import git_commit, now, version
from bench.run.record import publish_run
from bench.run.redact import redact, remember
from bench.run.tracking import KIND, STUDY, TRIAL, Tracker, check_uri, default_uri
from bench.tuning.seeding import TUNING_SEED_BASE, derive_seed, final_seeds, generator, tuning_seed
from bench.tuning.selection import SelectionRule, check_allowed, get_rule, labels_used, select_score
from bench.tuning.space import Param, violations
from bench.tuning.space import tunable as tunable_params
from bench.tuning.study import (
    TuneOutcome,
    finished_trials,
    heartbeat,
    interrupted,
    open_storage,
    open_study,
    tune,
)

log = logging.getLogger("bench.run")


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

    prefit: Any = None  # heads fitted as one batch (--parallel-trials), see Run.fit

    def __init__(self, cfg: RunConfig, console: Any = None, key: str | None = None) -> None:
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
        if cfg.trials < 0:
            raise UserError(f"--trials {cfg.trials}: must be 0 or more")
        if cfg.seeds < 1:
            raise UserError(f"--seeds {cfg.seeds}: must be 1 or more")
        if cfg.seed_offset < 0:
            raise UserError(f"--seed-offset {cfg.seed_offset}: must be 0 or more")
        if cfg.parallel_trials < 1:
            raise UserError(f"--parallel-trials {cfg.parallel_trials}: must be 1 or more")
        if cfg.replicates < 1:
            raise UserError(f"--replicates {cfg.replicates}: must be 1 or more")
        if cfg.seed_offset + cfg.seeds * cfg.replicates > TUNING_SEED_BASE:
            raise UserError(
                f"--seed-offset {cfg.seed_offset} with {cfg.seeds} seeds × {cfg.replicates} "
                f"replicates reaches the tuning seeds ({TUNING_SEED_BASE} and up)"
            )
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

    # -- one fit -----------------------------------------------------------------------
    @property
    def label_free_reason(self) -> str:
        return f"selection '{self.rule.name}' uses no group labels"

    def lent_splits(self, entry: MethodEntry) -> tuple[FeatureSplit, FeatureSplit]:
        """Train and val as the method may see them: group and attribute labels only of
        the splits it declared, and only where the selection rule allows labels at all."""
        out = []
        for name in ("train", "val"):
            split = self.store.splits[name]
            if not self.rule.allows_group_labels:
                split = split.withhold(self.label_free_reason)
            elif name not in entry.group_labels:
                split = split.withhold(
                    f"method '{entry.name}' does not declare '{name}' in its group_labels")
            out.append(split)
        return out[0], out[1]

    def selection_metrics(self, predictor: Predictor) -> Metrics:
        """Validation metrics as the selection rule sees them: a label-free rule sees the
        validation split without its group labels (so only label-free metrics)."""
        val = self.store.splits["val"]
        if not self.rule.val_group_labels:
            val = val.withhold(self.label_free_reason)
        return evaluate(predictor, val, self.store)

    def selection_score(self, predictor: Predictor) -> float:
        """The validation score the selection rule ranks by."""
        return select_score(self.selection_metrics(predictor).as_dict(), self.rule)

    def context(self, entry: MethodEntry, params: dict[str, Any], seed: int) -> Context:
        method = entry.name
        gen = generator(self.spec.name, method, "seed", seed)
        torch.manual_seed(derive_seed(self.spec.name, method, "torch", seed))
        return Context(
            params=params, seed=seed, device=self.device, generator=gen,
            store=lend(self.store, *self.lent_splits(entry)),
            trainer=Trainer(self.device, gen), references=self.references, heads=self.heads,
            log=logging.getLogger(f"bench.plugins.method.{method}"),
        )

    def fit(
        self, entry: MethodEntry, params: dict[str, Any], seed: int, trial=None,  # noqa: ANN001
        log_to: tuple[Tracker, str] | None = None,
    ) -> Predictor:
        """One fit; in a trial, per-epoch validation scores feed the pruner (and MLflow)."""
        if self.prefit is not None:  # --parallel-trials: fitted in a batch (tuning_batched)
            fitted = self.prefit.take(entry.name, seed, trial, log_to)
            if fitted is not None:
                return fitted
        ctx = self.context(entry, params, seed)
        train, val = self.lent_splits(entry)
        scores: list[tuple[int, float]] = []
        if trial is not None:
            def report(epoch: int, head: torch.nn.Module) -> None:
                score = self.selection_score(Predictor(head))
                trial.report(score, epoch)
                scores.append((epoch, score))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

            ctx.trainer.reporter = report
        try:
            return entry.create().fit(train, val, ctx)
        finally:  # the per-epoch scores in one MLflow write (one per epoch cost a commit each)
            if log_to is not None and scores:
                log_to[0].metrics_by_step(log_to[1], f"epoch_val_{self.rule.metric}", scores)

    def evaluate_splits(self, predictor: Predictor) -> tuple[Metrics | None, Metrics]:
        """Validation metrics (None on an evaluation-only dataset) and test metrics."""
        val = self.store.splits["val"]
        return (
            evaluate(predictor, val, self.store) if len(val) else None,
            evaluate(predictor, self.store.splits["test"], self.store),
        )

    def extra_metrics(self, predictor: Predictor) -> dict[str, float]:
        """The dataset's own metrics on the test split (Dataset.extra_metrics)."""
        if type(self.plugin).extra_metrics is Dataset.extra_metrics:
            return {}
        test = self.store.splits["test"]
        md = self.spec.metadata.filter(pl.Series(self.spec.split_mask("test")))
        pred = predictor.predict(test.x).cpu().numpy()
        return {k: float(v) for k, v in self.plugin.extra_metrics(md, pred).items()}

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
            self.report_resume(self.recover(tracker), rows_dir)
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

    def log_row(
        self, tracker: Tracker, row: dict, metrics: dict | None = None,
        run_id: str | None = None, artifacts: dict[str, Any] | None = None,
    ) -> None:
        """A results row as a nested final MLflow run that `bench leaderboard publish
        --from-mlflow` reads back into the same row (descriptive fields as tags).
        `run_id`: end that (already started) run with the row instead of a new one."""
        seed = row.get("seed")
        tags = {"spurbench.kind": "final", "spurbench.method": row["method"],
                **({"spurbench.seed": str(seed)} if seed is not None else {}),
                **self.tags(), **row_tags(row)}
        status = "FAILED" if row["status"] == "failed" else "FINISHED"
        if run_id is not None:
            tracker.end_child(run_id, status, metrics, tags, artifacts)
            return
        tracker.nested(
            f"{row['method']}/" + (f"seed-{seed}" if seed is not None else row["status"]),
            params=json.loads(row["params"]) if row.get("params") else None, metrics=metrics,
            tags=tags, status=status,
        )

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
        name = study.study_name
        worker = f"{socket.gethostname()}/{os.getpid()}"
        seed = tuning_seed(replicate)

        def objective(p: dict[str, Any], trial: optuna.trial.Trial):  # noqa: ANN202
            params = {**defaults, **p}
            run_id = tracker.start_child(
                f"{entry.name}/trial-{trial.number}", params=params,
                tags={KIND: "trial", STUDY: name, TRIAL: str(trial.number),
                      "spurbench.method": entry.name, "spurbench.worker": worker, **self.tags()},
            )
            try:
                predictor = self.fit(entry, params, seed, trial=trial, log_to=(tracker, run_id))
                val = {k: v for k, v in self.selection_metrics(predictor).as_dict().items()
                       if math.isfinite(v)}
            except optuna.TrialPruned:
                tracker.end_child(run_id, "FINISHED", tags={"spurbench.state": "PRUNED"})
                raise
            except KeyboardInterrupt:
                tracker.end_child(run_id, "KILLED", tags={"spurbench.state": "INTERRUPTED"})
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                tracker.end_child(run_id, "FAILED", tags={
                    "spurbench.state": "FAIL", "spurbench.fail_reason": reason})
                raise
            score = float(val.get(self.rule.metric, math.nan))
            ok = math.isfinite(score)
            tracker.end_child(
                run_id, "FINISHED" if ok else "FAILED", {f"val_{k}": v for k, v in val.items()},
                {"spurbench.state": "COMPLETE" if ok else "FAIL", "spurbench.score": str(score)},
            )
            return score, {f"val_{k}": v for k, v in val.items()}

        def on_trial(_: optuna.trial.FrozenTrial) -> None:
            if on_progress is not None:
                on_progress(min(len(finished_trials(study)), budget))

        if on_progress is not None:
            on_progress(min(len(finished_trials(study)), budget))
        if self.cfg.parallel_trials > 1:
            from bench.tuning.batched import tune_parallel

            return tune_parallel(self, entry, study, tunable, fixed, budget, objective, on_trial,
                                 wait, seed)
        return tune(study, tunable, fixed, budget, objective, self.cfg.timeout, on_trial, wait,
                    defaults)

    def recover(self, tracker: Tracker) -> dict[str, int]:
        """After a crash: fail trials of dead processes, mark their MLflow runs KILLED.
        Returns what it found: finished trials, interrupted trials failed, runs killed."""
        studies = {}
        found = {"trials": 0, "interrupted": 0, "killed": 0}
        for entry in self.entries.values():
            if self.budget(entry) and self.why_not(entry) is None:
                for replicate in range(self.cfg.replicates):
                    study = self.open_study(entry, replicate)
                    found["interrupted"] += len(heartbeat.fail_stale(study))
                    found["trials"] += len(finished_trials(study))
                    studies[study.study_name] = study

        def trial_state(study_name: str, number: int) -> str | None:
            study = studies.get(study_name)
            trials = study.get_trials(deepcopy=False) if study is not None else []
            found = [t for t in trials if t.number == number]
            if not found:
                return None
            return "INTERRUPTED" if interrupted(found[0]) else found[0].state.name

        fixed = tracker.reconcile(trial_state)
        found["killed"] = fixed or 0
        if fixed:
            log.info("marked %d MLflow runs of interrupted trials or seeds as KILLED", fixed)
        return found

    def report_resume(self, found: dict[str, int], rows_dir: Path) -> None:
        """One line on resume: what this run directory already held, so a user sees that
        nothing completed is redone (and what an interruption cost)."""
        seeds = len([p for p in rows_dir.glob("*-seed*.parquet") if "-failed" not in p.name])
        if not (found["trials"] or seeds or found["interrupted"]):
            return
        line = (f"resuming {self.run_dir}: {found['trials']} finished trial(s) and {seeds} "
                "final seed(s) kept")
        if found["interrupted"]:
            line += (f"; {found['interrupted']} interrupted trial(s) do not count (new trials "
                     "fill the budget)")
        if found["killed"]:
            line += f"; {found['killed']} MLflow run(s) of interrupted work marked KILLED"
        if self.console is not None:
            self.console.print(line, highlight=False, soft_wrap=True)
        else:
            log.warning(line)

    def _tuned_before(
        self, rows_dir: Path, entry: MethodEntry, replicate: int
    ) -> dict[str, Any] | None:
        """What tuning decided for a replicate whose seeds already started: once a seed
        ran, tuning of that replicate is closed, so every seed of it uses the same
        parameters (even after --timeout)."""
        for seed in final_seeds(self.cfg.seed_offset, self.cfg.seeds, replicate):
            path = rows_dir / f"{entry.name}-seed{seed}.parquet"
            if not path.exists():
                continue
            try:
                row = pl.read_parquet(path).row(0, named=True)
            except Exception:  # a torn file: results.read_rows removes it
                continue
            if row.get("method") == entry.name and row.get("params"):
                return {"params": json.loads(row["params"]), "trials": int(row.get("trials") or 0),
                        "best_is_default": row.get("best_is_default")}
        return None

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
        cfg = self.cfg
        row = self.base_row(entry, replicate)
        defaults, fixed, _ = self.plan(entry)
        budget = self.budget(entry)
        params = {**defaults, **fixed}
        n_trials, best_is_default = 0, None
        tag = f"-r{replicate}" if replicate else ""
        failed_tuning = rows_dir / f"{entry.name}{tag}-failed.parquet"
        before = self._tuned_before(rows_dir, entry, replicate)
        if before is not None:
            params, n_trials = before["params"], before["trials"]
            best_is_default = before["best_is_default"]
            advance(min(n_trials, budget))
        elif budget:
            last = [0]

            def on_progress(n: int) -> None:  # n: this replicate's finished trials
                advance(n - last[0])
                last[0] = n

            outcome = self.tune_method(entry, tracker, wait=True, on_progress=on_progress,
                                       replicate=replicate)
            assert outcome is not None
            n_trials = outcome.finished
            if not outcome.completed:
                reason = "; ".join(outcome.failures[:3]) or "no trial completed"
                row.update(status="failed", trials=n_trials, reason=f"every trial failed: {reason}")
                results.write_atomic(results.make_frame([row]), failed_tuning)
                self.log_row(tracker, row)
                return
            params = {**defaults, **outcome.best_params}
            best_is_default = outcome.best_is_default
        failed_tuning.unlink(missing_ok=True)
        seeds = final_seeds(cfg.seed_offset, cfg.seeds, replicate)
        if cfg.parallel_trials > 1:  # the seeds still to run, as one batch
            from bench.tuning.batched import prefit_seeds

            prefit_seeds(self, entry, params, [
                s for s in seeds if not (rows_dir / f"{entry.name}-seed{s}.parquet").exists()])
        for seed in seeds:
            path = rows_dir / f"{entry.name}-seed{seed}.parquet"
            failed_path = rows_dir / f"{entry.name}-seed{seed}-failed.parquet"
            if path.exists():
                advance()
                continue
            seed_row = {**row, "trials": n_trials, "seed": seed,
                        "params": json.dumps(params, sort_keys=True),
                        "best_is_default": best_is_default}
            run_id = tracker.start_child(
                f"{entry.name}/seed-{seed}", params=params,
                tags={KIND: "final", "spurbench.method": entry.name, "spurbench.seed": str(seed),
                      "spurbench.replicate": str(replicate)},
            )
            try:
                predictor = self.fit(entry, params, seed)
                val, test = self.evaluate_splits(predictor)
            except KeyboardInterrupt:
                tracker.end_child(run_id, "KILLED", tags={"spurbench.state": "INTERRUPTED"})
                raise
            except UserError:
                tracker.end_child(run_id, "FAILED")
                raise
            except Exception as exc:
                reason = redact(f"seed {seed}: {type(exc).__name__}: {exc}")
                seed_row.update(status="failed", reason=reason)
                results.write_atomic(results.make_frame([seed_row]), failed_path)
                self.log_row(tracker, seed_row, run_id=run_id)
                continue
            extra = self.extra_metrics(predictor)
            seed_row.update(status="ok", head=head_kind(predictor.module),
                            test_extra=json.dumps(extra, sort_keys=True) if extra else None,
                            **results.metric_fields(val, test))
            results.write_atomic(results.make_frame([seed_row]), path)
            failed_path.unlink(missing_ok=True)
            groups = {"val": val.per_group if val else None, "test": test.per_group,
                      "test_counts": test.group_counts}
            self.log_row(tracker, seed_row,
                         {**(val.as_dict("val_") if val else {}), **test.as_dict("test_"),
                          **{f"test_{k}": v for k, v in extra.items()}},
                         run_id=run_id, artifacts={"per_group.json": groups})
            advance()


def run(cfg: RunConfig, console: Any = None) -> RunResult:
    return Run(cfg, console).execute()


__all__ = ["RunConfig", "RunResult", "run", "asdict"]
