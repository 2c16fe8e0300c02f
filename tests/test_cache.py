"""The feature cache: computed once, verified on read, rebuilt when corrupt or stale,
safe under two processes, and inspectable with `bench cache list|clear`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.cache import Entry, cached_encode, list_entries
from bench.data.spec import DatasetSpec
from bench.encoders.factory import Encoded, Encoder


class CountingEncoder(Encoder):
    """A stand-in encoder: deterministic features, counts how often it really encodes."""

    id = "counting"

    def __init__(self, weights: str = "w1") -> None:
        self.calls = 0
        self.weights = weights

    def cache_identity(self) -> dict[str, object]:
        return {"id": self.id, "weights": self.weights}

    def encode(self, spec: DatasetSpec) -> Encoded:
        self.calls += 1
        n = spec.metadata.height
        feats = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 7.0
        return Encoded(feats, class_text=np.eye(2, 3, dtype=np.float32), logit_scale=42.0,
                       untrained=True)


def image_spec(folder: Path) -> DatasetSpec:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [("train", 0, 0), ("train", 0, 1), ("train", 1, 0), ("train", 1, 1),
            ("val", 0, 0), ("test", 1, 1)]
    for i in range(len(rows)):
        (folder / f"{i}.png").write_bytes(b"not read by the counting encoder " + bytes([i]))
    md = pl.DataFrame({
        "id": list(range(len(rows))), "item": [f"{i}.png" for i in range(len(rows))],
        "y": [r[1] for r in rows], "a": [r[2] for r in rows], "split": [r[0] for r in rows],
    })
    return DatasetSpec(name="toy", metadata=md, class_names=["a", "b"], attr_names=["p", "q"],
                       item_kind="image", root=str(folder))


@pytest.fixture
def setup(tmp_path):
    return image_spec(tmp_path / "images"), CountingEncoder(), tmp_path / "cache"


def only_entry(cache: Path) -> Entry:
    entries = list_entries(cache)
    assert len(entries) == 1
    return entries[0][0]


def test_second_call_reads_the_cache_with_every_field(setup):
    spec, enc, cache = setup
    first = cached_encode(spec, enc, cache)
    second = cached_encode(spec, enc, cache)
    assert enc.calls == 1
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(second.class_text, np.eye(2, 3))
    assert second.logit_scale == 42.0 and second.untrained is True
    manifest = json.loads(only_entry(cache).manifest.read_text())
    assert manifest["arrays"]["features"] == {"shape": [6, 3], "dtype": "float32"}
    assert manifest["dataset"] == "toy" and manifest["encoder"] == "counting"


def test_entries_are_plain_arrays_without_pickle(setup):
    spec, enc, cache = setup
    cached_encode(spec, enc, cache)
    with np.load(only_entry(cache).data, allow_pickle=False) as z:
        assert sorted(z.files) == ["class_text", "features"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest", "bad-manifest"])
def test_corrupt_entry_is_rebuilt_with_a_warning(setup, caplog, damage):
    spec, enc, cache = setup
    cached_encode(spec, enc, cache)
    entry = only_entry(cache)
    raw = entry.data.read_bytes()
    if damage == "truncate":
        entry.data.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # same size, one byte of the feature data changed
        entry.data.write_bytes(raw[:-20] + bytes([raw[-20] ^ 0xFF]) + raw[-19:])
    elif damage == "no-manifest":
        entry.manifest.unlink()
    else:
        entry.manifest.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="bench.data.cache"):
        rebuilt = cached_encode(spec, enc, cache)
    assert enc.calls == 2
    assert rebuilt.features.shape == (6, 3)
    if damage != "no-manifest":  # a missing manifest is simply "not cached yet"
        assert "corrupt or stale" in caplog.text and entry.data.name in caplog.text
    assert cached_encode(spec, enc, cache) is not None and enc.calls == 2  # healthy again


def test_changed_image_file_or_weights_is_a_new_entry(setup):
    spec, enc, cache = setup
    cached_encode(spec, enc, cache)
    image = Path(spec.root) / "3.png"
    image.write_bytes(image.read_bytes() + b"edited")
    cached_encode(spec, enc, cache)
    assert enc.calls == 2
    other = CountingEncoder(weights="w2")
    cached_encode(spec, other, cache)
    assert other.calls == 1
    assert len(list_entries(cache)) == 3


def test_missing_image_file_is_a_user_error(setup):
    from bench.errors import UserError

    spec, enc, cache = setup
    (Path(spec.root) / "2.png").unlink()
    with pytest.raises(UserError, match=r"image file .*2\.png is missing"):
        cached_encode(spec, enc, cache)


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np, polars as pl
    from bench.data.cache import cached_encode
    from bench.encoders.factory import Encoded, Encoder
    from bench.data.spec import DatasetSpec

    cache, counter, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    class Slow(Encoder):
        id = "slow"
        def encode(self, spec):
            with open(counter, "a") as f:
                f.write("encoded\\n")
            time.sleep(2.0)
            return Encoded(np.full((spec.metadata.height, 4), 3.0, np.float32))

    md = pl.DataFrame({"id": [0, 1, 2, 3, 4, 5], "item": [0, 1, 2, 3, 4, 5],
                       "y": [0, 0, 1, 1, 0, 1], "a": [0, 1, 0, 1, 0, 1],
                       "split": ["train"] * 4 + ["val", "test"]})
    spec = DatasetSpec(name="race", metadata=md, class_names=["a", "b"], attr_names=["p", "q"],
                       features=np.zeros((6, 2), np.float32))
    (ready / str(__import__("os").getpid())).touch()
    deadline = time.time() + 60
    while len(list(ready.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.02)
    print(cached_encode(spec, Slow(), cache).features.sum())
""")


