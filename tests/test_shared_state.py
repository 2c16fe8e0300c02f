"""What a run shares: one device-resident FeatureStore, and reference models trained once."""

import textwrap

from conftest import SMALL, bench_cli

from bench.engine.references import ReferenceStore
from bench.engine.trainer import TrainConfig
from bench.plugins import registry
from bench.run.runner import Run, RunConfig

SMALL_OPTS = dict(a.split("=") for a in SMALL[1::2])


def test_feature_store_is_shared_across_runs_and_methods(tmp_path):
    a = Run(
        RunConfig(methods=["erm"], out=tmp_path / "a", runs_dir=tmp_path, dataset_opts=SMALL_OPTS)
    )
    b = Run(
        RunConfig(methods=["sfr"], out=tmp_path / "b", runs_dir=tmp_path, dataset_opts=SMALL_OPTS)
    )
    assert a.store is b.store
    from bench.plugins import registry

    ctx1 = a.context(registry.get_method("erm"), {}, 0)
    ctx2 = b.context(registry.get_method("sfr"), {}, 1)
    assert ctx1.store.splits["train"].x.data_ptr() == ctx2.store.splits["train"].x.data_ptr()


def test_reference_models_are_trained_once_and_cached_on_disk(tmp_path):
    run = Run(
        RunConfig(methods=["erm"], out=tmp_path / "r", runs_dir=tmp_path, dataset_opts=SMALL_OPTS)
    )
    refs = run.references
    cfg = TrainConfig(epochs=2)
    p1 = refs.erm(0, cfg)
    p2 = refs.erm(0, cfg)
    assert refs.trained == 1
    refs.erm(1, cfg)
    assert refs.trained == 2
    fresh = ReferenceStore(run.store, run.heads, run.run_dir / "references")
    p3 = fresh.erm(0, cfg)
    assert fresh.trained == 0  # read back from the run directory
    x = run.store.splits["val"].x
    assert (p1.logits(x) == p3.logits(x)).all() and (p1.logits(x) == p2.logits(x)).all()
    # a corrupt file is rebuilt, never trusted
    for f in (run.run_dir / "references").glob("*.pt"):
        f.write_bytes(b"not a checkpoint")
    again = ReferenceStore(run.store, run.heads, run.run_dir / "references")
    again.erm(0, cfg)
    assert again.trained == 1


def test_entry_point_plugins_are_discovered(tmp_path):
    dist = tmp_path / "spurbench_fake-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: spurbench-fake\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[spurbench.plugins]\nfake = fake_spur_plugin\n")
    (tmp_path / "fake_spur_plugin.py").write_text(
        textwrap.dedent("""
        import bench

        @bench.method
        class Fake(bench.Method):
            name = "fake-ep"
            description = "registered through an entry point"

            def fit(self, train, val, ctx):
                return bench.Predictor(ctx.make_head())
    """)
    )
    r = bench_cli("methods", "list", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "fake-ep" in r.stdout
    assert "fake-ep" not in registry.methods()  # this process never loaded it


def test_all_methods_in_one_leaderboard(tmp_path):
    r = bench_cli(
        "run", "--methods", "all", "--trials", "1", "--seeds", "1", "--no-progress", "--runs-dir",
        str(tmp_path), *SMALL,
    )
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "latest" / "leaderboard.md").read_text()
    registry.load_plugins()
    methods_dir = str(registry.builtin_plugin_dirs()[0])
    builtin = [n for n, e in registry.methods().items() if e.source.startswith(methods_dir)]
    assert len(builtin) >= 11  # 8 methods and 3 SFR variants
    for name in builtin:
        assert f"`{name}`" in md, name
