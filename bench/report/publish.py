"""`bench leaderboard publish`: results tables (run directories or MLflow) → leaderboards/.

One leaderboard per (dataset, encoder, selection): `<stem>.md`, `<stem>.json` (every
per-seed number), two PNG plots, and `README.md`, an index of every board in the folder.

Reading MLflow gives the same table as reading the runs' `results.parquet`: the runner
tags each final-seed MLflow run with the row's descriptive fields (`row_tags`) and logs
its numbers as metrics; `rows_from_mlflow` puts the two back together.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from bench.errors import UserError, did_you_mean
from bench.report.leaderboard import (
    BOARD_KEY,
    JSON_KIND,
    Board,
    render_markdown,
    rows_from_json,
    summarize,
    to_json,
)
from bench.report.metrics import METRIC_NAMES
from bench.report.results import ADDED_COLUMNS, SCHEMA, conform, make_frame
from bench.run.directory import write_text_atomic
from bench.run.provenance import now
from bench.run.tracking import metric_key

ROW_TAG = "spurbench.row"
_GROUP_BLOBS = {"test_groups": "test", "val_groups": "val"}
_METRIC_COLUMNS = {f"{s}_{m}" for s in ("val", "test") for m in METRIC_NAMES}
_MAX_TAG = 8000  # MLflow's limit on a tag value


# -- reading run directories ----------------------------------------------------------------
def _results_files(path: Path) -> list[Path]:
    """A results.parquet, a run directory, or a folder of run directories."""
    if path.is_file():
        return [path]
    if (path / "results.parquet").is_file():
        return [path / "results.parquet"]
    if path.is_dir():
        found = sorted(
            p / "results.parquet" for p in path.iterdir()
            if p.is_dir() and not p.is_symlink() and (p / "results.parquet").is_file()
        )
        if found:
            return found
        raise UserError(f"--from {path}: no results.parquet in it or in its run directories")
    raise UserError(f"--from {path}: no such run directory or file")


def read_table(path: Path, flag: str = "--from") -> pl.DataFrame:
    """A results table from a run directory, a results.parquet or a leaderboard JSON."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        try:
            return rows_from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{flag} {path}: not a readable leaderboard JSON ({exc})") from None
    frames = []
    for f in _results_files(path):
        try:
            df = pl.read_parquet(f)
        except Exception as exc:
            raise UserError(f"{flag} {f}: unreadable parquet ({type(exc).__name__})") from None
        missing = [c for c in SCHEMA if c not in df.columns and c not in ADDED_COLUMNS]
        if missing:
            raise UserError(f"{flag} {f}: not a spurbench results table (no column {missing[0]})")
        frames.append(conform(df))
    return pl.concat(frames, how="vertical")


def read_runs(paths: list[Path]) -> pl.DataFrame:
    if not paths:
        raise UserError("--from: give at least one run directory")
    return pl.concat([read_table(p) for p in paths], how="vertical")


# -- MLflow: writing and reading rows ---------------------------------------------------------
def row_tags(row: dict[str, Any]) -> dict[str, str]:
    """Tags that carry a results row's descriptive fields; its numbers go in as metrics."""
    fields = {k: row.get(k) for k in SCHEMA if k not in _METRIC_COLUMNS and k not in _GROUP_BLOBS}
    for col, split in _GROUP_BLOBS.items():
        blob = row.get(col)
        fields[f"{split}_group_names"] = list(json.loads(blob)) if blob else None
    text = json.dumps(fields)
    if len(text) > _MAX_TAG and fields.get("reason"):
        keep = max(0, len(fields["reason"]) - (len(text) - _MAX_TAG) - 20)
        fields["reason"] = fields["reason"][:keep]
        text = json.dumps(fields)
    return {ROW_TAG: text}


def _row_from_run(run: Any) -> dict[str, Any]:
    fields = json.loads(run.data.tags[ROW_TAG])
    metrics = run.data.metrics
    row = {k: v for k, v in fields.items() if k in SCHEMA}
    missing = math.nan if fields.get("status") == "ok" else None  # the tracker drops NaN
    for split in ("val", "test"):
        for m in METRIC_NAMES:
            row[f"{split}_{m}"] = metrics.get(f"{split}_{m}", missing)
        names = fields.get(f"{split}_group_names")
        row[f"{split}_groups"] = None if names is None else json.dumps(
            {n: metrics.get(metric_key(f"{split}_group/{n}"), missing) for n in names}
        )
    return row


