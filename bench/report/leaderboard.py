"""Leaderboards from a results table: ranked by mean test worst-group accuracy.

One board per (dataset, encoder, selection). Every board prints the metric definitions,
the selection rule, which splits' group labels each method used, and whether the encoder
is untrained or the data synthetic: comparisons across label budgets are never hidden.
`to_json` is the machine-readable twin with every per-seed number; `rows_from_json`
turns it back into a results table, so `bench compare` reads a board like a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from bench.report.metrics import DEFINITIONS, METRIC_NAMES
from bench.report.results import SCHEMA, make_frame
from bench.tuning.selection import RULES

COLUMN_TITLES = {
    "wga": "Worst-group", "avg": "Average", "adj_avg": "Adj. average", "worst_class": "Worst-class",
}
JSON_KIND = "spurbench.leaderboard"
JSON_VERSION = 1
# Columns that are one value per board; everything else in a row is per seed.
BOARD_COLUMNS = (
    "dataset", "dataset_fingerprint", "encoder", "untrained", "synthetic", "selection",
    "bayes_wga",
)
# What makes two rows the same experiment: the unit a leaderboard (and compare) speaks for.
BOARD_KEY = ("dataset", "encoder", "selection")
_JSON_COLUMNS = ("params", "test_groups", "test_group_counts", "val_groups", "test_extra")


@dataclass
class Board:
    """A ranked summary of one (dataset, encoder, selection) results table."""

    ranked: pl.DataFrame  # one row per method with ok seeds, best first; metrics in %
    not_run: pl.DataFrame  # methods with no ok seed (skipped or failed), with the reason
    group_table: pl.DataFrame  # method × evaluation group, mean test accuracy in %
    meta: dict
    group_std: pl.DataFrame = field(default_factory=pl.DataFrame)  # same shape, std in %
    group_counts: dict[str, int] = field(default_factory=dict)  # test examples per group
    rows: pl.DataFrame = field(default_factory=lambda: make_frame([]))  # the input table


def _first(df: pl.DataFrame, col: str):  # noqa: ANN202
    return df[col][0] if df.height and col in df.columns else None


def _sources(results: pl.DataFrame) -> list[dict[str, Any]]:
    """One entry per run that contributed rows: where each part of the board came from."""
    out = []
    for run in sorted(set(results["run"].drop_nulls().to_list())):
        part = results.filter(pl.col("run") == run)
        out.append({
            "run": run,
            "spurbench_version": _first(part, "spurbench_version"),
            "git_commit": _first(part, "git_commit"),
            "created": max(part["created"].drop_nulls().to_list(), default=None),
            "methods": sorted(set(part["method"].to_list())),
        })
    return out


def _one_or_many(values: list) -> Any:
    distinct = sorted({v for v in values if v is not None}, key=str)
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    return ", ".join(map(str, distinct))


def summarize(results: pl.DataFrame) -> Board:
    """Rank methods by mean test WGA (ties by name); std over seeds is the sample std."""
    ok = results.filter(pl.col("status") == "ok")
    aggs = []
    for m in METRIC_NAMES:
        c = pl.col(f"test_{m}") * 100
        aggs += [c.mean().alias(f"{m}_mean"), c.std(ddof=1).alias(f"{m}_std")]
    ranked = (
        ok.group_by("method")
        .agg(
            *aggs,
            pl.len().alias("seeds"),
            pl.col("trials").first(),
            pl.col("group_labels_used").first(),
            pl.col("params").first(),
            pl.col("base_method").first(),
            pl.col("head").drop_nulls().unique().sort().str.join(",").alias("head"),
            pl.col("replicate").n_unique().alias("replicates"),
            pl.col("space_dim").first(),
        )
        .join(_defaults_won(ok), on="method", how="left")
        .sort(["wga_mean", "method"], descending=[True, False])
        .with_row_index("rank", offset=1)
    )
    not_run = (
        results.filter(pl.col("status") != "ok")
        .sort(["method", "seed"], nulls_last=True)
        .group_by("method", maintain_order=True)
        .agg(pl.col("status").first(), pl.col("reason").first())
        .filter(~pl.col("method").is_in(ranked["method"].to_list()))
        .sort("method")
    )
    group_names: list[str] = []
    groups: dict[str, dict[str, list[float]]] = {}
    for method, blob in ok.sort("seed").select("method", "test_groups").iter_rows():
        for g, acc in json.loads(blob).items():
            if g not in group_names:
                group_names.append(g)
            groups.setdefault(method, {}).setdefault(g, []).append(acc * 100)
    order = ranked["method"].to_list()
    schema = {"method": pl.Utf8, **{g: pl.Float64 for g in group_names}}
    group_table = pl.DataFrame(
        [{"method": m, **{g: _mean(v) for g, v in groups.get(m, {}).items()}} for m in order],
        schema=schema,
    )
    group_std = pl.DataFrame(
        [{"method": m, **{g: _std(v) for g, v in groups.get(m, {}).items()}} for m in order],
        schema=schema,
    )
    counts_blob = _first(ok, "test_group_counts")
    counts = json.loads(counts_blob) if counts_blob else {}
    meta = {k: _first(results, k) for k in BOARD_COLUMNS}
    meta["head"] = _one_or_many(ok["head"].to_list()) if ok.height else None
    sources = _sources(results)
    meta.update(
        spurbench_version=_one_or_many([s["spurbench_version"] for s in sources]),
        git_commit=_one_or_many([s["git_commit"] for s in sources]),
        created=max((s["created"] for s in sources if s["created"]), default=None),
        sources=sources,
    )
    return Board(ranked, not_run, group_table, meta, group_std,
                 {g: counts[g] for g in group_names if g in counts}, results)


def _defaults_won(ok: pl.DataFrame) -> pl.DataFrame:
    """Per method, whether each sweep replicate selected the defaults trial (one value per
    replicate, in replicate order)."""
    return (
        ok.group_by("method", "replicate").agg(pl.col("best_is_default").first())
        .sort("method", "replicate", nulls_last=True)
        .group_by("method", maintain_order=True)
        .agg(pl.col("best_is_default").alias("defaults_won"))
    )


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _std(v: list[float]) -> float | None:
    """Sample standard deviation (ddof=1), None for a single value: one seed has no spread."""
    if len(v) < 2:
        return None
    mu = _mean(v)
    return (sum((x - mu) ** 2 for x in v) / (len(v) - 1)) ** 0.5


def failed_seeds(board: Board) -> pl.DataFrame:
    """Failed seed rows of methods that still have ok seeds (ranked on the rest)."""
    ok_seeds = board.rows.filter(pl.col("status") == "ok").select("method", "seed")
    ranked = board.ranked["method"].to_list()
    return (
        board.rows.filter((pl.col("status") == "failed") & pl.col("method").is_in(ranked))
        .join(ok_seeds, on=["method", "seed"], how="anti")  # a failed try later redone is fine
        .sort(["method", "seed"])
        .select("method", "seed", "reason")
    )


def extra_metrics(board: Board) -> dict[str, dict[str, list[float]]]:
    """The dataset's own metrics (Dataset.extra_metrics; e.g. CounterAnimal's drop, a
    background gap) per ranked method: {method: {metric: [value per ok fit]}}."""
    if "test_extra" not in board.rows.columns:
        return {}
    ranked = board.ranked["method"].to_list()
    rows = board.rows.filter((pl.col("status") == "ok") & pl.col("test_extra").is_not_null()
                             & pl.col("method").is_in(ranked))
    out: dict[str, dict[str, list[float]]] = {m: {} for m in ranked}
    for method, blob in rows.select("method", "test_extra").iter_rows():
        for k, v in json.loads(blob).items():
            out[method].setdefault(k, []).append(float(v))
    return {m: v for m, v in out.items() if v}


def _extra_lines(board: Board) -> list[str]:
    extra = extra_metrics(board)
    if not extra:
        return []
    keys = sorted({k for v in extra.values() for k in v})
    lines = ["", "The dataset's own metrics (test; mean ± sample std over final fits):", "",
             "| Method | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for method, vals in extra.items():
        cells = [pm(_mean(vals[k]), _std(vals[k])) if k in vals else "—" for k in keys]
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return lines


def tuning_notes(board: Board) -> list[str]:
    """Why a ranked method ran 0 trials where others were tuned: its own reason (recorded in
    its ok rows, e.g. DFR's cross-validation inside each fit), else what the row says."""
    ranked = board.ranked.filter(pl.col("trials") == 0)
    if not ranked.height or board.ranked["trials"].max() == 0:
        return []
    why = (board.rows.filter((pl.col("status") == "ok") & pl.col("reason").is_not_null())
           .group_by("method").agg(pl.col("reason").first()))
    reasons = dict(why.iter_rows())
    notes = []
    for row in ranked.iter_rows(named=True):
        reason = reasons.get(row["method"]) or (
            "it has no tunable hyperparameters" if not row.get("space_dim")
            else "run at its defaults")
        notes.append(f"`{row['method']}`: 0 trials — {reason}")
    return notes


def pm(mean: float | None, std: float | None) -> str:
    if mean is None or mean != mean:  # None or NaN: undefined here (e.g. no training prior)
        return "—"
    return f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}"


