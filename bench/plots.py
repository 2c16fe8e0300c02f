"""Leaderboard plots as PNG: WGA against average accuracy, and per-group accuracy bars.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never
needs a display and never changes the process-wide backend.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.leaderboard import Board, title

# Deterministic PNG bytes for the same numbers: no software-version stamp in the metadata.
_PNG_META = {"Software": None}
_MARKERS = "osD^vPX*<>"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, metadata=_PNG_META)
    return path


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def wga_vs_average(board: Board, path: Path) -> Path:
    """One point per method at (mean average acc, mean WGA), error bars = std over seeds."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    rows = list(board.ranked.iter_rows(named=True))
    for i, (row, color) in enumerate(zip(rows, _colors(len(rows)), strict=True)):
        ax.errorbar(
            row["avg_mean"], row["wga_mean"], xerr=row["avg_std"] or 0.0,
            yerr=row["wga_std"] or 0.0, fmt=_MARKERS[i % len(_MARKERS)], color=color,
            capsize=3, label=f"{row['rank']}. {row['method']}",
        )
        ax.annotate(str(row["rank"]), (row["avg_mean"], row["wga_mean"]),  # rank: see legend
                    textcoords="offset points", xytext=(4, 3), fontsize=7)
    if board.meta.get("bayes_wga") is not None:
        ax.axhline(100 * board.meta["bayes_wga"], ls="--", color="gray", lw=1,
                   label="Bayes-optimal WGA (ceiling)")
    lo = max(0.0, min([100.0] + [min(r["wga_mean"], r["avg_mean"]) for r in rows]) - 5)
    ax.plot([lo, 100], [lo, 100], ls=":", color="lightgray", lw=1, label="WGA = average")
    ax.set_xlabel("Average test accuracy (%)")
    ax.set_ylabel("Worst-group test accuracy (%)")
    ax.set_title(title(board.meta), fontsize=10)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def per_group(board: Board, path: Path) -> Path:
    """Grouped bars: test accuracy of each method on each evaluation group, std as error bars."""
    groups = [c for c in board.group_table.columns if c != "method"]
    methods = board.group_table["method"].to_list()
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(min(24.0, max(6.4, 0.16 * len(groups) * max(1, len(methods)) + 3)),
                          4.8), layout="constrained")
    ax = fig.add_subplot()
    stds = board.group_std.rows_by_key("method", named=True, unique=True) if (
        board.group_std.height) else {}
    for i, (row, color) in enumerate(
        zip(board.group_table.iter_rows(named=True), _colors(len(methods)), strict=True)
    ):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(groups))]
        vals = [row[g] if row[g] is not None else 0.0 for g in groups]
        errs = [(stds.get(row["method"], {}).get(g) or 0.0) for g in groups]
        ax.bar(xs, vals, width, yerr=errs, capsize=2, color=color, label=row["method"])
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0,
                  ha="right" if len(groups) > 4 else "center", fontsize=8)
    ax.set_ylabel("Test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-group accuracy: {title(board.meta)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if methods:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)
