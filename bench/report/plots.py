"""Leaderboard plots as PNG: WGA against average accuracy, and per-group accuracy bars.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never
needs a display and never changes the process-wide backend.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.report.leaderboard import Board, title

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
    return _save(wga_figure(board), path)


def wga_figure(board: Board) -> Figure:
    """One point per method at (mean average acc, mean WGA), error bars = std over seeds;
    each point's rank placed where it overlaps no other rank (see _place_labels)."""
    fig = Figure(figsize=(7.6, 4.8), layout="constrained")  # the legend beside the axes
    ax = fig.add_subplot()
    rows = list(board.ranked.iter_rows(named=True))
    for i, (row, color) in enumerate(zip(rows, _colors(len(rows)), strict=True)):
        ax.errorbar(
            row["avg_mean"], row["wga_mean"], xerr=row["avg_std"] or 0.0,
            yerr=row["wga_std"] or 0.0, fmt=_MARKERS[i % len(_MARKERS)], color=color,
            capsize=3, label=f"{row['rank']}. {row['method']}",
        )
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
        # beside the axes, where it hides no point or rank (and "best" searched every
        # artist, the rank labels' leader lines included: ~0.15 s of a 0.26 s plot)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _place_labels(fig, ax, [(r["avg_mean"], r["wga_mean"]) for r in rows],
                      [str(r["rank"]) for r in rows])
    return fig


_RADII = (7, 13, 20, 28, 38, 50)  # points from the marker
_ANGLES = (45, 135, -45, -135, 90, -90, 0, 180, 22, 158, -22, -158, 68, 112, -68, -112)


def _place_labels(fig: Figure, ax, points: list[tuple[float, float]], texts: list[str],  # noqa: ANN001
                  fontsize: float = 7) -> None:
    """Rank labels where no two overlap: in the order of the ranks, each label goes to the
    first spot (nearest ring first) whose box is inside the axes and clear of every label
    placed so far and of every marker; far from its point a thin line joins them. With
    clustered methods a fixed offset piled the ranks on top of each other."""
    import math

    from matplotlib.transforms import Bbox

    FigureCanvasAgg(fig)
    engine = fig.get_layout_engine()
    if engine is not None:  # settle the layout so data -> pixel transforms are final
        engine.execute(fig)  # (the layout alone: drawing the figure for it cost ~0.1 s)
    fig.set_layout_engine(None)  # and keep it: a relayout would rescale under the labels
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0
    centers = [ax.transData.transform(p) for p in points]
    marker = 4 * px
    taken = [Bbox.from_extents(x - marker, y - marker, x + marker, y + marker)
             for x, y in centers]
    frame = ax.bbox
    for (x, y), (dx_data, dy_data), text in zip(centers, points, texts, strict=True):
        probe = ax.text(0, 0, text, fontsize=fontsize)
        box = probe.get_window_extent(renderer)
        probe.remove()
        w, h = box.width + 2 * px, box.height + 2 * px
        chosen = None
        for r in _RADII:
            for a in _ANGLES:
                cx = x + r * px * math.cos(math.radians(a))
                cy = y + r * px * math.sin(math.radians(a))
                cand = Bbox.from_extents(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                inside = (cand.x0 >= frame.x0 and cand.x1 <= frame.x1
                          and cand.y0 >= frame.y0 and cand.y1 <= frame.y1)
                if inside and not any(cand.overlaps(t) for t in taken):
                    chosen = (r, a, cand)
                    break
            if chosen:
                break
        if chosen is None:  # nowhere clear (dozens of methods on one spot): nearest ring
            chosen = (_RADII[0], _ANGLES[0], Bbox.from_extents(x, y, x + w, y + h))
        r, a, cand = chosen
        taken.append(cand)
        ax.annotate(text, (dx_data, dy_data), textcoords="offset points",
                    xytext=(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))),
                    ha="center", va="center", fontsize=fontsize,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray"}
                    if r > _RADII[0] else None)


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