def _row_pm(row: dict, m: str) -> str:
    return pm(row[f"{m}_mean"], row[f"{m}_std"])


def spread(row: dict) -> str:
    """What a method's ± is over: its final fits, and how many sweep replicates."""
    reps = row.get("replicates") or 1
    seeds = row["seeds"]
    return f"{seeds} ({reps} sweeps)" if reps > 1 else str(seeds)


def defaults_won(row: dict) -> str:
    """Whether the selected trial was the defaults trial, per sweep replicate."""
    won = [w for w in (row.get("defaults_won") or []) if w is not None]
    if not won:
        return "—"
    if len(won) == 1:
        return "yes" if won[0] else "no"
    return f"{sum(won)}/{len(won)}"


def _extra_cells(row: dict) -> list[str]:
    dim = row.get("space_dim")
    return [row["group_labels_used"] or "none", str(row["trials"]),
            "—" if dim is None else str(dim), defaults_won(row), spread(row)]


EXTRA_TITLES = ["Group labels used", "Trials", "Search dim", "Defaults won", "Fits"]
SPREAD_NOTE = (
    "Test accuracy in %, mean ± sample std over a method's final fits (no ± with one fit); "
    "ranked by mean worst-group accuracy. With one sweep the ± is over final seeds only: "
    "it does not include the variance of the hyperparameter search; `--replicates R` "
    "repeats tune → select → seeds R times and the ± then covers both (Fits: seeds "
    "(sweeps)). Search dim: hyperparameters the search sampled; Defaults won: whether the "
    "selected trial was the method's defaults (per sweep)."
)


