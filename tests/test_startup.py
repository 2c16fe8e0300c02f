"""Instant start: the listing commands and --help never import the numeric stack, and the
static plugin index (bench.plugins.index) says what importing the plugins would say."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bench.plugins import index as plugin_index
from bench.plugins import registry

HEAVY = ("torch", "numpy", "polars", "optuna", "mlflow", "sklearn")

PROBE = textwrap.dedent("""
    import sys
    sys.argv = ["bench", *{argv!r}]
    from bench.cli import main
    try:
        main()
    except SystemExit:
        pass
    print("LOADED:" + ",".join(m for m in {heavy!r} if m in sys.modules))
""")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["methods", "list"],
                                  ["datasets", "list"], ["compare", "--help"]])
def test_commands_do_not_import_the_numeric_stack(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.rsplit("LOADED:", 1)[1].strip()
    assert loaded == "", f"`bench {' '.join(argv)}` imported {loaded}"


def test_static_index_matches_imported_plugins():
    static = plugin_index.scan(registry.builtin_plugin_dirs())
    assert static is not None, "a built-in plugin can no longer be read statically"
    imported = plugin_index._imported([])
    # other tests may have registered plugins of their own in this process: built-ins only
    builtin = tuple(str(d) for d in registry.builtin_plugin_dirs())
    methods = [m for m in imported[0]
               if registry.get_method(m.name).source.startswith(builtin)]
    datasets = [d for d in imported[1] if registry._source_of(
        registry.get_dataset(d.name).__class__).startswith(builtin)]
    assert static[0] == methods
    assert static[1] == datasets


COMPUTED = '''
import bench

PREFIX = "computed"


@bench.method
class Computed(bench.Method):
    name = PREFIX + "-method"
    description = "a name the syntax tree cannot read"

    def fit(self, train, val, ctx):
        raise NotImplementedError
'''

LITERAL = '''
import bench


@bench.method
class Literal(bench.Method):
    name = "literal-method"
    description = "read without running"
    group_labels = frozenset({"val"})
    family = "reweighting"

    def train(self, train, val, ctx):
        yield


bench.variant("literal-variant", Literal, {}, "its variant", group_labels=frozenset())
'''


def test_unreadable_plugin_falls_back_to_importing(tmp_path):
    (tmp_path / "computed.py").write_text(COMPUTED)
    assert plugin_index.scan([tmp_path]) is None
    # in a child process: importing the plugin registers it, which would leak into other tests
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "methods", "list", "--plugins",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "computed-method" in proc.stdout


def test_literal_plugin_is_read_statically(tmp_path):
    (tmp_path / "literal.py").write_text(LITERAL)
    methods, _ = plugin_index.scan([tmp_path])
    by_name = {m.name: m for m in methods}
    assert by_name["literal-method"].group_labels == frozenset({"val"})
    assert by_name["literal-method"].family == "reweighting"
    assert by_name["literal-method"].engine == "stages"
    assert by_name["literal-variant"].group_labels == frozenset()
    assert by_name["literal-variant"].description == "its variant"
