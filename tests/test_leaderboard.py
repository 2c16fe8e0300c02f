"""Leaderboards from a small real run, checked against the results table it came from."""

from __future__ import annotations

import json
import math
import re
import statistics

import polars as pl
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UserError
from bench.report.leaderboard import rows_from_json, summarize
from bench.report.publish import publish, rows_from_mlflow, split_boards, stem_for
from bench.run.runner import RunConfig, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = ("wga", "avg", "adj_avg", "worst_class")
SMALL = {"n_train": "1000", "n_val": "400", "n_test": "800"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """erm and reweight at defaults (5 epochs), 3 seeds, on a small synthetic dataset."""
    tmp = tmp_path_factory.mktemp("lb")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPURBENCH_CACHE", str(tmp / "cache"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        result = run(RunConfig(
            dataset="synthetic", methods=["erm", "reweight"], dataset_opts=SMALL, trials=0,
            seeds=3, params=["erm.epochs=5", "reweight.epochs=5"], runs_dir=tmp / "runs",
            device="cpu", progress=False,
        ))
    finally:
        mp.undo()
    table = pl.read_parquet(result.run_dir / "results.parquet")
    out = tmp / "boards"
    publish(table, out, published="2000-01-01T00:00:00+00:00")
    return result.run_dir, table, out


def _expected(table: pl.DataFrame) -> dict[str, dict]:
    """Means, sample stds and per-group means per method, computed independently."""
    exp: dict[str, dict] = {}
    for method in sorted(set(table["method"])):
        rows = table.filter((pl.col("method") == method) & (pl.col("status") == "ok"))
        e = {m: [100 * v for v in rows[f"test_{m}"]] for m in METRICS}
        groups: dict[str, list[float]] = {}
        for blob in rows["test_groups"]:
            for g, acc in json.loads(blob).items():
                groups.setdefault(g, []).append(100 * acc)
        exp[method] = {
            **{m: (statistics.mean(v), statistics.stdev(v)) for m, v in e.items()},
            "groups": {g: statistics.mean(v) for g, v in groups.items()},
            "seeds": rows.height,
        }
    return exp


def test_board_matches_results_table(small_run):
    run_dir, table, out = small_run
    assert table.height == 6 and set(table["status"]) == {"ok"}
    exp = _expected(table)
    order = sorted(exp, key=lambda m: (-exp[m]["wga"][0], m))
    doc = json.loads((out / "synthetic.json").read_text())
    assert [m["method"] for m in doc["methods"]] == order
    assert [m["rank"] for m in doc["methods"]] == [1, 2]
    for entry in doc["methods"]:
        e = exp[entry["method"]]
        assert entry["seeds"] == e["seeds"] == 3
        for m in METRICS:
            assert 100 * entry["test"][m]["mean"] == pytest.approx(e[m][0], abs=1e-9)
            assert 100 * entry["test"][m]["std"] == pytest.approx(e[m][1], abs=1e-9)
        for g, mean in e["groups"].items():
            assert 100 * entry["test_groups"][g]["mean"] == pytest.approx(mean, abs=1e-9)
        # --trials 0: nothing is selected on validation, so only the method's own labels count
        assert entry["group_labels_used"] == ("" if entry["method"] == "erm" else "train")

    md = (out / "synthetic.md").read_text()
    ranked = re.findall(r"^\| (\d) \| `([\w-]+)` \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+)",
                        md, re.M)
    assert [(int(r), m) for r, m, *_ in ranked] == [(1, order[0]), (2, order[1])]
    for _, method, wga, wga_sd, avg, avg_sd in ranked:
        assert float(wga) == pytest.approx(exp[method]["wga"][0], abs=0.051)
        assert float(wga_sd) == pytest.approx(exp[method]["wga"][1], abs=0.051)
        assert float(avg) == pytest.approx(exp[method]["avg"][0], abs=0.051)
        assert float(avg_sd) == pytest.approx(exp[method]["avg"][1], abs=0.051)
    # per-group table: one row per method, one "mean ± std" cell per group
    section = md.split("## Per-group test accuracy (%)")[1].split("##")[0]
    groups = list(exp[order[0]]["groups"])
    assert all(f"{g} (n=" in section for g in groups)
    for method in order:
        cells = re.search(rf"^\| `{method}` \| (.*) \|$", section, re.M).group(1).split(" | ")
        means = [float(c.split(" ± ")[0]) for c in cells]
        assert means == pytest.approx([exp[method]["groups"][g] for g in groups], abs=0.051)
    bayes = table["bayes_wga"][0]
    assert f"ceiling): {100 * bayes:.1f}" in md
    assert "synthetic (generated)" in md


def test_json_twin_holds_every_per_seed_number(small_run):
    _, table, out = small_run
    back = rows_from_json(json.loads((out / "synthetic.json").read_text()))
    key = ["method", "seed"]
    assert back.sort(key).equals(table.sort(key))


def test_provenance_is_printed(small_run):
    _, table, out = small_run
    doc = json.loads((out / "synthetic.json").read_text())
    prov = doc["provenance"]
    for col in ("spurbench_version", "git_commit", "dataset_fingerprint", "encoder"):
        assert prov[col] == table[col][0]
    assert prov["created"] == max(table["created"])
    assert prov["selection"] == "worst-group" and prov["untrained"] is False
    assert prov["published"] == "2000-01-01T00:00:00+00:00"
    md = (out / "synthetic.md").read_text()
    assert table["dataset_fingerprint"][0] in md and "selection rule `worst-group`" in md