def title(meta: dict) -> str:
    return f"{meta['dataset']} · {meta['encoder']} · selection {meta['selection']}"


def warnings(meta: dict) -> list[str]:
    out = []
    if meta.get("synthetic"):
        out.append("The data are synthetic (generated), not a real benchmark.")
    if meta.get("untrained"):
        out.append("The encoder has random (untrained) weights: numbers say nothing about CLIP.")
    return out


def render_markdown(board: Board, plots: dict[str, str] | None = None) -> str:
    """The board as markdown; `plots` maps a caption to a PNG path relative to the file."""
    meta = board.meta
    lines = [f"# Leaderboard: {title(meta)}", ""]
    lines += [f"> **Note:** {w}" for w in warnings(meta)]
    if warnings(meta):
        lines.append("")
    header = ["Rank", "Method"] + [COLUMN_TITLES[m] for m in METRIC_NAMES] + EXTRA_TITLES
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in board.ranked.iter_rows(named=True):
        cells = [str(row["rank"]), f"`{row['method']}`"] + [_row_pm(row, m) for m in METRIC_NAMES]
        cells += _extra_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", SPREAD_NOTE]
    heads = {r["method"]: r["head"] for r in board.ranked.iter_rows(named=True)}
    if len(set(heads.values())) > 1:
        lines += ["", "Heads trained: " + ", ".join(
            f"`{m}` {h}" for m, h in sorted(heads.items()))]
    if meta.get("bayes_wga") is not None:
        lines += [
            "",
            f"**Bayes-optimal worst-group accuracy (ceiling): {100 * meta['bayes_wga']:.1f}** "
            "— the best any classifier can reach on this data's distribution.",
        ]
    lines += _extra_lines(board)
    notes = tuning_notes(board)
    if notes:
        lines += ["", "Untuned methods:", ""] + [f"- {n}" for n in notes]
    if board.not_run.height:
        lines += ["", "Not ranked:", ""]
        for row in board.not_run.iter_rows(named=True):
            lines.append(f"- `{row['method']}` {row['status']}: {row['reason']}")
    failed = failed_seeds(board)
    if failed.height:
        lines += ["", "Failed seeds of ranked methods (left out of the means):", ""]
        for row in failed.iter_rows(named=True):
            lines.append(f"- `{row['method']}` seed {row['seed']}: {row['reason']}")
    lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{caption}]({path})" for caption, path in plots.items()]
        lines.append("")
    if board.group_table.height:
        gcols = [c for c in board.group_table.columns if c != "method"]
        counts = board.group_counts
        heads = [f"{g} (n={counts[g]})" if g in counts else g for g in gcols]
        lines += ["## Per-group test accuracy (%)", ""]
        lines += ["| Method | " + " | ".join(heads) + " |", "|" + "---|" * (len(gcols) + 1)]
        stds = board.group_std.rows_by_key("method", named=True, unique=True) if (
            board.group_std.height) else {}
        for row in board.group_table.iter_rows(named=True):
            sd = stds.get(row["method"], {})
            vals = [pm(row[g], sd.get(g)) for g in gcols]
            lines.append(f"| `{row['method']}` | " + " | ".join(vals) + " |")
        lines.append("")
    rule = RULES.get(meta.get("selection") or "", None)
    lines += ["## Definitions", ""]
    if rule is not None:
        lines.append(f"- selection `{rule.name}`: {rule.description}")
    lines += [f"- {k}: {v}" for k, v in DEFINITIONS.items()]
    lines += [
        "- group labels used: the splits whose group labels the method or the selection "
        "rule reads",
        "",
        "## Provenance",
        "",
        f"- spurbench {meta.get('spurbench_version')}, "
        f"commit {meta.get('git_commit') or 'unknown'}",
        f"- encoder `{meta.get('encoder')}`"
        f"{' (untrained: random weights)' if meta.get('untrained') else ''}, "
        f"head `{meta.get('head')}`",
        f"- dataset `{meta.get('dataset')}`, fingerprint `{meta.get('dataset_fingerprint')}`",
        f"- selection rule `{meta.get('selection')}`",
        f"- created {meta.get('created')}",
    ]
    for src in meta.get("sources") or []:
        lines.append(
            f"- run `{src['run']}` ({', '.join(src['methods'])}): spurbench "
            f"{src['spurbench_version']}, commit {src['git_commit'] or 'unknown'}, {src['created']}"
        )
    lines.append("")
    return "\n".join(lines)