def rows_from_mlflow(
    experiment: str, tracking_uri: str | None, parents: list[str] | None = None
) -> pl.DataFrame:
    """The results table of every `bench run` (or the named parent runs) in an experiment."""
    from mlflow.tracking import MlflowClient

    from bench.run.redact import redact

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError(
            "--from-mlflow: give --tracking-uri (e.g. sqlite:///runs/latest/mlflow.db) "
            "or set MLFLOW_TRACKING_URI"
        )
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"--tracking-uri {redact(uri)}: no such SQLite file")
    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        names = [e.name for e in client.search_experiments()] if exp is None else []
    except Exception as exc:
        raise UserError(f"--tracking-uri {redact(uri)}: cannot read MLflow ({exc})") from None
    if exp is None:
        raise UserError(
            f"--from-mlflow {experiment}: no such experiment{did_you_mean(experiment, names)}; "
            f"known: {', '.join(sorted(names)) or 'none'}"
        )
    runs = _search_all(client, exp.experiment_id, "tags.`spurbench.kind` = 'final'")
    if parents:
        tops = _search_all(client, exp.experiment_id, "")
        wanted = {r.info.run_id for r in tops if r.info.run_id in parents
                  or r.info.run_name in parents}
        unknown = [p for p in parents if not any(
            p in (r.info.run_id, r.info.run_name) for r in tops)]
        if unknown:
            raise UserError(f"--mlflow-run {unknown[0]}: no such run in experiment {experiment}")
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in wanted]
    runs = [r for r in runs if ROW_TAG in r.data.tags]
    if not runs:
        raise UserError(
            f"--from-mlflow {experiment}: no final-seed runs with results "
            f"(tag {ROW_TAG}); runs from an older spurbench cannot be read back"
        )
    latest: dict[tuple, tuple[int, dict]] = {}
    for r in runs:  # a seed logged twice (a resumed failure) counts once, as in results.parquet
        row = _row_from_run(r)
        key = (row.get("run"), row.get("method"), row.get("seed"), row.get("status"))
        if key not in latest or r.info.start_time >= latest[key][0]:
            latest[key] = (r.info.start_time, row)
    rows = [row for _, row in latest.values()]
    # A resumed run redoes what failed and deletes the failure's row file; MLflow keeps both.
    redone = {(r["run"], r["method"], r["seed"]) for r in rows if r.get("status") == "ok"}
    tuned = {(r["run"], r["method"]) for r in rows if r.get("seed") is not None}
    rows = [
        r for r in rows if r.get("status") == "ok" or (
            (r["run"], r["method"], r["seed"]) not in redone
            and (r.get("seed") is not None or (r["run"], r["method"]) not in tuned)
        )
    ]
    return make_frame(rows).sort(["run", "method", "seed", "status"], nulls_last=True)


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list:
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


# -- what the published boards cover ----------------------------------------------------------
def _is_builtin(source: str) -> bool:
    from bench.plugins.registry import builtin_plugin_dirs

    dirs = [d.resolve() for d in builtin_plugin_dirs()]
    return bool(source) and Path(source).resolve().parent in dirs


def builtin_methods() -> list[str]:
    """Methods shipped in methods/ (not --plugins or entry-point plugins), sorted."""
    from bench.plugins import registry

    registry.load_plugins()
    return [n for n, e in registry.methods().items() if _is_builtin(e.source)]


def embedded_datasets() -> list[str]:
    """Built-in datasets that need no download: the ones with published leaderboards."""
    import sys

    from bench.plugins import registry

    registry.load_plugins()
    return [
        n for n, cls in registry.datasets().items()
        if cls.embedded and _is_builtin(getattr(sys.modules.get(cls.__module__), "__file__", ""))
    ]


# -- splitting into boards ------------------------------------------------------------------
def stem_for(dataset: str, encoder: str, selection: str) -> str:
    """File name of a board: the dataset, then the encoder unless identity, then the rule
    unless worst-group (so the default board of a feature dataset is just its name)."""
    parts = [dataset] + ([encoder] if encoder != "identity" else [])
    parts += [selection] if selection != "worst-group" else []
    stem = "--".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-") for p in parts)
    if len(stem) > 100:
        stem = stem[:88] + "-" + hashlib.sha256(stem.encode()).hexdigest()[:10]
    return stem


