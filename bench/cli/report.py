"""CLI for reports and gates: `bench leaderboard publish`, `bench compare`, `bench gate`.
Parse, call, print."""

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
    "when several runs hold the same method, the newest run's rows are used. A board already "
    "in the folder is updated: the run's methods replace their rows, the others keep theirs "
    "(and their provenance); a board of other contents, encoder or selection rule is refused "
    "unless --replace.\n\n"
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
    replace: bool = typer.Option(
        False, "--replace", help="Overwrite boards already in the folder instead of merging."),
) -> None:
    from bench.errors import UserError
    from bench.report.publish import publish, read_runs, rows_from_mlflow

    if from_mlflow and sources:
        raise UserError("--from and --from-mlflow: give one source, not both")
    if from_mlflow:
        table = rows_from_mlflow(from_mlflow, tracking_uri, list(mlflow_runs or []) or None)
    else:
        table = read_runs(list(sources or [Path("runs") / "latest"]))
    with err.status("publishing leaderboards"):
        done = publish(table, to, plots=not no_plots, replace=replace)
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
    power: float = typer.Option(
        0.8, "--power", help="Power at which the minimum detectable drop (MDE) is stated."),
    pair: list[str] = typer.Option(
        None, "--pair", help="OLD=NEW: compare method OLD of BASELINE with method NEW of NEW "
        "(a variant under a new name; repeatable; then only the pairs are compared)."),
    across_encoders: bool = typer.Option(
        False, "--across-encoders", help="Allow BASELINE and NEW to come from different "
        "encoders (one method on two backbones, e.g. two folders of a sweep)."),
    report: Path = typer.Option(None, "--report", help="Also write a markdown report here."),
) -> None:
    from bench.report.compare import compare, parse_pairs, print_comparison, render_markdown

    result = compare(baseline, new, tolerance, alpha, power, parse_pairs(list(pair or [])),
                     across_encoders=across_encoders)
    print_comparison(result, out)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_markdown(result))
        out.print(f"report: {report}", highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


GATE_HELP = (
    "Regression gate with power: fit OLD and NEW side by side on paired seeds (same seed, "
    "same initialisation and batch order) at fixed hyperparameters (defaults + the given "
    "ones; nothing is tuned), adding --seeds-per-round seeds until the interval on the "
    "paired WGA difference NEW − OLD is decisive against --tolerance or --max-seeds is "
    "reached. Stopping rule: the looks are fixed in advance and each uses a paired t "
    "interval at level 1 − alpha/K (Bonferroni over the K looks), so the intervals hold "
    "simultaneously with probability ≥ 1 − alpha however the gate stops: a false "
    "'regression' and a false 'no regression' each have probability ≤ alpha/2. "
    "METHOD or METHOD:KEY=VALUE,KEY=VALUE names an arm (keys as in --params). Rows go to "
    "--out (old/, new/, gate.json); a rerun resumes. Exit 0: no regression; 1: regression "
    "(or NEW failed where OLD did not); 3: inconclusive at the cap; 2: bad input.\n\n"
    "Example:  bench gate --dataset synthetic --old sfr --new sfr:dropout=0\n\n"
    "Example:  bench gate --old sfr --new sfr-v2 --plugins ./my_methods --max-seeds 30"
)


def gate_command(
    old: str = typer.Option(..., "--old", help="The method as it is: METHOD[:KEY=VALUE,…]."),
    new: str = typer.Option(..., "--new", help="The variant: METHOD[:KEY=VALUE,…], e.g. "
                            "sfr:dropout=0 or sfr-v2."),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset plugin name."),
    tolerance: float = typer.Option(
        1.0, "--tolerance", help="Allowed WGA drop in points (%) before a drop is a regression."),
    alpha: float = typer.Option(
        0.05, "--alpha", help="Error rate over all looks: the intervals are simultaneous "
        "at 1 - alpha."),
    power: float = typer.Option(
        0.8, "--power", help="Power at which the minimum detectable drop (MDE) is stated."),
    per_round: int = typer.Option(
        5, "--seeds-per-round", help="Paired seeds added per round (a look after each)."),
    max_seeds: int = typer.Option(20, "--max-seeds", help="Seed cap: the last look."),
    seed_offset: int = typer.Option(0, "--seed-offset", help="First seed (default 0)."),
    out_dir: Path = typer.Option(
        None, "--out", help="Gate directory (default runs/gate-<dataset>-<hash>)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where gate directories go."),
    encoder: str = typer.Option(None, "--encoder", help="identity | openclip:MODEL:PRETRAINED."),
    head: str = typer.Option("auto", "--head", help="auto | linear | prompt."),
    selection: str = typer.Option(
        "worst-group", "--selection", help="worst-group | worst-class | average (decides "
        "which group labels methods may use)."),
    dataset_opt: list[str] = typer.Option(
        None, "--dataset-opt", help="Dataset option KEY=VALUE (repeatable)."),
    data_root: Path = typer.Option(
        None, "--data-root", help="Where datasets live (or $SPURBENCH_DATA)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    plugins: list[Path] = typer.Option(None, "--plugins", help="Extra plugin folder (repeatable)."),
) -> None:
    from bench.report.gate import GateConfig, final_lines, gate, look_line
    from bench.run.config import parse_dataset_opts

    cfg = GateConfig(
        old=old, new=new, dataset=dataset, dataset_opts=parse_dataset_opts(dataset_opt or []),
        data_root=data_root, encoder=encoder, head=head, selection=selection,
        tolerance=tolerance, alpha=alpha, power=power, per_round=per_round,
        max_seeds=max_seeds, seed_offset=seed_offset, out=out_dir, runs_dir=runs_dir,
        device=device, plugins=list(plugins or []),
    )
    result = gate(cfg, on_look=lambda lk, r: out.print(look_line(lk, r), highlight=False),
                  console=err)
    for line in final_lines(result):
        out.print(line, highlight=False, soft_wrap=True)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add `leaderboard publish`, `compare` and `gate` to the `bench` app."""
    app.add_typer(leaderboard_app, name="leaderboard")
    app.command(
        "compare",
        help="Compare two results (leaderboard JSON or run directory) method by method: change "
        "in test WGA and average accuracy, paired t-test over matching seeds (Welch's when "
        "seeds do not match), CI, and the minimum detectable drop (MDE) at --power for the "
        "seeds at hand. Exit 0: no regression (every WGA CI at or above -tolerance); 1: a "
        "method's WGA fell by more than --tolerance with significance (or it stopped "
        "running); 3: inconclusive (a CI straddles -tolerance: add seeds, or use `bench "
        "gate`); 2: bad input.\n\n"
        "Example:  bench compare leaderboards/synthetic.json runs/latest --tolerance 1 "
        "--report compare.md\n\n"
        "Example:  bench compare leaderboards/synthetic.json runs/latest --pair sfr=sfr-v2",
    )(compare_command)
    app.command("gate", help=GATE_HELP)(gate_command)
