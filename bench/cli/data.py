"""`bench cache list|clear` and `bench datasets download NAME`: thin commands over the library."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

cache_app = typer.Typer(
    help="Inspect or clear the feature cache ($SPURBENCH_CACHE, else ~/.cache/spurbench).\n\n"
    "Example:  bench cache list",
    no_args_is_help=True,
)
out = Console(width=None if sys.stdout.isatty() else 160)

CacheDirOpt = typer.Option(
    None, "--cache-dir", help="Cache folder (default: $SPURBENCH_CACHE or ~/.cache/spurbench)."
)


def _root(cache_dir: Path | None) -> Path:
    from bench.data.cache import cache_dir as default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@cache_app.command(
    "list", help="List cached feature matrices: dataset, encoder, shape, size, date.\n\n"
    "Example:  bench cache list --verify"
)
def cache_list(
    cache_dir: Path = CacheDirOpt,
    verify: bool = typer.Option(
        False, "--verify", help="Re-check every checksum (reads every file)."
    ),
) -> None:
    from rich.table import Table

    from bench.data import cache

    root = _root(cache_dir)
    entries = cache.list_entries(root)
    if not entries:
        out.print(f"no cached features in {cache.features_dir(root)}")
        return
    table = Table("dataset", "encoder", "rows x dim", "size", "created", "status", "file")
    for entry, m in entries:
        size = entry.data.stat().st_size if entry.data.exists() else 0
        if m is None:
            table.add_row("?", "?", "?", _mb(size), "?", "no manifest (rebuilt on use)",
                          entry.data.name)
            continue
        shape = m.get("arrays", {}).get("features", {}).get("shape", ["?", "?"])
        status = cache.verify(entry) if verify else "not verified"
        encoder = m.get("encoder", "?") + (" (untrained)" if m.get("untrained") else "")
        table.add_row(m.get("dataset", "?"), encoder, f"{shape[0]} x {shape[1]}", _mb(size),
                      m.get("created", "?"), status, entry.data.name)
    out.print(table)
    out.print(f"cache folder: {root}")


@cache_app.command(
    "clear", help="Delete cached features, rendered embedded-dataset images and (without "
    "--dataset) the cached empty MLflow database; all are rebuilt when needed.\n\n"
    "Example:  bench cache clear --dataset waterbirds"
)
def cache_clear(
    cache_dir: Path = CacheDirOpt,
    dataset: str = typer.Option(None, "--dataset", help="Only this dataset's entries."),
) -> None:
    from bench.data import cache

    root = _root(cache_dir)
    done = cache.sweep(root, dataset)
    n = done.entries
    what = f" of dataset '{dataset}'" if dataset else ""
    parts = [f"{n} feature cache entr{'y' if n == 1 else 'ies'}{what}"]
    if done.rendered:
        parts.append(f"the rendered images of {', '.join(done.rendered)}")
    if done.templates:
        parts.append(f"the template database{'s' if len(done.templates) > 1 else ''} "
                     f"{', '.join(done.templates)}")
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    out.print(f"removed {listed} from {root} ({_mb(done.freed)})", soft_wrap=True)


DOWNLOAD_HELP = (
    "Download a dataset into --data-root (or $SPURBENCH_DATA, else ./data), with the WILDS "
    "downloader where one exists.\n\n"
    "Example:  bench datasets download waterbirds --data-root ~/data"
)


def download(
    name: str = typer.Argument(..., help="Dataset name (see bench datasets list)."),
    data_root: Path = typer.Option(
        None, "--data-root", help="Where datasets live (or $SPURBENCH_DATA)."
    ),
    plugins: list[Path] = typer.Option(None, "--plugins", help="Extra plugin folder (repeatable)."),
) -> None:
    from bench.data.dataset import DatasetOptions
    from bench.plugins import registry

    registry.load_plugins(plugins or [])
    plugin = registry.get_dataset(name)
    if plugin.embedded:
        out.print(f"'{name}' is embedded: nothing to download")
        return
    options = DatasetOptions(data_root=data_root)
    where = plugin.download(options)  # the contract's default says why it cannot
    plugin.load(options)  # the downloaded copy must load, or the download did not work
    out.print(f"'{name}' is ready in {where}")


def register(app: typer.Typer, datasets_app: typer.Typer) -> None:
    """Attach `bench cache ...` to the main app and `download` to `bench datasets`."""
    app.add_typer(cache_app, name="cache")
    datasets_app.command("download", help=DOWNLOAD_HELP)(download)
