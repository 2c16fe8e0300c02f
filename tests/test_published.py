"""The committed leaderboards/ match what scripts/regenerate_leaderboards.sh produces, on
what does not depend on the clock or the machine: which boards exist, their method set,
their configuration (defaults, seeds) and their provenance. Rebuilding them is the
script's job (minutes); this test only reads them."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from bench.data.dataset import DatasetOptions
from bench.encoders.factory import default_encoder_for
from bench.plugins import registry
from bench.report.publish import builtin_methods, embedded_datasets, stem_for

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ROOT / "leaderboards"
SCRIPT = ROOT / "scripts" / "regenerate_leaderboards.sh"
PROVENANCE = ("spurbench_version", "git_commit", "encoder", "untrained", "dataset",
              "dataset_fingerprint", "selection", "created", "published", "runs")


def _board(name: str) -> tuple[dict, object]:
    plugin = registry.get_dataset(name)
    spec = plugin.load(DatasetOptions())
    stem = stem_for(name, default_encoder_for(spec, plugin), "worst-group")
    path = BOARDS / f"{stem}.json"
    assert path.is_file(), f"no published board {path.name}: run {SCRIPT.relative_to(ROOT)}"
    return json.loads(path.read_text()), spec


def test_regenerate_script_is_there():
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK)


@pytest.mark.parametrize("dataset", embedded_datasets())
def test_published_board_matches_regeneration(dataset):
    doc, spec = _board(dataset)
    # method set: every built-in method, ranked or listed with the reason it did not run
    ranked = [m["method"] for m in doc["methods"]]
    not_run = {m["method"]: m for m in doc["not_run"]}
    assert sorted(ranked + list(not_run)) == builtin_methods()
    for m in not_run.values():
        assert m["status"] == "skipped" and m["reason"], m  # a failure is never published
    # configuration: defaults (no tuning), the same seeds for every method, worst-group
    seeds = {m["seeds"] for m in doc["methods"]}
    assert len(seeds) == 1 and seeds.pop() >= 2
    assert all(m["trials"] == 0 for m in doc["methods"])
    assert doc["selection"] == "worst-group"
    # provenance: present, and describing the data the loader gives today
    prov = doc["provenance"]
    assert all(prov.get(k) not in (None, "", []) for k in PROVENANCE if k != "untrained")
    assert isinstance(prov["untrained"], bool)
    assert prov["dataset_fingerprint"] == spec.fingerprint() == doc["dataset_fingerprint"]
    assert prov["encoder"] == doc["encoder"]
    assert doc["synthetic"] == spec.synthetic and doc["bayes_wga"] == spec.bayes_wga
    notes = " ".join(doc["notes"])
    assert ("synthetic" in notes) == spec.synthetic
    assert ("untrained" in notes) == prov["untrained"]


@pytest.mark.parametrize("dataset", embedded_datasets())
def test_published_board_is_consistent(dataset):
    """Ranks and summaries agree with the per-seed numbers; the files it links exist."""
    doc, _ = _board(dataset)
    means = []
    for m in doc["methods"]:
        wga = [s["test_wga"] for s in m["per_seed"] if s["status"] == "ok"]
        assert m["test"]["wga"]["mean"] == pytest.approx(statistics.mean(wga))
        means.append(statistics.mean(wga))
    assert means == sorted(means, reverse=True)
    md = (BOARDS / f"{doc['name']}.md").read_text()
    for suffix in ("wga-vs-avg", "groups"):
        png = f"{doc['name']}-{suffix}.png"
        assert f"]({png})" in md and (BOARDS / png).read_bytes()[:4] == b"\x89PNG"
    assert f"]({doc['name']}.md)" in (BOARDS / "README.md").read_text()