WIDE = 140  # below this a terminal gets the compact table (80 columns fit)


def print_board(board: Board, console) -> None:  # noqa: ANN001 - a rich Console
    """The board on a terminal. Under WIDE columns a compact table (no ±-spaces, fewer
    columns) that fits 80; leaderboard.md always has every column."""
    from rich import box
    from rich.table import Table

    narrow = (console.width or 80) < WIDE
    table = Table(title=f"Leaderboard: {title(board.meta)}", box=box.SIMPLE_HEAD,
                  padding=(0, 1), title_justify="left")
    if narrow:
        metrics = ["wga", "avg", "worst_class"]
        short = {"wga": "WGA", "avg": "Avg", "worst_class": "Worst-cls"}
        table.add_column("#", no_wrap=True)
        table.add_column("method", overflow="fold")
        for m in metrics:
            table.add_column(short[m], no_wrap=True, justify="right")
        table.add_column("labels", no_wrap=True)
        table.add_column("trials", no_wrap=True, justify="right")
        for row in board.ranked.iter_rows(named=True):
            table.add_row(str(row["rank"]), row["method"],
                          *[_row_pm(row, m).replace(" ± ", "±") for m in metrics],
                          row["group_labels_used"] or "none", str(row["trials"]))
    else:
        for col in ["#", "method"] + [COLUMN_TITLES[m] for m in METRIC_NAMES] + [
            "group labels", "trials", "dim", "defaults won", "fits",
        ]:
            table.add_column(col, no_wrap=col != "method")
        for row in board.ranked.iter_rows(named=True):
            table.add_row(
                str(row["rank"]), row["method"], *[_row_pm(row, m) for m in METRIC_NAMES],
                *_extra_cells(row),
            )
    console.print(table)
    if narrow and board.ranked.height:
        console.print("test accuracy %, mean±std over final fits; adj. average, search dim, "
                      "defaults won and fits: leaderboard.md or a wider terminal",
                      highlight=False)
    if board.meta.get("bayes_wga") is not None:
        console.print(
            f"Bayes-optimal worst-group accuracy (ceiling): {100 * board.meta['bayes_wga']:.1f}"
        )
    for method, vals in extra_metrics(board).items():
        console.print(f"{method}: " + ", ".join(
            f"{k} {pm(_mean(v), _std(v)).replace(' ± ', '±')}" for k, v in sorted(vals.items())),
            highlight=False)
    for note in tuning_notes(board):
        console.print(note.replace("`", ""), highlight=False)
    for row in board.not_run.iter_rows(named=True):
        console.print(f"{row['method']} {row['status']}: {row['reason']}", highlight=False)
    for w in warnings(board.meta):
        console.print(f"[yellow]note:[/yellow] {w}")


