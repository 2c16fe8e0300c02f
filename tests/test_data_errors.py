"""Bad data gets one clear line naming the file and field, and exit code 2 (no traceback)."""

from __future__ import annotations

import sys
from pathlib import Path

import fixtures_formats as ff
import numpy as np
import pytest

TINY = "openclip:spurbench-tiny:none"


@pytest.fixture
def bench_main(monkeypatch, capsys, tmp_path):
    """Run the real entry point (bench.cli.main) in-process; return (exit code, stderr)."""
    from bench.cli import main
    from bench.data.features import clear_memo

    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))

    def invoke(*args: str) -> tuple[int, str]:
        clear_memo()
        monkeypatch.setattr(sys, "argv", ["bench", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        return exc.value.code, " ".join(err.split())

    return invoke


def run_args(root: Path, tmp_path: Path, dataset: str = "waterbirds", *extra: str) -> list[str]:
    return ["run", "--dataset", dataset, "--data-root", str(root), "--methods", "erm",
            "--trials", "0", "--seeds", "1", "--runs-dir", str(tmp_path / "runs"),
            "--device", "cpu", "--no-progress", *extra]


def edit_metadata(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def set_field(path: Path, row: int, column: int, value: str) -> None:
    """Replace one cell of a simple CSV (line `row`, 0 = header)."""
    lines = path.read_text().splitlines()
    fields = lines[row].split(",")
    fields[column] = value
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(bench_main, tmp_path):
    code, err = bench_main(*run_args(tmp_path / "empty", tmp_path))
    assert code == 2 and "Traceback" not in err
    assert "dataset 'waterbirds' not found" in err
    assert str(tmp_path / "empty" / "waterbirds_v1.0" / "metadata.csv") in err
    assert "bench datasets download waterbirds" in err


def test_missing_column_names_file_and_column(bench_main, tmp_path):
    base = ff.write_waterbirds(tmp_path)
    edit_metadata(base / "metadata.csv", ",place,", ",background,")
    code, err = bench_main(*run_args(tmp_path, tmp_path))
    assert code == 2
    assert f"{base / 'metadata.csv'}: missing column(s) 'place'" in err


def test_label_out_of_range_names_file_column_and_row(bench_main, tmp_path):
    base = ff.write_waterbirds(tmp_path)
    set_field(base / "metadata.csv", 3, 2, "2")  # data row 3 (img_id 3): y = 2
    code, err = bench_main(*run_args(tmp_path, tmp_path))
    assert code == 2
    assert f"{base / 'metadata.csv'}: label y=2 out of range 0..1 at data row 3 (img_id 3)" in err


@pytest.mark.parametrize("column, value, message", [
    (3, "7", "column 'split' has '7' at data row 5 (img_id 5); expected 0/1/2 or train/val/test"),
    (2, "bird", "column 'y' has 'bird' at data row 5 (img_id 5); expected an integer label"),
    (4, "", "column 'place' has an empty cell at data row 5 (img_id 5); expected an integer"),
])
def test_bad_cells_name_column_and_row(bench_main, tmp_path, column, value, message):
    base = ff.write_waterbirds(tmp_path)
    set_field(base / "metadata.csv", 5, column, value)
    code, err = bench_main(*run_args(tmp_path, tmp_path))
    assert code == 2 and f"{base / 'metadata.csv'}: {message}" in err


def test_missing_image_files_give_count_and_first_path(bench_main, tmp_path):
    base = ff.write_waterbirds(tmp_path)
    images = sorted(base.rglob("*.jpg"))
    for path in images[3:5]:
        path.unlink()
    code, err = bench_main(*run_args(tmp_path, tmp_path))
    assert code == 2
    assert "2 of 29 image files named in column 'img_filename' are missing" in err
    assert str(base / "metadata.csv") in err and f"first: {images[3]}" in err


def test_unreadable_image_names_the_file(bench_main, tmp_path):
    base = ff.write_waterbirds(tmp_path)
    broken = sorted(base.rglob("*.jpg"))[7]
    broken.write_bytes(b"this is not a jpeg")
    code, err = bench_main(*run_args(tmp_path, tmp_path, "waterbirds", "--encoder", TINY,
                                     "--encode-workers", "0"))
    assert code == 2 and "Traceback" not in err
    assert f"image {broken}" in err and "cannot be read" in err


def test_empty_training_group_names_file_and_group(bench_main, tmp_path):
    counts = dict(ff.WATERBIRDS_COUNTS)
    counts[(0, 1, 0)] = 0  # no waterbird on land in train
    base = ff.write_waterbirds(tmp_path, counts=counts)
    code, err = bench_main(*run_args(tmp_path, tmp_path))
    assert code == 2
    assert (f"dataset 'waterbirds' ({base / 'metadata.csv'}): training group(s) "
            "y=waterbird,a=land have no examples") in err


def test_unparseable_csv_names_the_file(bench_main, tmp_path):
    base = ff.write_waterbirds(tmp_path)
    with open(base / "metadata.csv", "a") as f:
        f.write("1,2,3,4,5,6,7,8,9\n")
    code, err = bench_main(*run_args(tmp_path, tmp_path))
    assert code == 2 and f"{base / 'metadata.csv'}: cannot parse as CSV" in err


def test_celeba_attribute_values_must_be_plus_minus_one(bench_main, tmp_path):
    rows = list(ff.CELEBA_ROWS)
    rows[4] = ("000005.jpg", 3, -1, 0)
    base = ff.write_celeba(tmp_path, rows)
    code, err = bench_main(*run_args(tmp_path, tmp_path, "celeba"))
    assert code == 2
    assert (f"{base / 'list_attr_celeba.csv'}: label Blond_Hair=3 out of range (-1/1) at data "
            "row 5 (image_id 000005.jpg)") in err


def test_civilcomments_bad_option(bench_main, tmp_path):
    ff.write_civilcomments(tmp_path)
    code, err = bench_main(*run_args(tmp_path, tmp_path, "civilcomments", "--dataset-opt",
                                     "train_groups=martian"))
    assert code == 2 and "--dataset-opt train_groups=martian: expected any, label or" in err


def test_multinli_texts_from_another_release(bench_main, tmp_path):
    base = ff.write_multinli(tmp_path)
    edit_metadata(base / "multinli_1.0_train.jsonl", '"gold_label": "contradiction"',
                  '"gold_label": "neutral"')
    code, err = bench_main(*run_args(tmp_path, tmp_path, "multinli"))
    assert code == 2
    assert "data row 1 (index 0) says gold_label=0 (contradiction) but the text files say" in err


def test_multinli_missing_text_file(bench_main, tmp_path):
    base = ff.write_multinli(tmp_path)
    (base / "multinli_1.0_dev_mismatched.jsonl").unlink()
    code, err = bench_main(*run_args(tmp_path, tmp_path, "multinli"))
    assert code == 2
    assert f"text file {base / 'multinli_1.0_dev_mismatched.jsonl'} not found" in err


def test_features_file_errors(bench_main, tmp_path):
    path = tmp_path / "emb.npz"
    np.savez(path, x=np.zeros((6, 3)), y=np.array([0, 1, 0, 1, 0, 1]),
             split=np.array([0, 0, 0, 0, 1, 2]))
    code, err = bench_main(*run_args(tmp_path, tmp_path, "features", "--dataset-opt",
                                     f"path={path}"))
    assert code == 2 and f"{path}: missing array(s) a; it has split, x, y" in err
    np.savez(path, x=np.zeros((6, 3)), y=np.array([0, 1, 0, 2, 0, 1]), a=np.zeros(6, int),
             split=np.array([0, 0, 0, 0, 1, 2]), class_names=np.array(["cat", "dog"]))
    code, err = bench_main(*run_args(tmp_path, tmp_path, "features", "--dataset-opt",
                                     f"path={path}"))
    assert code == 2 and f"{path}: label y=2 out of range 0..1 at data row 4" in err


def test_download_fails_offline_with_a_clear_message(bench_main, tmp_path, monkeypatch):
    """Real WILDS download code up to the network boundary: an address that refuses."""
    from wilds.datasets.waterbirds_dataset import WaterbirdsDataset

    monkeypatch.setattr(WaterbirdsDataset, "_versions_dict", {
        "1.0": {"download_url": "http://127.0.0.1:9/waterbirds/", "compressed_size": None}})
    code, err = bench_main("datasets", "download", "waterbirds", "--data-root",
                           str(tmp_path / "data"))
    assert code == 2 and "Traceback" not in err
    assert f"download of 'waterbirds' into {tmp_path / 'data'} failed" in err
    assert "Connection refused" in err and "https://wilds.stanford.edu/downloads" in err


def test_download_of_a_manual_dataset_says_how(bench_main):
    code, err = bench_main("datasets", "download", "multinli")
    assert code == 2 and "dataset 'multinli' has no automatic download" in err
    code, err = bench_main("datasets", "download", "waterbird")
    assert code == 2 and "unknown dataset 'waterbird' (did you mean 'waterbirds'?)" in err


def _features(path: Path, single_class: bool = False, drop_test_group: bool = False) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    x = rng.standard_normal((n, 8)).astype(np.float32)
    split = np.repeat([0, 1, 2], n // 3)
    y = np.zeros(n, int) if single_class else rng.integers(0, 2, n)
    a = rng.integers(0, 2, n)
    keep = ~((split == 2) & (y == 1) & (a == 0)) if drop_test_group else np.ones(n, bool)
    np.savez(path, x=x[keep], y=y[keep], a=a[keep], split=split[keep])
    return path


def test_a_single_class_dataset_is_refused(bench_main, tmp_path):
    path = _features(tmp_path / "one.npz", single_class=True)
    code, err = bench_main("run", "--dataset", "features", "--dataset-opt", f"path={path}",
                           "--methods", "erm", "--trials", "0", "--seeds", "1",
                           "--runs-dir", str(tmp_path / "runs"), "--no-progress")
    assert code == 2 and "needs at least two" in err and "one.npz" in err


def test_a_group_absent_from_test_is_named_in_a_warning(tmp_path, caplog):
    from bench.run.runner import Run, RunConfig

    path = _features(tmp_path / "gap.npz", drop_test_group=True)
    with caplog.at_level("WARNING", logger="bench.run"):
        Run(RunConfig(dataset="features", dataset_opts={"path": str(path)}, methods=["erm"],
                      runs_dir=tmp_path, progress=False))
    (msg,) = [r.getMessage() for r in caplog.records if "no example" in r.getMessage()]
    assert "y=class 1,a=attribute 0" in msg and "test split" in msg


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bad_input_cases(tmp_path: Path) -> dict[str, tuple[list[str], str, dict[str, str]]]:
    """Each case: the command line, what its one-line error must say, and the environment."""
    zero = tmp_path / "zero.npz"
    np.savez(zero, x=np.zeros((0, 4), np.float32), y=np.zeros(0, int), a=np.zeros(0, int),
             split=np.zeros(0, int))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    empty_json = tmp_path / "empty.json"
    empty_json.write_text("[]")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(bytes(range(256)) * 16)
    port = _closed_port()
    quick = ["--methods", "erm", "--trials", "0", "--seeds", "1", "--no-progress",
             "--runs-dir", str(tmp_path / "runs")]
    images = ["--dataset", "waterbirds", "--data-root", str(tmp_path), "--device", "cpu",
              "--encode-workers", "0"]
    return {
        "tracking scheme": (["run", *quick, "--tracking-uri", "foo://bar"], "unknown scheme", {}),
        "tracking unreachable": (
            ["run", *quick, "--tracking-uri", f"http://127.0.0.1:{port}"],
            f"--tracking-uri http://127.0.0.1:{port}: cannot reach the MLflow server at "
            f"127.0.0.1:{port}", {}),
        "tracking port": (["run", *quick, "--tracking-uri", "http://127.0.0.1:abc"],
                          "--tracking-uri http://127.0.0.1:abc: the port is not a number", {}),
        "heartbeat abc": (["run", *quick], "SPURBENCH_HEARTBEAT=abc: expected a positive number",
                          {"SPURBENCH_HEARTBEAT": "abc"}),
        "heartbeat 0": (["run", *quick], "SPURBENCH_HEARTBEAT=0: expected a positive number",
                        {"SPURBENCH_HEARTBEAT": "0"}),
        "0-row npz": (["run", "--dataset", "features", "--dataset-opt", f"path={zero}", *quick],
                      "has no rows", {}),
        "text as npz": (["run", "--dataset", "features", "--dataset-opt", f"path={text}",
                         *quick], f"{text}: not an .npz file (no zip archive inside)", {}),
        "garbage checkpoint": (
            ["run", *images, "--encoder", f"openclip:spurbench-tiny:{garbage}", *quick],
            f"{garbage} is not a loadable checkpoint (the file is damaged or not a PyTorch", {}),
        "cache is a file": (["run", "--dataset", "waterbirds-synth", *quick],
                            f"cache folder {a_file} is unusable", {"SPURBENCH_CACHE": str(a_file)}),
        "compare []": (["compare", str(empty_json), str(empty_json)], "a JSON list", {}),
        "--out a file": (["run", *quick, "--out", str(a_file)], "a file, not a directory", {}),
    }


# never in any message: advice that would run code from an untrusted file, a stale story
NEVER = ("Traceback", "weights_only", "pickled (object) data")


@pytest.mark.parametrize("case", ["tracking scheme", "tracking unreachable", "tracking port",
                                  "heartbeat abc", "heartbeat 0", "0-row npz", "text as npz",
                                  "garbage checkpoint", "cache is a file", "compare []",
                                  "--out a file"])
def test_bad_input_is_one_line_and_exit_2(bench_main, tmp_path, monkeypatch, case):
    if case == "garbage checkpoint":
        ff.write_waterbirds(tmp_path)
    args, says, env = _bad_input_cases(tmp_path)[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = bench_main(*args)
    assert code == 2 and says in err, err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    assert not [s for s in NEVER if s in err], err


@pytest.mark.parametrize("env, args", [
    ({"SPURBENCH_HEARTBEAT": "abc"}, []),
    ({}, ["--tracking-uri", "http://127.0.0.1:{port}"]),
])
def test_bad_settings_stop_the_run_before_any_work(bench_main, tmp_path, monkeypatch, env, args):
    """Checked first: no run folder, no dataset loaded, nothing encoded."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    args = [a.format(port=_closed_port()) for a in args]
    code, err = bench_main("run", "--dataset", "waterbirds", "--data-root", str(tmp_path / "none"),
                           "--methods", "erm", "--out", str(out), "--no-progress", *args)
    assert code == 2 and "dataset 'waterbirds' not found" not in err, err
    assert not out.exists()
