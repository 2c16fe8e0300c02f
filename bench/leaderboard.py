"""Leaderboards from a results table: ranked by mean test worst-group accuracy.

Every leaderboard prints the metric definitions, the selection rule, which splits' group
labels each method used, and whether the encoder is untrained or the data synthetic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from bench.metrics import DEFINITIONS, METRIC_NAMES
from bench.selection import RULES

COLUMN_TITLES = {
    "wga": "Worst-group", "avg": "Average", "adj_avg": "Adj. average", "worst_class": "Worst-class",
}


@dataclass
class Board:
    """A ranked summary of one (dataset, encoder, selection) results table."""

    ranked: pl.DataFrame  # one row per method that produced results, best first
    not_run: pl.DataFrame  # methods skipped or failed, with the reason
    group_table: pl.DataFrame  # method × evaluation group, mean test accuracy
    meta: dict


def _first(df: pl.DataFrame, col: str):
    return df[col][0] if df.height and col in df.columns else None


def summarize(results: pl.DataFrame) -> Board:
    ok = results.filter(pl.col("status") == "ok")
    aggs = []
    for m in METRIC_NAMES:
        c = pl.col(f"test_{m}") * 100
        aggs += [c.mean().alias(f"{m}_mean"), c.std(ddof=1).fill_null(0.0).alias(f"{m}_std")]
    ranked = (
        ok.group_by("method")
        .agg(
            *aggs,
            pl.len().alias("seeds"),
            pl.col("trials").first(),
            pl.col("group_labels_used").first(),
            pl.col("params").first(),
        )
        .sort(["wga_mean", "method"], descending=[True, False])
        .with_row_index("rank", offset=1)
    )
    not_run = (
        results.filter(pl.col("status") != "ok")
        .group_by("method")
        .agg(pl.col("status").first(), pl.col("reason").first())
        .filter(~pl.col("method").is_in(ranked["method"].to_list()))
        .sort("method")
    )
    groups: dict[str, dict[str, list[float]]] = {}
    for method, blob in ok.select("method", "test_groups").iter_rows():
        for g, acc in json.loads(blob).items():
            groups.setdefault(method, {}).setdefault(g, []).append(acc * 100)
    names = sorted({g for d in groups.values() for g in d})
    group_rows = [
        {"method": m, **{g: sum(v) / len(v) for g, v in groups.get(m, {}).items()}}
        for m in ranked["method"].to_list()
    ]
    group_table = pl.DataFrame(
        group_rows, schema={"method": pl.Utf8, **{g: pl.Float64 for g in names}}
    )
    meta = {
        k: _first(results, k)
        for k in (
            "dataset", "dataset_fingerprint", "encoder", "untrained", "synthetic", "selection",
            "bayes_wga", "spurbench_version", "git_commit", "created", "head",
        )
    }
    return Board(ranked, not_run, group_table, meta)


def _pm(row: dict, m: str) -> str:
    return f"{row[f'{m}_mean']:.1f} ± {row[f'{m}_std']:.1f}"


def title(meta: dict) -> str:
    return f"{meta['dataset']} · {meta['encoder']} · selection {meta['selection']}"


def warnings(meta: dict) -> list[str]:
    out = []
    if meta.get("synthetic"):
        out.append("The data are synthetic (generated), not a real benchmark.")
    if meta.get("untrained"):
        out.append("The encoder has random (untrained) weights: numbers say nothing about CLIP.")
    return out


def render_markdown(board: Board) -> str:
    meta = board.meta
    lines = [f"# Leaderboard: {title(meta)}", ""]
    lines += [f"> **Note:** {w}" for w in warnings(meta)]
    if warnings(meta):
        lines.append("")
    header = ["Rank", "Method"] + [COLUMN_TITLES[m] for m in METRIC_NAMES]
    header += ["Group labels used", "Trials", "Seeds"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in board.ranked.iter_rows(named=True):
        cells = [str(row["rank"]), f"`{row['method']}`"] + [_pm(row, m) for m in METRIC_NAMES]
        cells += [row["group_labels_used"] or "none", str(row["trials"]), str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    if meta.get("bayes_wga") is not None:
        lines += [
            "",
            f"**Bayes-optimal worst-group accuracy (ceiling): {100 * meta['bayes_wga']:.1f}** "
            "— the best any classifier can reach on this data's distribution.",
        ]
    for row in board.not_run.iter_rows(named=True):
        lines.append(f"- `{row['method']}` {row['status']}: {row['reason']}")
    lines += ["", "Test accuracy in %, mean ± std over seeds; ranked by mean worst-group accuracy.", ""]
    if board.group_table.height:
        gcols = [c for c in board.group_table.columns if c != "method"]
        lines += ["## Per-group test accuracy (%)", ""]
        lines += ["| Method | " + " | ".join(gcols) + " |", "|" + "---|" * (len(gcols) + 1)]
        for row in board.group_table.iter_rows(named=True):
            vals = [("—" if row[g] is None else f"{row[g]:.1f}") for g in gcols]
            lines.append(f"| `{row['method']}` | " + " | ".join(vals) + " |")
        lines.append("")
    rule = RULES.get(meta.get("selection") or "", None)
    lines += ["## Definitions", ""]
    if rule is not None:
        lines.append(f"- selection `{rule.name}`: {rule.description}")
    lines += [f"- {k}: {v}" for k, v in DEFINITIONS.items()]
    lines += [
        "",
        "## Provenance",
        "",
        f"- spurbench {meta.get('spurbench_version')}, commit {meta.get('git_commit') or 'unknown'}",
        f"- encoder `{meta.get('encoder')}`{' (untrained)' if meta.get('untrained') else ''}, "
        f"head `{meta.get('head')}`",
        f"- dataset `{meta.get('dataset')}`, fingerprint `{meta.get('dataset_fingerprint')}`",
        f"- created {meta.get('created')}",
        "",
    ]
    return "\n".join(lines)


def print_board(board: Board, console) -> None:  # noqa: ANN001 - a rich Console
    from rich.table import Table

    table = Table(title=f"Leaderboard: {title(board.meta)}")
    for col in ["#", "method"] + [COLUMN_TITLES[m] for m in METRIC_NAMES] + [
        "group labels", "trials", "seeds",
    ]:
        table.add_column(col)
    for row in board.ranked.iter_rows(named=True):
        table.add_row(
            str(row["rank"]), row["method"], *[_pm(row, m) for m in METRIC_NAMES],
            row["group_labels_used"] or "none", str(row["trials"]), str(row["seeds"]),
        )
    console.print(table)
    if board.meta.get("bayes_wga") is not None:
        console.print(f"Bayes-optimal worst-group accuracy (ceiling): {100 * board.meta['bayes_wga']:.1f}")
    for row in board.not_run.iter_rows(named=True):
        console.print(f"{row['method']} {row['status']}: {row['reason']}")
    for w in warnings(board.meta):
        console.print(f"[yellow]note:[/yellow] {w}")