# -- the JSON twin --------------------------------------------------------------------------
def _seed_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A results row minus the board-level columns, JSON blobs decoded."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in BOARD_COLUMNS or k == "method":
            continue
        out[k] = json.loads(v) if k in _JSON_COLUMNS and v is not None else v
    return out


def _stat(values: list[float]) -> dict[str, float | None]:
    return {"mean": _mean(values) if values else None, "std": _std(values)}


def to_json(board: Board, name: str, published: str) -> dict[str, Any]:
    """The machine-readable board: summaries (fractions in [0, 1]) and every per-seed row."""
    meta = board.meta
    rows = board.rows.sort(["method", "seed"], nulls_last=True)
    per_method: dict[str, list[dict]] = {}
    for row in rows.iter_rows(named=True):
        per_method.setdefault(row["method"], []).append(row)
    methods = []
    for r in board.ranked.iter_rows(named=True):
        seeds = per_method[r["method"]]
        ok = [s for s in seeds if s["status"] == "ok"]
        group_vals: dict[str, list[float]] = {}
        for s in ok:
            for g, acc in json.loads(s["test_groups"]).items():
                group_vals.setdefault(g, []).append(acc)
        methods.append({
            "rank": r["rank"], "method": r["method"], "base_method": r["base_method"],
            "group_labels_used": r["group_labels_used"], "trials": r["trials"],
            "seeds": r["seeds"], "replicates": r["replicates"], "space_dim": r["space_dim"],
            "defaults_won": r["defaults_won"], "head": r["head"],
            "spread": "sample std over final fits: seeds across replicates (sweeps)"
            if (r["replicates"] or 1) > 1 else "sample std over final seeds of one sweep",
            "params": json.loads(r["params"]) if r["params"] else None,
            "test": {m: _stat([s[f"test_{m}"] for s in ok]) for m in METRIC_NAMES},
            "val": {m: _stat([s[f"val_{m}"] for s in ok]) for m in METRIC_NAMES},
            "test_groups": {g: _stat(v) for g, v in group_vals.items()},
            "test_extra": {k: _stat(v) for k, v in
                           extra_metrics(board).get(r["method"], {}).items()},
            "per_seed": [_seed_entry(s) for s in seeds],
        })
    not_run = [
        {"method": r["method"], "status": r["status"], "reason": r["reason"],
         "per_seed": [_seed_entry(s) for s in per_method[r["method"]]]}
        for r in board.not_run.iter_rows(named=True)
    ]
    rule = RULES.get(meta.get("selection") or "")
    return {
        "kind": JSON_KIND, "version": JSON_VERSION, "name": name, "title": title(meta),
        **{k: meta.get(k) for k in BOARD_COLUMNS},
        "provenance": {
            "spurbench_version": meta.get("spurbench_version"),
            "git_commit": meta.get("git_commit"),
            "encoder": meta.get("encoder"), "untrained": meta.get("untrained"),
            "dataset": meta.get("dataset"),
            "dataset_fingerprint": meta.get("dataset_fingerprint"),
            "selection": meta.get("selection"), "created": meta.get("created"),
            "published": published, "runs": meta.get("sources") or [],
        },
        "notes": warnings(meta),
        "units": "accuracy as a fraction in [0, 1]; std is the sample std over a method's "
                 "final fits (null for 1); see each method's `spread`",
        "definitions": {
            **DEFINITIONS, **({"selection": rule.description} if rule is not None else {}),
        },
        "groups": list(board.group_table.columns[1:]),
        "group_counts": board.group_counts,
        "methods": methods,
        "not_run": not_run,
    }


def rows_from_json(doc: dict[str, Any]) -> pl.DataFrame:
    """The results table a JSON twin was built from (inverse of `to_json`)."""
    if not isinstance(doc, dict):
        raise ValueError(f"not a spurbench leaderboard (a JSON {type(doc).__name__})")
    if doc.get("kind") != JSON_KIND:
        raise ValueError(f"not a spurbench leaderboard (kind={doc.get('kind')!r})")
    board = {k: doc.get(k) for k in BOARD_COLUMNS}
    rows = []
    for entry in list(doc.get("methods", [])) + list(doc.get("not_run", [])):
        for seed in entry.get("per_seed", []):
            row = {**board, "method": entry["method"]}
            for k, v in seed.items():
                if k in SCHEMA:
                    row[k] = json.dumps(v) if k in _JSON_COLUMNS and v is not None else v
            rows.append(row)
    return make_frame(rows)