@dataclass
class Split:
    stem: str
    table: pl.DataFrame
    dropped: list[str]  # "method from run R (superseded by run S)" notes


def split_boards(table: pl.DataFrame) -> list[Split]:
    """Group rows by (dataset, encoder, selection). When several runs hold the same method,
    the most recent run's rows win (said in `dropped`); mixing datasets that differ in
    content (fingerprint) on one board is refused."""
    out = []
    for key, part in sorted(table.group_by(list(BOARD_KEY)), key=lambda kv: tuple(map(str, kv[0]))):
        dataset, encoder, selection = key
        runs = (
            part.group_by(["method", "run"])
            .agg(pl.col("created").max())
            .sort(["method", "created", "run"], descending=[False, True, True], nulls_last=True)
        )
        keep = runs.group_by("method", maintain_order=True).first()
        dropped = [
            f"{m} from run {r} (superseded by run {keep.filter(pl.col('method') == m)['run'][0]})"
            for m, r in runs.join(keep, on=["method", "run"], how="anti")
            .select("method", "run").iter_rows()
        ]
        part = part.join(keep.select("method", "run"), on=["method", "run"], how="semi")
        prints = part.group_by("dataset_fingerprint").agg(pl.col("run").unique().sort())
        if prints.height > 1:
            detail = "; ".join(
                f"{fp}: {', '.join(runs_)}" for fp, runs_ in prints.sort("dataset_fingerprint")
                .iter_rows()
            )
            raise UserError(
                f"dataset '{dataset}' (encoder {encoder}, selection {selection}) has different "
                f"contents across runs (fingerprint {detail}): different --dataset-opt or data; "
                "publish those runs separately with --from and --to"
            )
        out.append(Split(stem_for(dataset, encoder, selection), part, dropped))
    return out


# -- writing --------------------------------------------------------------------------------
@dataclass
class Published:
    stem: str
    board: Board
    files: list[Path]
    dropped: list[str]


def merge_with_published(part: Split, path: Path) -> Split:
    """The board already at `path` updated with `part`: the methods in `part` replace their
    rows, every other method keeps its rows and their provenance (run, commit, created).
    Boards of different contents (dataset fingerprint), encoder or selection rule are not
    comparable: refused, exit 2, unless --replace."""
    try:
        doc = json.loads(path.read_text())
        old = rows_from_json(doc)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot merge into it ({exc}); pass --replace to overwrite "
                        "it") from exc
    new_meta = part.table.row(0, named=True)
    for field in ("dataset", "encoder", "selection", "dataset_fingerprint"):
        have = doc.get(field) if field != "dataset_fingerprint" else (
            doc.get("provenance", {}).get(field) or doc.get(field))
        if have is not None and have != new_meta.get(field):
            raise UserError(
                f"{path}: the published board has {field} {have!r}, this run "
                f"{new_meta.get(field)!r}; boards that differ there are not comparable — "
                "publish into another folder (--to), or pass --replace to overwrite it")
    new_methods = set(part.table["method"].to_list())
    kept = old.filter(~pl.col("method").is_in(sorted(new_methods)))
    notes = [f"{m} kept from the published board (run {r})"
             for m, r in kept.select("method", "run").unique().sort("method").iter_rows()]
    merged = pl.concat([conform(kept), conform(part.table)], how="vertical")
    return Split(part.stem, merged, part.dropped + notes)


