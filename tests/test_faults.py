"""Damaged caches and unreachable services: each is one warning and a working run, or one
`error:` line and exit 2 — never a traceback, a hang, or the same warning twice.

The bad-input table is tests/test_data_errors.py; these cases need more than a command
line (a damaged file in the cache, two looks at one entry, a stand-in downloader).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import sqlite3
import sys
from pathlib import Path

import fixtures_formats as ff
import pytest
from conftest import bench_cli
from test_cache import CountingEncoder, image_spec
from typer.testing import CliRunner

from bench.data import cache
from bench.data.dataset import DatasetOptions
from bench.errors import UserError
from bench.plugins import registry
from bench.run import tracking
from bench.tuning import study

QUICK = ["--methods", "erm", "--trials", "0", "--seeds", "1", "--no-progress",
         "--dataset", "synthetic", "--device", "cpu"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


# -- the cached empty stores (MLflow's and Optuna's) ------------------------------------
TEMPLATES = {"MLflow": tracking.mlflow_template, "Optuna": study.optuna_template}
LOGGER = "bench.data.store_template"


def open_new_store(library: str, db: Path) -> None:
    """What a new run does with the template: starts a store at db."""
    if library == "MLflow":
        tracking.Tracker(f"sqlite:///{db}", "spurbench/faults")
    else:
        study.open_storage(f"sqlite:///{db}")


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def built_template(request, tmp_path_factory) -> tuple[str, Path]:
    """One template per library built by the real code (MLflow's migrations, Optuna's
    alembic stamp), copied by each test."""
    library = request.param
    root = tmp_path_factory.mktemp(f"template-cache-{library}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPURBENCH_CACHE", str(root))
        built = TEMPLATES[library]().cached()
    assert built == TEMPLATES[library]().path(root)
    assert TEMPLATES[library]().problem(built) is None
    return library, built


@pytest.fixture
def template_cache(built_template, tmp_path, monkeypatch) -> tuple[str, Path]:
    """A cache folder holding a copy of the template and its checksum; (library, path)."""
    library, built = built_template
    root = tmp_path / "cache"
    root.mkdir()
    for path in built.parent.glob(built.name + "*"):
        (root / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("SPURBENCH_CACHE", str(root))
    return library, root / built.name


def _damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 3])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage, not SQLite" * 50)
    elif how == "one byte":  # same size, one byte changed: only the checksum sees it
        path.write_bytes(raw[:-100] + bytes([raw[-100] ^ 0xFF]) + raw[-99:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how.startswith("no "):  # "no TABLE": that table dropped
        con = sqlite3.connect(path)
        con.execute(f"DROP TABLE {how.split()[1]}")
        con.commit()
        con.close()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how, checksum, says", [
    ("truncated", True, "checksum mismatch"),
    ("one byte", True, "checksum mismatch"),
    ("empty", True, "checksum mismatch"),
    # a template cached before checksums were written: SQLite's own checks
    ("truncated", False, "not a usable SQLite database"),
    ("garbage", False, "not a usable SQLite database"),
    ("no table", False, "missing table(s)"),  # a valid SQLite file of the wrong shape
])
def test_damaged_template_is_found_and_rebuilt_with_one_warning(template_cache, caplog, how,
                                                                checksum, says):
    library, template = template_cache
    if how == "no table":  # one the library needs, named in the message
        how = f"no {sorted(TEMPLATES[library]().tables - {'alembic_version'})[0]}"
        says = f"{says} {how.split()[1]}"
    _damage(template, how)
    if not checksum:
        template.with_name(template.name + ".sha256").unlink(missing_ok=True)
    assert says in (TEMPLATES[library]().problem(template) or "")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        open_new_store(library, template.parent.parent / "run" / "store.db")
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert str(template) in warnings[0] and "rebuilding it" in warnings[0]
    assert says in warnings[0] and f"cached {library} template" in warnings[0]
    assert TEMPLATES[library]().problem(template) is None  # healthy again
    assert (template.parent / (template.name + ".sha256")).is_file()


def test_a_run_with_a_corrupt_template_works_and_warns_once(template_cache, tmp_path):
    library, template = template_cache
    _damage(template, "truncated")
    r = bench_cli("run", *QUICK, "--out", str(tmp_path / "run"),
                  env={"SPURBENCH_CACHE": str(template.parent)})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count(f"cached {library} template") == 1, r.stderr
    # the other library's template was built quietly
    assert len([ln for ln in r.stderr.splitlines() if "template" in ln]) == 1, r.stderr
    assert (tmp_path / "run" / "leaderboard.md").is_file()
    assert TEMPLATES[library]().problem(template) is None


def test_a_new_store_is_a_copy_of_the_template_and_an_existing_one_is_never_replaced(
        template_cache, tmp_path):
    library, template = template_cache
    db = tmp_path / "run" / "store.db"
    assert TEMPLATES[library]().seed(db)
    assert db.read_bytes() == template.read_bytes()
    open_new_store(library, db)  # the library takes the copy as its own store
    db.write_bytes(b"another process's store")
    assert not TEMPLATES[library]().seed(db)
    assert db.read_bytes() == b"another process's store"
    assert not list(db.parent.glob(".*.tmp"))


def test_a_run_directory_starts_from_both_templates(tmp_path):
    r = bench_cli("run", *QUICK, "--out", str(tmp_path / "run"),
                  env={"SPURBENCH_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "cache").glob("*-empty-*.db"))
    assert [n.split("-empty-")[0] for n in names] == ["mlflow", "optuna"], names
    for library in TEMPLATES:
        assert TEMPLATES[library]().problem(
            TEMPLATES[library]().path(tmp_path / "cache")) is None


def test_an_unusable_cache_folder_warns_once_and_the_run_works(tmp_path, monkeypatch, caplog):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPURBENCH_CACHE", str(not_a_folder))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(2):  # two stores of each library in one process: one warning
            tracking.Tracker(f"sqlite:///{tmp_path / f'run{i}' / 'mlflow.db'}", "spurbench/x")
            study.open_storage(f"sqlite:///{tmp_path / f'run{i}' / 'optuna.db'}")
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert f"{not_a_folder} is a file, not a folder" in warnings[0]
    assert (tmp_path / "run1" / "mlflow.db").is_file()  # MLflow made it itself
    assert (tmp_path / "run1" / "optuna.db").is_file()  # and Optuna


def test_cache_clear_removes_templates_and_rendered_images_and_says_so(template_cache):
    from bench.cli import app

    _, template = template_cache
    root = template.parent
    registry.load_plugins()
    spec = registry.get_dataset("waterbirds-synth").load(DatasetOptions(extra={
        "n_train": "16", "n_val": "8", "n_test": "8", "size": "16"}))
    assert Path(spec.root).is_relative_to(root)
    (root / f".{template.name}.999.tmp").write_bytes(b"left by a killed process")
    result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(root)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "the rendered images of waterbirds-synth" in said
    assert f"the template database {template.name}" in said
    assert sorted(p.name for p in root.iterdir()) == []


def test_cache_clear_of_one_dataset_keeps_the_template(template_cache):
    from bench.cli import app

    _, template = template_cache
    result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir",
                                      str(template.parent), "--dataset", "waterbirds"])
    assert result.exit_code == 0 and "template" not in result.output
    assert template.is_file()


# -- rendered embedded-dataset images -------------------------------------------------
def _load_synth():  # noqa: ANN202
    registry.load_plugins()
    return registry.get_dataset("waterbirds-synth").load(DatasetOptions(extra={
        "n_train": "24", "n_val": "8", "n_test": "8", "size": "16"}))


@pytest.mark.parametrize("how", ["truncated", "garbage", "deleted", "old manifest"])
def test_damaged_rendered_image_is_rendered_again_with_one_warning(tmp_path, monkeypatch, caplog,
                                                                   how):
    from PIL import Image

    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    spec = _load_synth()
    root = Path(spec.root)
    item = root / spec.metadata["item"][5]
    good = item.read_bytes()
    if how == "truncated":
        item.write_bytes(good[: len(good) // 2])
    elif how == "garbage":
        item.write_bytes(b"not a png" * 10)
    elif how == "deleted":
        item.unlink()
    else:  # written before checksums: rendered again once, then verified like any other
        done = json.loads((root / "done.json").read_text())
        del done["sha256"]
        (root / "done.json").write_text(json.dumps(done))
    with caplog.at_level(logging.WARNING, logger="bench.datasets"):
        again = _load_synth()
        _load_synth()  # healthy now: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "bench.datasets"]
    assert len(warnings) == 1, warnings
    assert str(root) in warnings[0] and "rendering them again" in warnings[0]
    if how != "old manifest":
        assert str(item) in warnings[0]
    assert again.root == spec.root and item.read_bytes() == good  # deterministic
    with Image.open(item) as img:
        img.load()
    sums = json.loads((root / "done.json").read_text())["sha256"]
    assert sums[spec.metadata["item"][5]] == hashlib.sha256(good).hexdigest()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_unusable_cache_folder_for_rendered_images_is_one_line(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("SPURBENCH_CACHE", str(not_a_folder))
    with pytest.raises(UserError, match="set SPURBENCH_CACHE to a folder you can write") as exc:
        _load_synth()
    assert f"cache folder {not_a_folder} is unusable" in str(exc.value)


# -- the feature cache warns once per damaged entry -----------------------------------
def test_corrupt_feature_entry_warns_once_not_once_per_look(tmp_path, caplog):
    spec, enc, root = image_spec(tmp_path / "images"), CountingEncoder(), tmp_path / "cache"
    cache.cached_encode(spec, enc, root)
    ((entry, _),) = cache.list_entries(root)
    entry.data.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="bench.data.cache"):
        cache.cached_encode(spec, enc, root)
    warnings = [r.getMessage() for r in caplog.records if r.name == "bench.data.cache"]
    assert len(warnings) == 1 and "corrupt or stale" in warnings[0], warnings
    assert enc.calls == 2


# -- an unreachable tracking server ---------------------------------------------------
def test_unreachable_tracking_server_is_one_line_not_minutes_of_retries(tmp_path):
    port = closed_port()
    uri = f"http://127.0.0.1:{port}"
    # MLflow alone retries this for about four minutes, then prints a traceback; the
    # generous timeout only catches a hang, the probe itself answers at once (refused)
    r = bench_cli("run", *QUICK, "--tracking-uri", uri, "--out", str(tmp_path / "run"),
                  timeout=150)
    assert r.returncode == 2, r.stderr
    (line,) = error_lines(r.stderr)
    assert line.startswith(f"error: --tracking-uri {uri}: cannot reach the MLflow server at "
                           f"127.0.0.1:{port}")
    assert not (tmp_path / "run").exists()  # before any work


@pytest.fixture
def sent(monkeypatch):
    """Every HTTP request the probe sends (through MLflow's own session), answered by
    `reply` (an exception to raise, or a status code); the requests' arguments."""
    import requests

    seen: list[dict] = []
    reply: list = []

    def request(self, method, url, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append({"method": method, "url": url, **kwargs})
        if isinstance(reply[0], Exception):
            raise reply[0]
        answer = requests.Response()
        answer.status_code = reply[0]
        return answer

    monkeypatch.setattr(requests.Session, "request", request)
    return seen, reply


def test_the_probe_gives_up_after_a_few_seconds_without_retries(sent):
    """A server that never answers: the probe's own timeout decides, and it is one try."""
    import requests

    seen, reply = sent
    reply.append(requests.ConnectTimeout("Connection to mlflow.example timed out"))
    with pytest.raises(UserError) as exc:
        tracking.check_uri("https://user:secret@mlflow.example:8443/")
    (call,) = seen  # one request: no retries
    assert call["url"].endswith(":8443" + tracking.PROBE_PATH)
    assert call["timeout"] == tracking.PROBE_TIMEOUT and 0 < tracking.PROBE_TIMEOUT <= 10
    msg = str(exc.value)
    assert "secret" not in msg and "\n" not in msg
    assert "cannot reach the MLflow server at mlflow.example:8443 (no answer within 5 s)" in msg


@pytest.mark.parametrize("status, says", [
    (404, "127.0.0.1:5000 answers, but not as an MLflow tracking server (HTTP 404"),
    (401, "the MLflow server refused access (HTTP 401); check the user name and password"),
    (403, "refused access (HTTP 403)"),
])
def test_something_else_on_the_port_or_bad_credentials_is_one_line(sent, status, says):
    seen, reply = sent
    reply.append(status)
    with pytest.raises(UserError, match=re.escape(says)):
        tracking.check_uri("http://127.0.0.1:5000")
    assert len(seen) == 1


def test_a_server_error_is_left_to_mlflows_retries(sent):
    seen, reply = sent
    reply.append(503)
    tracking.check_uri("http://127.0.0.1:5000")
    assert len(seen) == 1


def test_the_probe_names_the_environment_variable_and_bad_hosts(sent, monkeypatch):
    import requests

    seen, reply = sent
    reply.append(requests.ConnectionError("Failed to resolve 'no-such-host.invalid' "
                                          "(NameResolutionError)"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://no-such-host.invalid:5000")
    with pytest.raises(UserError, match=r"^MLFLOW_TRACKING_URI=http://no-such-host.invalid:5000: "
                       r"cannot reach .* \(unknown host\)"):
        tracking.check_uri("http://no-such-host.invalid:5000")
    with pytest.raises(UserError, match="the port is not a number"):
        tracking.check_uri("http://127.0.0.1:http")


def test_a_real_mlflow_server_passes_the_probe():
    from tuning_helpers import mlflow_server

    tracking.check_uri(mlflow_server())
    tracking.check_uri(mlflow_server() + "/")


# -- heartbeat setting --------------------------------------------------------------
def test_bad_heartbeat_never_reaches_the_heartbeat_thread(monkeypatch):
    """Even a caller that skipped the start check gets the error in its own thread."""
    from bench.tuning import heartbeat

    monkeypatch.setenv("SPURBENCH_HEARTBEAT", "abc")
    with pytest.raises(UserError, match="SPURBENCH_HEARTBEAT=abc"):
        heartbeat.Heartbeat(study=type("S", (), {"study_name": "s"})(),
                            trial=type("T", (), {"number": 0})())


# -- downloads are judged by the files they leave ---------------------------------------
@pytest.fixture
def fake_wilds(monkeypatch, tmp_path):
    """wilds.get_dataset stand-in: optionally writes the CivilComments files, then fails
    as wilds 2.0's CivilComments loader does with pandas 2."""
    import wilds

    calls = []

    def get_dataset(dataset, root_dir, download):  # noqa: ANN001, ANN202
        calls.append(dataset)
        if writes:
            ff.write_civilcomments(Path(root_dir))
        raise TypeError("Cannot setitem on a Categorical with a new category, set the "
                        "categories first")

    writes: list[bool] = []
    monkeypatch.setattr(wilds, "get_dataset", get_dataset)
    return writes, calls


def _download(monkeypatch, capsys, root: Path) -> tuple[int, str, str]:
    from bench.cli import main

    monkeypatch.setattr(sys, "argv", ["bench", "datasets", "download", "civilcomments",
                                      "--data-root", str(root)])
    with pytest.raises(SystemExit) as exc:
        main()
    got = capsys.readouterr()
    return exc.value.code, " ".join(got.out.split()), " ".join(got.err.split())


def test_download_that_left_its_files_is_a_success_despite_wilds(fake_wilds, monkeypatch, capsys,
                                                                 tmp_path):
    writes, calls = fake_wilds
    writes.append(True)
    code, out, err = _download(monkeypatch, capsys, tmp_path / "data")
    assert calls == ["civilcomments"]
    assert code == 0, err
    assert f"'civilcomments' is ready in {tmp_path / 'data' / 'civilcomments_v1.0'}" in out
    assert "Traceback" not in err and "error" not in err


def test_download_that_left_nothing_is_one_line(fake_wilds, monkeypatch, capsys, tmp_path):
    code, out, err = _download(monkeypatch, capsys, tmp_path / "data")
    assert code == 2
    assert err.startswith(f"error: download of 'civilcomments' into {tmp_path / 'data'} failed "
                          "(TypeError: Cannot setitem on a Categorical")
    assert "Traceback" not in err


def test_cache_folder_with_a_tilde_is_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SPURBENCH_CACHE", "~/spurbench-cache")
    assert cache.cache_dir() == tmp_path / "spurbench-cache"
