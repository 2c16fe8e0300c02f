"""The CLI's error paths and help texts: one line, exit code 2, an example in every --help."""

import pytest
from conftest import SMALL, bench_cli


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--methods", "ermm"], "unknown method 'ermm' (did you mean 'erm'?)"),
        (
            ["run", "--dataset", "synthetik"],
            "unknown dataset 'synthetik' (did you mean 'synthetic'?)",
        ),
        (["run", "--selection", "worst-grop"], "did you mean 'worst-group'?"),
        (
            ["run", "--methods", "erm", "--params", "erm.lr"],
            "--params erm.lr: expected METHOD.NAME=VALUE",
        ),
        (
            ["run", "--methods", "erm", "--params", "erm.nope=1"],
            "'erm' has no tunable parameter 'nope'",
        ),
        (
            ["run", "--methods", "erm", "--params", "erm.lr=fast"],
            "--params erm.lr=fast: expected a number",
        ),
        (["run", "--methods", "erm", "--head", "mlp"], "--head mlp"),
        (["run", "--methods", "erm", "--dataset-opt", "dim=-3"], "--dataset-opt dim=-3"),
        (["run", "--methods", "erm", "--dataset-opt", "colour=red"], "--dataset-opt colour"),
        (["run", "--methods", "erm", "--device", "cuda:7"], "--device cuda:7"),
        (["run", "--methods", "erm,erm"], "lists a method twice"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, expected, tmp_path):
    r = bench_cli(*args, "--runs-dir", str(tmp_path), "--no-progress")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_flag_value_names_the_flag(tmp_path):
    r = bench_cli("run", "--trials", "-1", "--runs-dir", str(tmp_path))
    assert r.returncode == 2
    assert "--trials" in r.stderr
    r = bench_cli("run", "--seeds", "many", "--runs-dir", str(tmp_path))
    assert r.returncode == 2
    assert "--seeds" in r.stderr


@pytest.mark.parametrize(
    "command", [[], ["run"], ["methods"], ["methods", "list"], ["datasets"], ["datasets", "list"]]
)
def test_every_help_has_an_example(command):
    r = bench_cli(*command, "--help")
    assert r.returncode == 0
    assert "Example" in r.stdout


def test_label_hungry_method_refused_under_worst_class(tmp_path):
    r = bench_cli(
        "run",
        "--methods",
        "groupdro",
        "--selection",
        "worst-class",
        "--runs-dir",
        str(tmp_path),
        "--no-progress",
        *SMALL,
    )
    assert r.returncode == 2
    assert "method 'groupdro' needs group labels on train" in r.stderr


def _all_command_paths():
    import typer.main

    from bench.cli import app

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_every_command_and_subcommand_help_has_an_example():
    from typer.testing import CliRunner

    from bench.cli import app

    paths = _all_command_paths()
    assert len(paths) >= 12  # run, worker, compare, methods/datasets/cache/leaderboard groups
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, path