def test_plots_are_valid_pngs_linked_from_markdown(small_run):
    from matplotlib import image

    _, _, out = small_run
    md = (out / "synthetic.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert sorted(links) == ["synthetic-groups.png", "synthetic-wga-vs-avg.png"]
    for name in links:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        pixels = image.imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels.std() > 0.05  # something was drawn


def test_index_lists_the_board(small_run):
    _, _, out = small_run
    index = (out / "README.md").read_text()
    assert "[synthetic](synthetic.md)" in index
    assert index.count("(synthetic.md)") == 1


def test_mlflow_gives_the_same_table_and_board(small_run, tmp_path):
    run_dir, table, out = small_run
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    back = rows_from_mlflow("spurbench/synthetic", uri)
    key = ["method", "seed"]
    assert back.sort(key).equals(table.sort(key))
    res = CliRunner().invoke(app, [
        "leaderboard", "publish", "--from-mlflow", "spurbench/synthetic", "--tracking-uri", uri,
        "--to", str(tmp_path), "--no-plots",
    ])
    assert res.exit_code == 0, res.output
    a = json.loads((out / "synthetic.json").read_text())
    b = json.loads((tmp_path / "synthetic.json").read_text())
    for doc in (a, b):
        doc["provenance"].pop("published")
    assert a == b


def test_single_seed_has_no_spread(small_run):
    _, table, _ = small_run
    board = summarize(table.filter(pl.col("seed") == 0))
    assert board.ranked["seeds"].to_list() == [1, 1]
    assert board.ranked["wga_std"].to_list() == [None, None]


def test_newest_run_wins_and_mixed_data_is_refused(small_run):
    _, table, _ = small_run
    later = table.filter(pl.col("method") == "erm").with_columns(
        pl.lit("later-run").alias("run"), pl.lit("2999-01-01T00:00:00+00:00").alias("created"),
        (pl.col("test_wga") * 0 + 0.5).alias("test_wga"),
    )
    (part,) = split_boards(pl.concat([table, later]))
    assert part.dropped == [f"erm from run {table['run'][0]} (superseded by run later-run)"]
    erm = part.table.filter(pl.col("method") == "erm")
    assert set(erm["run"]) == {"later-run"} and set(erm["test_wga"]) == {0.5}
    other_data = later.with_columns(pl.lit("0" * 16).alias("dataset_fingerprint"))
    with pytest.raises(UserError, match="different contents across runs"):
        split_boards(pl.concat([table, other_data]))


def test_stem_names_encoder_and_rule_only_when_not_default():
    assert stem_for("synthetic", "identity", "worst-group") == "synthetic"
    assert stem_for("waterbirds", "openclip:ViT-B-32:openai", "average") == (
        "waterbirds--openclip-ViT-B-32-openai--average"
    )


def test_bad_sources_are_user_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["leaderboard", "publish", "--from", str(tmp_path / "nope")])
    assert isinstance(res.exception, UserError) and "nope" in str(res.exception)
    res = runner.invoke(app, ["leaderboard", "publish", "--from-mlflow", "x",
                              "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert isinstance(res.exception, UserError) and "no such SQLite file" in str(res.exception)
    (tmp_path / "results.parquet").write_bytes(b"not parquet")
    res = runner.invoke(app, ["leaderboard", "publish", "--from", str(tmp_path)])
    assert isinstance(res.exception, UserError) and "unreadable" in str(res.exception)


def test_failed_and_skipped_methods_are_listed_not_ranked(small_run):
    _, table, _ = small_run
    broken = table.filter(pl.col("method") == "reweight").with_columns(
        pl.lit("failed").alias("status"), pl.lit("seed 0: boom").alias("reason"),
    )
    board = summarize(pl.concat([table.filter(pl.col("method") == "erm"), broken]))
    assert board.ranked["method"].to_list() == ["erm"]
    assert board.not_run.select("method", "status").rows() == [("reweight", "failed")]
    assert not math.isnan(board.ranked["wga_mean"][0])


def test_mlflow_row_tag_fits_even_a_long_reason(small_run):
    from bench.report.publish import ROW_TAG, row_tags

    _, table, _ = small_run
    row = {**table.row(0, named=True), "status": "failed", "reason": "x" * 20000}
    tag = row_tags(row)[ROW_TAG]
    assert len(tag) <= 8000 and json.loads(tag)["reason"].startswith("xxx")


def test_mlflow_drops_failures_a_resume_redid(small_run, tmp_path):
    """A seed that failed and was redone on resume: one ok row, as in results.parquet."""
    import shutil

    from bench.report.publish import ROW_TAG, row_tags
    from bench.run.tracking import Tracker

    run_dir, table, _ = small_run
    shutil.copy(run_dir / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "spurbench/synthetic")
    first = table.filter(pl.col("method") == "erm").row(0, named=True)
    failed = {**first, "status": "failed", "reason": "seed 0: RuntimeError: boom"}
    tracker.nested("erm/seed-0", tags={"spurbench.kind": "final", **row_tags(failed)},
                   status="FAILED")
    assert ROW_TAG in row_tags(failed)
    back = rows_from_mlflow("spurbench/synthetic", uri)
    assert back.sort(["method", "seed"]).equals(table.sort(["method", "seed"]))
