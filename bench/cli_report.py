"""CLI for reports: `bench leaderboard publish` and `bench compare`. Parse, call, print."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

leaderboard_app = typer.Typer(
    help="Publish leaderboards (markdown, JSON, plots) from runs or MLflow.\n\n"
    "Example:  bench leaderboard publish --from runs/latest --to leaderboards/",
    no_args_is_help=True,
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


@leaderboard_app.command(
    "publish",
    help="Write <name>.md, <name>.json and PNG plots per (dataset, encoder, selection), and "
    "an index README.md. Reads run directories (results.parquet) or an MLflow experiment; "
    "when several runs hold the same method, the newest run's rows are used.\n\n"
    "Example:  bench leaderboard publish --from runs/latest --to leaderboards/",
)
def publish_command(
    sources: list[Path] = typer.Option(
        None, "--from", help="Run directory, results.parquet, or a folder of run directories "
        "(repeatable; default runs/latest)."),
    to: Path = typer.Option(Path("leaderboards"), "--to", help="Output folder."),
    from_mlflow: str = typer.Option(
        None, "--from-mlflow",
        help="Read this MLflow experiment instead (e.g. spurbench/synthetic)."),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri",
        help="MLflow tracking URI for --from-mlflow (or $MLFLOW_TRACKING_URI)."),
    mlflow_runs: list[str] = typer.Option(
        None, "--mlflow-run", help="Only these parent runs (name or id; repeatable)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
) -> None:
    from bench.errors import UserError
    from bench.publish import publish, read_runs, rows_from_mlflow

    if from_mlflow and sources:
        raise UserError("--from and --from-mlflow: give one source, not both")
    if from_mlflow:
        table = rows_from_mlflow(from_mlflow, tracking_uri, list(mlflow_runs or []) or None)
    else:
        table = read_runs(list(sources or [Path("runs") / "latest"]))
    with err.status("publishing leaderboards"):
        done = publish(table, to, plots=not no_plots)
    for p in done:
        out.print(f"{p.stem}: {len(p.board.ranked)} ranked, {len(p.board.not_run)} not ranked "
                  f"→ {', '.join(str(f) for f in p.files)}", highlight=False)
        for d in p.dropped:
            out.print(f"  superseded: {d}", highlight=False)
    out.print(f"index: {Path(to) / 'README.md'}", highlight=False)


def compare_command(
    baseline: Path = typer.Argument(
        ..., metavar="BASELINE", help="Leaderboard JSON or run directory."),
    new: Path = typer.Argument(..., metavar="NEW", help="Leaderboard JSON or run directory."),
    tolerance: float = typer.Option(
        1.0, "--tolerance", help="Allowed WGA drop in points (%) before a drop is a regression."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level; CIs are 1 - alpha."),
    report: Path = typer.Option(None, "--report", help="Also write a markdown report here."),
) -> None:
    from bench.compare import compare, print_comparison, render_markdown

    result = compare(baseline, new, tolerance, alpha)
    print_comparison(result, out)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_markdown(result))
        out.print(f"report: {report}", highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add `leaderboard publish` and `compare` to the `bench` app."""
    app.add_typer(leaderboard_app, name="leaderboard")
    app.command(
        "compare",
        help="Compare two results (leaderboard JSON or run directory) method by method: change "
        "in test WGA and average accuracy, paired t-test over matching seeds (Welch's when "
        "seeds do not match), CI. Exit 0: no regression; 1: a method's WGA fell by more than "
        "--tolerance with significance (or it stopped running); 2: bad input.\n\n"
        "Example:  bench compare leaderboards/synthetic.json runs/latest --tolerance 1 "
        "--report compare.md",
    )(compare_command)
