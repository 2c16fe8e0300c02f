"""`bench worker`: join a run's studies from any machine, so N workers share one sweep.

The handshake lives in the Optuna storage itself. `bench run --storage URL` (the
coordinator) publishes its run there: the config (never a secret), the resolved method
list, encoder and dataset fingerprint, the MLflow experiment and parent run, and the
tracking URI with its password masked. `bench worker --storage URL` reads that record,
builds the same Run locally (its own --device, --data-root, feature cache) and takes
trials from each method's study, in the coordinator's order, until every slot of the
budget is taken (bench.tuning.study admits no more than the budget, so N workers never
overrun it). The coordinator waits for the last trials and alone runs the final seeds,
so a seed is never run twice; a worker never writes results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna

from bench.errors import UserError
from bench.run.progress import make_progress
from bench.run.record import RECORD_ATTR, RECORD_PREFIX
from bench.run.redact import MASK, redact, remember
from bench.run.runner import Run, RunConfig
from bench.run.tracking import Tracker
from bench.tuning.study import finished_trials, heartbeat, open_storage

JOINABLE = ("running", "interrupted", "failed")  # the coordinator resumes the latter two


@dataclass
class WorkerOptions:
    """What a worker decides for itself; everything else comes from the run record."""

    storage: str
    run: str | None = None  # the run key; None: the one running run in the storage
    device: str = "auto"
    data_root: Path | None = None
    plugins: list[Path] = field(default_factory=list)
    runs_dir: Path = Path("runs")  # local: reference-model cache, as for `bench run`
    tracking_uri: str | None = None
    timeout: float | None = None  # seconds of tuning per method
    wait: float = 300.0  # seconds to wait for a run to be published
    progress: bool = True


@dataclass
class MethodReport:
    method: str
    mine: int  # trials this worker finished
    done: int  # trials of the study that count
    budget: int
    note: str = ""


# -- the record ----------------------------------------------------------------------------
def list_runs(storage: str) -> list[dict[str, Any]]:
    """Every run published in the storage, newest first."""
    summaries = optuna.get_all_study_summaries(open_storage(storage), include_best_trial=False)
    records = [
        s.user_attrs[RECORD_ATTR] for s in summaries
        if s.study_name.startswith(RECORD_PREFIX) and RECORD_ATTR in s.user_attrs
    ]
    return sorted(records, key=lambda r: r.get("updated", ""), reverse=True)


def find_run(
    storage: str, key: str | None, wait: float, on_wait: Callable[[], None] | None = None
) -> dict[str, Any]:
    """The record of run `key`, or of the one running run; waits up to `wait` seconds
    (calling `on_wait` once when it starts waiting)."""
    deadline = time.monotonic() + wait
    waited = False
    while True:
        runs = list_runs(storage)
        if key is not None:
            found = [r for r in runs if r["key"] == key]
            if found:
                return found[0]
        else:
            running = [r for r in runs if r["status"] == "running"]
            if len(running) == 1:
                return running[0]
            if len(running) > 1:
                raise UserError(
                    f"--storage {redact(storage)} has {len(running)} running runs; "
                    f"pick one with --run: {', '.join(r['key'] for r in running)}"
                )
        if time.monotonic() >= deadline:
            known = ", ".join(f"{r['key']} ({r['status']})" for r in runs) or "none"
            what = f"no run '{key}'" if key else "no running run"
            raise UserError(
                f"--storage {redact(storage)}: {what} after waiting {wait:g}s "
                f"(known: {known}); start `bench run --storage URL ...` first"
            )
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(min(1.0, max(0.1, deadline - time.monotonic())))


def tracking_uri_for(record: dict[str, Any], given: str | None) -> str:
    """Where this worker logs: the coordinator's tracking URI, completed with the
    password from --tracking-uri / MLFLOW_TRACKING_URI (the record never stores one)."""
    want: str = record["tracking_uri"]
    key = record["key"]
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        remember(uri)
        if redact(uri).rstrip("/") != want.rstrip("/"):
            raise UserError(
                f"--tracking-uri {redact(uri)}: run {key} logs to {want}; "
                "a worker must log to the coordinator's MLflow"
            )
        return uri
    if MASK in want:
        raise UserError(
            f"run {key} logs to {want}; its password is not stored, so give the full URI "
            "with --tracking-uri or MLFLOW_TRACKING_URI"
        )
    if want.startswith("sqlite:///") and not Path(want.removeprefix("sqlite:///")).exists():
        raise UserError(
            f"run {key} logs to {want} on the coordinator's machine, which this machine "
            "cannot reach; start `bench run` with --tracking-uri http://HOST:PORT (an "
            "MLflow server) to add workers on other machines"
        )
    return want


def config_from_record(record: dict[str, Any], opts: WorkerOptions, tracking_uri: str) -> RunConfig:
    """The coordinator's config (every field of its identity, e.g. --params, --seed-offset,
    --parallel-trials) with this machine's own settings."""
    known = {f.name for f in fields(RunConfig)}
    shared = {k: v for k, v in record["config"].items() if k in known}
    return RunConfig(**{
        **shared, "methods": list(record["methods"]), "data_root": opts.data_root,
        "runs_dir": opts.runs_dir, "storage": opts.storage, "tracking_uri": tracking_uri,
        "device": opts.device, "plugins": list(opts.plugins), "timeout": opts.timeout,
        "progress": opts.progress,
    })


