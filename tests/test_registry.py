"""Plugin discovery: built-in folders, --plugins DIR, and the installed wheel."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import SMALL, bench_cli

from bench.errors import UserError
from bench.plugins import registry

REPO = Path(__file__).resolve().parent.parent
BUILTIN_METHODS = {"erm", "zeroshot", "reweight", "subsample", "groupdro", "jtt", "dfr", "sfr"}

PLUGIN = textwrap.dedent(
    """
    import bench

    @bench.method
    class Majority(bench.Method):
        name = "{name}"
        description = "predicts by a head trained only on the first 10 examples"
        group_labels = frozenset()

        def search_space(self):
            return {{"epochs": bench.Int(1, 3, 1)}}

        def fit(self, train, val, ctx):
            head = ctx.make_head()
            ctx.trainer.fit(head, train, bench.TrainConfig(epochs=ctx.params["epochs"]))
            return bench.Predictor(head)
    """
)


def write_plugin(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}.py"
    path.write_text(PLUGIN.format(name=name))
    return path


def test_builtin_plugins_found():
    registry.load_plugins()
    assert BUILTIN_METHODS <= set(registry.methods())
    assert {"sfr-nodropout", "sfr-noweights", "sfr-groupweights"} <= set(registry.methods())
    assert "synthetic" in registry.datasets()
    assert registry.datasets()["synthetic"].embedded


def test_plugins_dir_method_is_listed_and_runs(tmp_path):
    write_plugin(tmp_path / "plugins", "my-method")
    listed = bench_cli("methods", "list", "--plugins", str(tmp_path / "plugins"))
    assert listed.returncode == 0, listed.stderr
    assert "my-method" in listed.stdout
    ran = bench_cli(
        "run",
        "--methods",
        "my-method,erm",
        "--plugins",
        str(tmp_path / "plugins"),
        "--trials",
        "1",
        "--seeds",
        "1",
        "--no-progress",
        "--runs-dir",
        str(tmp_path / "runs"),
        *SMALL,
    )
    assert ran.returncode == 0, ran.stderr
    assert "my-method" in ran.stdout and "erm" in ran.stdout


def test_same_name_twice_is_an_error(tmp_path):
    registry.load_plugins()
    write_plugin(tmp_path, "erm")
    with pytest.raises(UserError, match="defined twice"):
        registry.load_dir(tmp_path)


def test_plugins_dir_must_exist(tmp_path):
    r = bench_cli("methods", "list", "--plugins", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "not a directory" in r.stderr


def test_wheel_ships_builtin_plugins(tmp_path):
    """Build the wheel, install it (no dependencies) into a target, find the plugins there."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("spurbench-*.whl")
    target = tmp_path / "target"
    inst = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inst.returncode == 0, inst.stderr
    probe = (
        "import bench, bench.plugins.registry as r; r.load_plugins(); "
        "print(bench.__file__); print(','.join(r.methods())); print(','.join(r.datasets()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    file, methods, datasets = out.stdout.strip().splitlines()[-3:]
    assert file.startswith(str(target))
    assert BUILTIN_METHODS <= set(methods.split(","))
    assert "synthetic" in datasets.split(",")
    assert (target / "bench" / "_builtin" / "methods" / "sfr.py").exists()
