"""Reading official dataset formats with errors that name the file, column and row.

Dataset plugins share these helpers through the public API (`bench.read_csv_table`, ...)
instead of importing each other: every loader finds its folder, reads its metadata and
checks its labels and files the same way, and says the same things when they are wrong.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from bench.data.dataset import DatasetOptions
from bench.data.spec import DatasetSpec
from bench.errors import UserError

SPLIT_CODES = {0: "train", 1: "val", 2: "test"}
log = logging.getLogger("bench.data.formats")


def data_base(options: DatasetOptions) -> Path:
    """The folder datasets live under: --data-root, else $SPURBENCH_DATA, else ./data."""
    return Path(options.root_for(""))


def find_data_dir(
    options: DatasetOptions, dataset: str, marker: str, folders: Sequence[str], hint: str
) -> Path:
    """The first of base/<folder> (then base itself) that holds `marker`, else a UserError.

    The error lists every place looked at, so a user sees why a path did not match.
    """
    base = data_base(options)
    candidates = [base / f for f in folders] + [base]
    for folder in candidates:
        if (folder / marker).is_file():
            return folder
    looked = ", ".join(str(c / marker) for c in candidates)
    raise UserError(f"dataset '{dataset}' not found: looked for {looked}; {hint}")


def read_csv_table(
    path: Path, required: Sequence[str] = (), *, index_col: bool = False
) -> pl.DataFrame:
    """Read a CSV file as text; a missing file, a parse error or a missing column names the file.

    Every column is read as text and converted by the helpers below, so a type that changes
    deep into a large file (an identity score 0 then 0.5) is no parse error.
    `index_col=True` reads a pandas-written unnamed first column (header "") as `index`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        df = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot parse as CSV: {first}") from None
    if index_col and df.columns and df.columns[0] in ("", "Unnamed: 0"):
        df = df.rename({df.columns[0]: "index"})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"it has {', '.join(repr(c) for c in df.columns[:20])}"
        )
    return df


def _shown(value: object) -> str:
    return "an empty cell" if value is None else repr(value)


def _row_ref(df: pl.DataFrame, i: int, id_col: str | None) -> str:
    ref = f"data row {i + 1}"
    if id_col and id_col in df.columns:
        ref += f" ({id_col} {df[id_col][i]})"
    return ref


def int_column(
    df: pl.DataFrame, col: str, path: Path, n: int | None = None, id_col: str | None = None
) -> np.ndarray:
    """Column `col` as int64; an empty, non-integer or out-of-range value names its row."""
    series = df[col]
    if series.dtype == pl.Boolean:
        series = series.cast(pl.Int64)
    values = series.cast(pl.Float64, strict=False)
    bad = values.is_null() | ~values.is_finite().fill_null(False)
    if not bad.any():
        bad = values != values.round(0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{path}: column '{col}' has {_shown(series[i])} at {_row_ref(df, i, id_col)}; "
            "expected an integer label"
        )
    out = values.to_numpy().astype(np.int64)
    if n is not None:
        wrong = np.flatnonzero((out < 0) | (out >= n))
        if wrong.size:
            i = int(wrong[0])
            raise UserError(
                f"{path}: label {col}={out[i]} out of range 0..{n - 1} at "
                f"{_row_ref(df, i, id_col)} ({wrong.size} such row(s))"
            )
    return out


def split_column(
    df: pl.DataFrame, col: str, path: Path, id_col: str | None = None
) -> list[str]:
    """Split names from a column holding 0/1/2 (WILDS, group_DRO) or train/val/test."""
    series = df[col]
    if series.dtype == pl.Utf8 or series.dtype == pl.String:
        text = series.str.strip_chars().str.to_lowercase()
        codes = text.cast(pl.Int64, strict=False)
        names = [
            SPLIT_CODES.get(c, t) if c is not None else t
            for c, t in zip(codes.to_list(), text.to_list(), strict=True)
        ]
    else:
        names = [SPLIT_CODES.get(v, None) if v is not None else None
                 for v in series.cast(pl.Int64, strict=False).to_list()]
    for i, name in enumerate(names):
        if name not in ("train", "val", "test"):
            raise UserError(
                f"{path}: column '{col}' has {_shown(series[i])} at {_row_ref(df, i, id_col)}; "
                "expected 0/1/2 or train/val/test"
            )
    return names


