"""The `bench` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console

from bench.cli.data import register as register_data_commands
from bench.cli.report import register as register_report_commands
from bench.cli.worker import register as register_worker_command
from bench.errors import UserError

app = typer.Typer(
    help="spurbench: compare methods for robustness to spurious correlations.\n\n"
    "Example:  bench run --methods erm --dataset synthetic",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
methods_app = typer.Typer(
    help="List method plugins.\n\nExample:  bench methods list", no_args_is_help=True
)
datasets_app = typer.Typer(
    help="List dataset plugins.\n\nExample:  bench datasets list", no_args_is_help=True
)
app.add_typer(methods_app, name="methods")
app.add_typer(datasets_app, name="datasets")
register_report_commands(app)
register_data_commands(app, datasets_app)
register_worker_command(app)

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

PluginsOpt = typer.Option(None, "--plugins", help="Extra plugin folder (repeatable).", exists=False)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UserError("--methods: give at least one method name, e.g. --methods erm,jtt")
    return names


@app.command(
    help="Tune and evaluate methods on a dataset; print and save a leaderboard.\n\n"
    "Settings can come from a TOML file (--config) or a shipped preset (--preset, see "
    "presets/); flags given on the command line override them. --params '*.NAME=VALUE' "
    "sets NAME for every method that has it.\n\n"
    "Example:  bench run --methods erm,sfr --dataset synthetic --trials 8 --seeds 3\n\n"
    "Example:  bench run --preset groupdro-paper --seeds 5"
)
def run(
    ctx: typer.Context,
    config: Path = typer.Option(
        None, "--config", help="TOML file of run settings (dataset, methods, trials, seeds, "
        "selection, [dataset_opts], [params.METHOD]); flags override it."),
    preset: str = typer.Option(
        None, "--preset", help="A shipped settings file from presets/ (e.g. jtt-paper); "
        "--config and flags override it."),
    methods: str = typer.Option(
        None, "--methods", "-m", help="Comma-separated methods, or 'all' (default: erm, "
        "zeroshot, reweight, groupdro, jtt, dfr, sfr)."
    ),
    dataset: str = typer.Option("synthetic", "--dataset", "-d", help="Dataset plugin name."),
    trials: int = typer.Option(
        8, "--trials", min=0, help="Optuna trials per method (0: defaults)."
    ),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Final seeds for the best parameters."),
    seed_offset: int = typer.Option(
        0, "--seed-offset", min=0, help="First final seed (default 0)."
    ),
    replicates: int = typer.Option(
        1, "--replicates", min=1,
        help="Sweep replicates: repeat tune → select → final seeds with independent sampler "
        "seeds; the ± then covers tuning variance too.",
    ),
    out_dir: Path = typer.Option(
        None, "--out", help="Run directory (default runs/<dataset>-<hash>)."
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run directories go."),
    encoder: str = typer.Option(
        None, "--encoder", help="identity | openclip:MODEL:PRETRAINED; several, comma-separated, "
        "run a backbone sweep (one run per encoder and a cross-encoder board)."),
    head: str = typer.Option("auto", "--head", help="auto | linear | prompt."),
    selection: str = typer.Option(
        "worst-group", "--selection", help="worst-group | worst-class | average."
    ),
    params: list[str] = typer.Option(None, "--params", help="Fix METHOD.NAME=VALUE (repeatable)."),
    dataset_opt: list[str] = typer.Option(
        None, "--dataset-opt", help="Dataset option KEY=VALUE (repeatable)."
    ),
    data_root: Path = typer.Option(
        None, "--data-root", help="Where datasets live (or $SPURBENCH_DATA)."
    ),
    storage: str = typer.Option(
        None,
        "--storage",
        envvar="SPURBENCH_STORAGE",
        help="Optuna storage: postgresql://..., journal:PATH (default: SQLite in the run dir).",
    ),
    tracking_uri: str = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: SQLite in the run dir)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    timeout: float = typer.Option(None, "--timeout", min=0, help="Seconds of tuning per method."),
    plugins: list[Path] = PluginsOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    encode_batch_size: int = typer.Option(
        256, "--encode-batch-size", min=1, help="Images or texts per encoder batch."
    ),
    encode_workers: int = typer.Option(
        None, "--encode-workers", min=0, help="DataLoader workers for encoding (default: auto)."
    ),
    parallel_trials: int = typer.Option(
        1,
        "--parallel-trials",
        min=1,
        help="Trials per tuning round, trained as one batched computation (and final seeds).",
    ),
) -> None:
    from bench.run import config_file

    layers = []
    if preset is not None:
        layers.append(config_file.load(config_file.preset_path(preset), "--preset"))
    if config is not None:
        layers.append(config_file.load(config, "--config"))
    if layers:
        # by name: typer ships its own copy of click, whose ParameterSource is another enum
        given = {k: v for k, v in ctx.params.items()
                 if getattr(ctx.get_parameter_source(k), "name", "DEFAULT")
                 in ("COMMANDLINE", "ENVIRONMENT")}
        if "methods" in given:
            given["methods"] = _csv(given["methods"])
        for layer in layers:
            layer.pop("description", None)
            layer.pop("source", None)
        chosen = given.get("methods")
        if chosen:  # the file's settings of methods left out on the command line: unused
            for layer in layers:
                layer["params"] = [p for p in layer["params"]
                                   if p.split(".", 1)[0] in [*chosen, "*"]]
        merged = config_file.merge(layers, given)
        if isinstance(merged.get("methods"), list):
            merged["methods"] = ",".join(merged["methods"])
        if merged.get("data_root"):
            merged["data_root"] = Path(merged["data_root"])
        opts = {k: v for k, v in ctx.params.items() if k not in ("config", "preset")}
        _run(**{**opts, **{k: v for k, v in merged.items() if k in opts}})
        return
    _run(**{k: v for k, v in ctx.params.items() if k not in ("config", "preset")})


def _run(*, dataset: str, methods: str | None, dataset_opt: list[str] | None,
         data_root: Path | None, encoder: str | None, head: str, selection: str, trials: int,
         seeds: int, seed_offset: int, replicates: int, params: list[str] | None,
         out_dir: Path | None, runs_dir: Path, storage: str | None, tracking_uri: str | None,
         device: str, plugins: list[Path] | None, timeout: float | None, no_progress: bool,
         encode_batch_size: int, encode_workers: int | None, parallel_trials: int) -> None:
    from bench.report.leaderboard import print_board
    from bench.run.config import RunConfig, parse_dataset_opts
    from bench.run.runner import run as run_benchmark

    cfg = RunConfig(
        dataset=dataset,
        methods=_csv(methods),
        dataset_opts=parse_dataset_opts(dataset_opt or []),
        data_root=data_root,
        encoder=encoder,
        head=head,
        selection=selection,
        trials=trials,
        seeds=seeds,
        seed_offset=seed_offset,
        replicates=replicates,
        params=list(params or []),
        out=out_dir,
        runs_dir=runs_dir,
        storage=storage,
        tracking_uri=tracking_uri,
        device=device,
        plugins=list(plugins or []),
        timeout=timeout,
        progress=not no_progress,
        encode_batch_size=encode_batch_size,
        encode_workers=encode_workers,
        parallel_trials=parallel_trials,
    )
    from bench.run.sweep import parse_encoders

    encoders = parse_encoders(encoder)
    if encoders is not None:
        _sweep(cfg, encoders)
        return
    result = run_benchmark(cfg, console=err)
    print_board(result.board, out)
    out.print(f"run directory: {result.run_dir}  (leaderboard.md, results.parquet, mlflow.db)")
    if not result.board.ranked.height:
        err.print("error: no method produced a result (every one failed or was skipped; "
                  "the reasons are above and in leaderboard.md)", soft_wrap=True)
        raise typer.Exit(1)


def _sweep(cfg, encoders: list[str]) -> None:  # noqa: ANN001 - a RunConfig
    """One run per encoder, each board printed as it finishes, then the cross-encoder board."""
    from bench.report import cross_encoder
    from bench.report.leaderboard import print_board
    from bench.run.sweep import run_sweep

    def show(encoder: str, result) -> None:  # noqa: ANN001
        print_board(result.board, out)
        out.print(f"run directory: {result.run_dir}", highlight=False)

    sweep = run_sweep(cfg, encoders, console=err, on_board=show)
    cross_encoder.print_board(sweep.boards, out)
    out.print(f"sweep directory: {sweep.sweep_dir}  (across-encoders.md, one run folder per "
              "encoder)", highlight=False)
    if not any(b.ranked.height for b in sweep.boards.values()):
        err.print("error: no method produced a result on any encoder", soft_wrap=True)
        raise typer.Exit(1)


@methods_app.command(
    "list",
    help="List methods: description, the group labels they need, the engine that trains "
    "them.\n\n"
    "Example:  bench methods list --plugins ./my_methods",
)
def methods_list(plugins: list[Path] = PluginsOpt) -> None:
    from rich.table import Table

    from bench.plugins.index import listing
    from bench.plugins.method import FAMILIES

    methods, _ = listing(plugins)
    table = Table("method", "description", "group labels", "engine")
    order = {f: i for i, f in enumerate(FAMILIES)}
    families = sorted({m.family for m in methods}, key=lambda f: (order.get(f, len(order)), f))
    for family in families:
        table.add_section()
        table.add_row(f"[bold]{family}[/bold]", "", "", "")
        for m in (m for m in methods if m.family == family):
            table.add_row(m.name, m.description, ",".join(sorted(m.group_labels)) or "none",
                          m.engine)
    out.print(table)
    out.print("engine: `stages` = the harness trains the method's stages on the analytic "
              "engine (K configurations at once); `stages (autograd)` = on the autograd "
              "reference engine (an arbitrary loss or head); `own fit` = no training or a "
              "closed form (e.g. zero-shot, DFR's logistic regression)")


@datasets_app.command(
    "list",
    help="List datasets, whether each is embedded (no download) and its options.\n\n"
    "Example:  bench datasets list",
)
def datasets_list(plugins: list[Path] = PluginsOpt) -> None:
    from rich.table import Table

    from bench.plugins.index import listing

    _, datasets = listing(plugins)
    table = Table("dataset", "description", "modality", "classes", "groups", "train split",
                  "how to get it", "paper")
    for d in datasets:
        how = ("embedded" if d.embedded
               else f"bench datasets download {d.name}" if d.can_download
               else d.download_hint or "see docs/datasets.md")
        table.add_row(d.name, d.description, d.modality, d.classes or "from your data",
                      d.groups or "from your data",
                      "no (evaluation only)" if d.evaluation_only else "yes", how, d.paper)
    out.print(table)


def main() -> None:
    from bench.run import redact

    redact.install()  # no password of a storage or tracking URL reaches logs or the terminal
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        """SIGTERM (Docker, systemd, Slurm, Kubernetes) ends a run as Ctrl-C does: the
        running trial is marked interrupted, MLflow runs KILLED, the run resumable."""
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        app()
    except UserError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        err.print(
            f"{what}: completed trials and seeds are saved; re-run the same command to resume"
        )
        sys.exit(143 if terminated else 130)
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C (and so SIGTERM) into a silent exit 130
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            err.print(
                f"{what}: completed trials and seeds are saved; "
                "re-run the same command to resume",
                soft_wrap=True,
            )
            if terminated:
                sys.exit(143)
        raise
    except Exception as exc:  # a crash: the traceback, with secrets masked
        sys.stderr.write(redact.format_exception(exc))
        sys.exit(1)


if __name__ == "__main__":
    main()
