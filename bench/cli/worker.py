"""`bench worker`: the CLI side of bench.run.worker (parse, call, print)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

HELP = (
    "Join a `bench run` from this machine: take trials from its studies in a shared "
    "--storage until every method's budget is taken. The run's config, MLflow experiment "
    "and parent run come from the storage (published by `bench run --storage URL`); "
    "the coordinator runs the final seeds.\n\n"
    "Example:  PGPASSWORD=... bench worker --storage postgresql://bench@db-host/spurbench "
    "--device cuda:1"
)


def worker(
    storage: str = typer.Option(
        ..., "--storage", envvar="SPURBENCH_STORAGE",
        help="The coordinator's Optuna storage URL (or $SPURBENCH_STORAGE).",
    ),
    run: str = typer.Option(
        None, "--run", help="Run key, e.g. synthetic-1a2b3c4d5e (default: the one running run)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    data_root: Path = typer.Option(
        None, "--data-root", help="Where datasets live (or $SPURBENCH_DATA)."
    ),
    plugins: list[Path] = typer.Option(None, "--plugins", help="Extra plugin folder (repeatable)."),
    runs_dir: Path = typer.Option(
        Path("runs"), "--runs-dir", help="Local cache of reference models."
    ),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri",
        help="The run's MLflow URI with its password (or $MLFLOW_TRACKING_URI); "
        "default: the URI the run recorded.",
    ),
    timeout: float = typer.Option(None, "--timeout", min=0, help="Seconds of tuning per method."),
    wait: float = typer.Option(
        300.0, "--wait", min=0, help="Seconds to wait for the run to appear in the storage."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    from rich.table import Table

    from bench.run.worker import WorkerOptions, work

    err = Console(stderr=True)
    out = Console(width=None if sys.stdout.isatty() else 160)
    opts = WorkerOptions(
        storage=storage, run=run, device=device, data_root=data_root,
        plugins=list(plugins or []), runs_dir=runs_dir, tracking_uri=tracking_uri,
        timeout=timeout, wait=wait, progress=not no_progress,
    )
    record, reports = work(opts, console=err)
    table = Table("method", "trials run here", "done by all so far", "budget", "note",
                  title=f"bench worker: run {record['key']}")
    for r in reports:
        table.add_row(r.method, str(r.mine), str(r.done), str(r.budget), r.note)
    out.print(table)
    out.print("the coordinator (`bench run`) runs the final seeds and writes the leaderboard")


def register(app: typer.Typer) -> None:
    app.command("worker", help=HELP)(worker)