def test_two_processes_encode_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ready = tmp_path / "ready"
    ready.mkdir()
    counter = tmp_path / "calls.txt"
    args = [sys.executable, str(script), str(tmp_path / "cache"), str(counter), str(ready)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert counter.read_text().splitlines() == ["encoded"]
    assert [o[0].strip() for o in outs] == ["72.0", "72.0"]
    assert any("waiting for it" in o[1] for o in outs)


def test_cache_list_and_clear_commands(setup, monkeypatch):
    spec, enc, cache = setup
    cached_encode(spec, enc, cache)
    runner = CliRunner()
    listed = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache), "--verify"])
    assert listed.exit_code == 0, listed.output
    assert "toy" in listed.output and "counting" in listed.output and "6 x 3" in listed.output
    assert " ok " in listed.output
    entry = only_entry(cache)
    entry.data.write_bytes(entry.data.read_bytes()[:100])
    listed = runner.invoke(app, ["cache", "list", "--cache-dir", str(cache), "--verify"])
    assert "corrupt" in listed.output
    monkeypatch.setenv("SPURBENCH_CACHE", str(cache))  # the default folder
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    assert "removed 1 feature cache entry" in cleared.output
    assert list_entries(cache) == []
    assert "no cached features" in runner.invoke(app, ["cache", "list"]).output


def test_clear_one_dataset_keeps_the_others(setup):
    spec, enc, cache = setup
    cached_encode(spec, enc, cache)
    other = DatasetSpec(name="other", metadata=spec.metadata, class_names=["a", "b"],
                        attr_names=["p", "q"], item_kind="image", root=spec.root)
    cached_encode(other, enc, cache)
    result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(cache),
                                      "--dataset", "other"])
    assert "removed 1 feature cache entry of dataset 'other'" in result.output
    assert [m["dataset"] for _, m in list_entries(cache)] == ["toy"]


def test_help_shows_examples():
    runner = CliRunner()
    for args in (["cache", "--help"], ["cache", "list", "--help"], ["cache", "clear", "--help"],
                 ["datasets", "download", "--help"]):
        assert "Example:" in runner.invoke(app, args).output


def test_write_is_atomic_no_temporary_files_left(setup):
    spec, enc, cache = setup
    cached_encode(spec, enc, cache)
    names = sorted(p.name for p in (cache / "features").iterdir())
    assert not [n for n in names if ".tmp" in n]
    assert {Path(n).suffix for n in names} <= {".npz", ".json", ".lock"}
