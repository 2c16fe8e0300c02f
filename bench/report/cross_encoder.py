"""One board across encoders: methods × backbones, worst-group and average accuracy.

CLIP robustness papers compare backbones (the SFR paper: RN50 and ViT; CounterAnimal:
dozens of open_clip models). Each encoder keeps its own board (its numbers come from its
own features and tuning); this module lines them up: one row per method, one column pair
(WGA, average) per encoder, and one plot. Built from per-encoder boards, so it works for
a sweep's run directories and for published boards alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.leaderboard import Board, pm

# -- the table ------------------------------------------------------------------------------


def cells(boards: dict[str, Board]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {encoder: ranked row}} over every encoder's board."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for encoder, board in boards.items():
        for row in board.ranked.iter_rows(named=True):
            out.setdefault(row["method"], {})[encoder] = row
    return out


def _order(table: dict[str, dict[str, dict[str, Any]]], encoders: list[str]) -> list[str]:
    """Methods by mean WGA over the encoders they ran on (missing ones last)."""
    def key(method: str) -> tuple:
        vals = [table[method][e]["wga_mean"] for e in encoders if e in table[method]]
        return (-len(vals), -(sum(vals) / len(vals)) if vals else 0.0, method)
    return sorted(table, key=key)


def render_markdown(boards: dict[str, Board], plot: str | None = None) -> str:
    first = next(iter(boards.values()))
    meta = first.meta
    encoders = list(boards)
    table = cells(boards)
    lines = [f"# Across encoders: {meta.get('dataset')} · selection {meta.get('selection')}", ""]
    untrained = [e for e, b in boards.items() if b.meta.get("untrained")]
    if untrained:
        lines += [f"> **Note:** random (untrained) weights: {', '.join(untrained)} — their "
                  "numbers say nothing about CLIP.", ""]
    header = ["Method"] + [f"`{e}` WGA / Avg" for e in encoders]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in _order(table, encoders):
        row = [f"`{method}`"]
        for e in encoders:
            r = table[method].get(e)
            row.append("—" if r is None else
                       f"{pm(r['wga_mean'], r['wga_std'])} / {pm(r['avg_mean'], r['avg_std'])}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Test accuracy in %, mean ± sample std over final fits; each encoder's "
              "numbers come from its own features, tuning and seeds (its own board). "
              "Methods ordered by mean WGA over the encoders they ran on.", ""]
    if plot:
        lines += [f"![WGA and average accuracy per encoder]({plot})", ""]
    return "\n".join(lines)


def print_board(boards: dict[str, Board], console) -> None:  # noqa: ANN001 - a rich Console
    from rich import box
    from rich.table import Table

    encoders = list(boards)
    table = cells(boards)
    first = next(iter(boards.values()))
    out = Table(title=f"Across encoders: {first.meta.get('dataset')} (WGA / avg, %)",
                box=box.SIMPLE_HEAD, title_justify="left")
    out.add_column("method", overflow="fold")
    for e in encoders:
        out.add_column(e, overflow="fold", justify="right")
    for method in _order(table, encoders):
        out.add_row(method, *[
            "—" if (r := table[method].get(e)) is None
            else f"{pm(r['wga_mean'], None)} / {pm(r['avg_mean'], None)}" for e in encoders])
    console.print(out)


def plot(boards: dict[str, Board], path: Path) -> Path:
    """Grouped bars: per method, one bar per encoder; WGA on top, average below."""
    from matplotlib.figure import Figure

    from bench.report.plots import _colors, _save

    encoders = list(boards)
    table = cells(boards)
    methods = _order(table, encoders)
    width = 0.8 / max(1, len(encoders))
    fig = Figure(figsize=(max(6.4, 0.5 * len(methods) * max(1, len(encoders)) ** 0.5 + 3),
                          6.4), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric, label in ((axes[0], "wga", "Worst-group (%)"),
                              (axes[1], "avg", "Average (%)")):
        for i, (enc, color) in enumerate(zip(encoders, _colors(len(encoders)), strict=True)):
            xs = [j + (i - (len(encoders) - 1) / 2) * width for j in range(len(methods))]
            rows = [table[m].get(enc) for m in methods]
            vals = [r[f"{metric}_mean"] if r else 0.0 for r in rows]
            errs = [(r[f"{metric}_std"] or 0.0) if r else 0.0 for r in rows]
            ax.bar(xs, vals, width, yerr=errs, capsize=2, color=color, label=enc)
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    first = next(iter(boards.values()))
    axes[0].set_title(f"{first.meta.get('dataset')}: methods across encoders", fontsize=10)
    return _save(fig, path)


def write(boards: dict[str, Board], folder: Path, stem: str, plots: bool = True) -> list[Path]:
    """<stem>.md (and <stem>.png) in `folder`."""
    from bench.run.directory import write_text_atomic

    files = []
    link = None
    if plots and any(b.ranked.height for b in boards.values()):
        files.append(plot(boards, Path(folder) / f"{stem}.png"))
        link = f"{stem}.png"
    files.append(write_text_atomic(Path(folder) / f"{stem}.md", render_markdown(boards, link)))
    return files