# -- the worker ----------------------------------------------------------------------------
def work(opts: WorkerOptions, console: Any = None) -> tuple[dict[str, Any], list[MethodReport]]:
    """Join a run and tune its methods until every budget is taken."""
    remember(opts.storage)
    remember(opts.tracking_uri)

    def on_wait() -> None:
        if console is not None:
            what = f"run {opts.run}" if opts.run else "a running run"
            console.print(f"waiting up to {opts.wait:g}s for {what} in {redact(opts.storage)}",
                          soft_wrap=True, markup=False, highlight=False)

    record = find_run(opts.storage, opts.run, opts.wait, on_wait)
    if console is not None:
        console.print(f"joining run {record['key']} ({record['status']}): "
                      f"{', '.join(record['methods'])}, {record['config']['trials']} trials each",
                      soft_wrap=True, markup=False, highlight=False)
    uri = tracking_uri_for(record, opts.tracking_uri)
    run = Run(config_from_record(record, opts, uri), console, key=record["key"])
    if run.encoder_id != record["encoder"]:
        raise UserError(
            f"run {record['key']}: this machine resolves the encoder to {run.encoder_id}, "
            f"the coordinator to {record['encoder']}"
        )
    if run.spec.fingerprint() != record["dataset_fingerprint"]:
        raise UserError(
            f"run {record['key']}: dataset '{run.spec.name}' on this machine differs from the "
            "coordinator's (another version or --data-root); workers must see the same data"
        )
    tracker = Tracker(uri, record["experiment"], record["parent_run_id"])
    me = heartbeat.owner_id()
    reports = []
    progress = make_progress(console, "trials (all workers)") if opts.progress else None
    try:
        if progress is not None:
            progress.start()
        for entry in run.entries.values():
            budget = run.budget(entry)
            why = run.why_not(entry)
            if why is not None or not budget:
                reports.append(MethodReport(entry.name, 0, 0, budget, why or "nothing to tune"))
                continue
            reps = run.cfg.replicates
            task = (progress.add_task(entry.name, total=budget * reps)
                    if progress is not None else None)
            done: list = []
            for replicate in range(reps):
                def on_progress(n: int, task: Any = task, base: int = len(done)) -> None:
                    if progress is not None:
                        progress.update(task, completed=base + n)

                run.tune_method(entry, tracker, wait=False, on_progress=on_progress,
                                replicate=replicate)
                done += finished_trials(run.open_study(entry, replicate))
            mine = sum(t.user_attrs.get(heartbeat.OWNER) == me for t in done)
            reports.append(MethodReport(entry.name, mine, len(done), budget * reps))
    finally:
        if progress is not None:
            progress.stop()
    return record, reports