def check_image_files(root: Path, items: Sequence[str], listing: Path, column: str) -> None:
    """Every listed image exists under `root`; else say how many are missing and the first."""
    root = Path(root)
    missing = [item for item in items if not os.path.isfile(root / item)]
    if missing:
        raise UserError(
            f"{listing}: {len(missing)} of {len(items)} image files named in column '{column}' "
            f"are missing; first: {root / missing[0]}"
        )


def spec_from_source(source: Path, **kwargs: object) -> DatasetSpec:
    """Build a DatasetSpec; a validation error (empty group, bad label) names `source`."""
    name = str(kwargs.get("name", ""))
    try:
        return DatasetSpec(**kwargs)  # type: ignore[arg-type]
    except UserError as exc:
        msg = str(exc)
        prefix = f"dataset '{name}'"
        if msg.startswith(prefix):
            msg = msg[len(prefix):].lstrip(": ")
        raise UserError(f"dataset '{name}' ({source}): {msg}") from None


def _downloaded(root: Path, wilds_name: str, marker: str, reported: Path | None) -> Path | None:
    """The folder a WILDS download left `marker` in: the one wilds reported, else the
    newest root/<name>_v<version>/ that holds it (wilds names its folders so)."""
    if reported is not None and (reported / marker).is_file():
        return reported
    found = sorted(root.glob(f"{wilds_name}_v*/{marker}"), key=lambda p: p.parent.name)
    return found[-1].parent if found else None


def wilds_download(wilds_name: str, root: Path, marker: str) -> Path:
    """Download a WILDS dataset into root/<name>_v<version>/ with the `wilds` package.

    A download is judged by the files it leaves, not by what `wilds` says: it prints
    download failures instead of raising them, and after a good download it builds its own
    dataset object, which can crash for reasons that do not concern the files (its
    CivilComments loader fails with current pandas). So: `marker` there means success,
    whatever was raised; else a UserError with the cause (no network, a moved URL).
    """
    import wilds

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    captured = io.StringIO()
    error: str | None = None
    reported: Path | None = None
    try:
        with contextlib.redirect_stdout(captured):
            ds = wilds.get_dataset(dataset=wilds_name, root_dir=str(root), download=True)
        reported = Path(ds.data_dir)
    except Exception as exc:  # a failed download, or wilds' own loader after a good one
        text = str(exc).strip()
        error = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    folder = _downloaded(root, wilds_name, marker, reported)
    if folder is not None:
        if error is not None:
            log.info("wilds raised %s after the download; %s is there, so it is complete",
                     error, folder / marker)
        return folder
    printed = [ln.strip() for ln in captured.getvalue().splitlines() if "Exception" in ln]
    cause = printed[-1] if printed else (error or f"{marker} is missing after the download")
    raise UserError(
        f"download of '{wilds_name}' into {root} failed ({cause}); check the network, or "
        "download it by hand from https://wilds.stanford.edu/downloads and pass --data-root"
    )


def fetch_archive(url: str, dest: Path, filename: str) -> None:
    """Download `url` to dest/filename and unpack it into dest; a failure is one line.
    The archive is written as .part and renamed when complete, so an interrupted
    download never looks finished; callers judge success by the files it leaves."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / filename
    part = dest / (filename + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
        part.replace(archive)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError, ValueError) as exc:
        part.unlink(missing_ok=True)
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise UserError(
            f"download of {url} into {dest} failed ({cause}); check the network, or download "
            f"it by hand, unpack it into {dest} and pass --data-root {dest}"
        ) from None
    archive.unlink(missing_ok=True)
