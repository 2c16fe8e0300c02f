"""The results table: one row per (method, seed), written as parquet with polars.

`replicate` is the sweep replicate a seed belongs to (its own tune → select; seeds of
different replicates are distinct numbers), `space_dim` the number of hyperparameters
the search sampled, `best_is_default` whether the selected trial was the defaults trial
(null when nothing was tuned).

Each finished seed is saved at once in its own file (atomic), so a crash loses nothing
completed; `results.parquet` is their union and the input of every leaderboard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from bench.report.metrics import METRIC_NAMES, Metrics

SCHEMA: dict[str, Any] = {
    "run": pl.Utf8, "dataset": pl.Utf8, "dataset_fingerprint": pl.Utf8, "encoder": pl.Utf8,
    "untrained": pl.Boolean, "synthetic": pl.Boolean, "head": pl.Utf8, "method": pl.Utf8,
    "base_method": pl.Utf8, "selection": pl.Utf8, "group_labels_used": pl.Utf8,
    "trials": pl.Int64, "seed": pl.Int64, "replicate": pl.Int64, "replicates": pl.Int64,
    "space_dim": pl.Int64, "best_is_default": pl.Boolean, "params": pl.Utf8, "status": pl.Utf8,
    "reason": pl.Utf8, "bayes_wga": pl.Float64, "spurbench_version": pl.Utf8,
    "git_commit": pl.Utf8, "created": pl.Utf8,
    **{f"{s}_{m}": pl.Float64 for s in ("val", "test") for m in METRIC_NAMES},
    "test_groups": pl.Utf8, "test_group_counts": pl.Utf8, "val_groups": pl.Utf8,
    "test_extra": pl.Utf8,  # JSON: the dataset's own metrics (Dataset.extra_metrics), or null
}


# Columns added after the first release: a table written before them reads as null there.
ADDED_COLUMNS = ("replicate", "replicates", "space_dim", "best_is_default", "test_extra")


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """A results table in the current schema: columns added since it was written are null."""
    missing = [c for c in ADDED_COLUMNS if c not in df.columns]
    df = df.with_columns(pl.lit(None, dtype=SCHEMA[c]).alias(c) for c in missing)
    return df.select(list(SCHEMA)).cast(SCHEMA)


def metric_fields(val: Metrics | None, test: Metrics | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, m in (("val", val), ("test", test)):
        for k in METRIC_NAMES:
            out[f"{split}_{k}"] = None if m is None else getattr(m, k)
    out["test_groups"] = json.dumps(test.per_group) if test else None
    out["test_group_counts"] = json.dumps(test.group_counts) if test else None
    out["val_groups"] = json.dumps(val.per_group) if val else None
    return out


def make_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in SCHEMA} for r in rows], schema=SCHEMA)


def write_atomic(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    df.write_parquet(tmp)
    os.replace(tmp, path)


def seed_row_path(rows_dir: Path, method: str, seed: int, failed: bool = False) -> Path:
    """Where one final seed's row lives in a run's rows/ folder (a failure: its own file)."""
    return rows_dir / f"{method}-seed{seed}{'-failed' if failed else ''}.parquet"


def read_rows(folder: Path) -> pl.DataFrame:
    """All per-seed row files under folder, skipping unreadable (partial) ones."""
    frames = []
    for p in sorted(folder.glob("*.parquet")):
        try:
            frames.append(pl.read_parquet(p))
        except Exception:  # a torn file from a crash: the seed is simply redone
            p.unlink(missing_ok=True)
    if not frames:
        return make_frame([])
    return pl.concat(frames, how="vertical_relaxed")


def load_results(path: Path) -> pl.DataFrame:
    """Read a results parquet, or the one inside a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.parquet"
    return pl.read_parquet(path)