def publish(table: pl.DataFrame, to: Path, published: str | None = None,
            plots: bool = True, replace: bool = False) -> list[Published]:
    """Write every board of `table` into `to` — merged into a board already published there
    unless `replace` (see merge_with_published) — then rewrite `to/README.md` (the index)."""
    if table.height == 0:
        raise UserError("nothing to publish: the results table is empty")
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    stamp = published or now()
    done = []
    parts = split_boards(table)
    if not replace:
        parts = [merge_with_published(p, to / f"{p.stem}.json")
                 if (to / f"{p.stem}.json").exists() else p for p in parts]
    for part in parts:
        board = summarize(part.table)
        files: list[Path] = []
        links: dict[str, str] = {}
        if plots and board.ranked.height:
            from bench.report import plots as plotting

            for caption, suffix, draw in (
                ("Worst-group vs average accuracy", "wga-vs-avg", plotting.wga_vs_average),
                ("Per-group accuracy", "groups", plotting.per_group),
            ):
                files.append(draw(board, to / f"{part.stem}-{suffix}.png"))
                links[caption] = f"{part.stem}-{suffix}.png"
        md = render_markdown(board, links)
        files.append(write_text_atomic(to / f"{part.stem}.md", md))
        doc = to_json(board, part.stem, stamp)
        files.append(write_text_atomic(to / f"{part.stem}.json", json.dumps(doc, indent=1) + "\n"))
        done.append(Published(part.stem, board, files, part.dropped))
    done += _across_encoders(done, to, plots)
    write_index(to)
    return done


def _across_encoders(done: list[Published], to: Path, plots: bool) -> list[Published]:
    """A cross-encoder board for each (dataset, selection) published with several encoders."""
    from bench.report import cross_encoder

    groups: dict[tuple[str, str], dict[str, Board]] = {}
    for p in done:
        meta = p.board.meta
        groups.setdefault((meta["dataset"], meta["selection"]), {})[meta["encoder"]] = p.board
    out = []
    for (dataset, selection), boards in sorted(groups.items()):
        if len(boards) < 2:
            continue
        stem = stem_for(dataset, "identity", selection) + "--across-encoders"
        files = cross_encoder.write(dict(sorted(boards.items())), to, stem, plots=plots)
        out.append(Published(stem, next(iter(boards.values())), files, []))
    return out


def _index_row(doc: dict[str, Any]) -> str:
    best = doc["methods"][0] if doc.get("methods") else None
    best_txt = "—"
    if best is not None:
        wga = best["test"]["wga"]
        best_txt = f"`{best['method']}` {100 * wga['mean']:.1f}"
        if wga["std"] is not None:
            best_txt += f" ± {100 * wga['std']:.1f}"
    seeds = sorted({m["seeds"] for m in doc.get("methods", [])})
    ceiling = f"{100 * doc['bayes_wga']:.1f}" if doc.get("bayes_wga") is not None else "—"
    notes = []
    if doc.get("synthetic"):
        notes.append("synthetic data")
    if doc.get("untrained"):
        notes.append("untrained encoder")
    name = doc["name"]
    return (
        f"| [{name}]({name}.md) | {doc['dataset']} | `{doc['encoder']}` | {doc['selection']} | "
        f"{best_txt} | {len(doc.get('methods', []))} ranked, {len(doc.get('not_run', []))} not "
        f"| {', '.join(map(str, seeds)) or '—'} | {ceiling} | {', '.join(notes) or '—'} "
        f"| {(doc['provenance'].get('created') or '—')[:10]} |"
    )


def write_index(to: Path) -> Path:
    """leaderboards/README.md: one line per board JSON found in the folder."""
    docs = []
    for path in sorted(Path(to).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("kind") == JSON_KIND:
            docs.append(doc)
    docs.sort(key=lambda d: (d["dataset"], d["encoder"], d["selection"]))
    lines = [
        "# Leaderboards",
        "",
        "Published by `bench leaderboard publish`: one board per (dataset, encoder, selection "
        "rule), ranked by mean test worst-group accuracy (WGA, %, mean ± std over seeds). "
        "Each `<name>.md` has the full table, per-group accuracies, plots and provenance; "
        "`<name>.json` holds every per-seed number (`bench compare` reads it).",
        "",
        "Regenerate every board of an embedded dataset (all methods at their defaults):",
        "",
        "    scripts/regenerate_leaderboards.sh",
        "",
        "| Leaderboard | Dataset | Encoder | Selection | Best (WGA %) | Methods | Seeds "
        "| Bayes ceiling | Notes | Created |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_index_row(d) for d in docs]
    across = sorted(Path(to).glob("*--across-encoders.md"))
    if across:
        lines += ["", "Across encoders (methods × backbones, WGA / average): "
                  + ", ".join(f"[{p.stem}]({p.name})" for p in across)]
    lines += [
        "",
        "Synthetic data and untrained encoders are flagged: such numbers test the harness, "
        "not CLIP.",
        "",
    ]
    return write_text_atomic(Path(to) / "README.md", "\n".join(lines))
