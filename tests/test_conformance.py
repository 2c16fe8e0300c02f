"""The conformance kit (bench.testing) over every built-in plugin, and proof that it
catches what it claims to catch."""

from __future__ import annotations

import pytest

from bench.plugins import registry
from bench.report.publish import embedded_datasets
from bench.testing import check_dataset, check_method

registry.load_plugins()


@pytest.mark.parametrize("name", sorted(registry.methods()))
def test_builtin_method_conforms(name, tmp_path):
    check_method(name, workdir=tmp_path)


@pytest.mark.parametrize("name", embedded_datasets())
def test_embedded_dataset_conforms(name):
    opts = {"n_train": "400", "n_val": "200", "n_test": "200"} if name == "synthetic" else {}
    check_dataset(name, opts)


BAD = '''
import bench


class _Base(bench.Method):
    description = "a broken plugin for the conformance kit's own test"

    def search_space(self):
        return {"epochs": bench.Int(2, 3, 2)}

    def fit(self, train, val, ctx):
        head = ctx.make_head()
        ctx.trainer.fit(head, train, bench.TrainConfig(epochs=ctx.params["epochs"]))
        return bench.Predictor(head)


@bench.method
class Peeker(_Base):
    name = "kit-peeker"

    def fit(self, train, val, ctx):
        train.g.sum()  # reads group labels it never declared
        return super().fit(train, val, ctx)


@bench.method
class OutOfRange(_Base):
    name = "kit-range"

    def search_space(self):
        return {"epochs": bench.Int(5, 40, 2)}  # default below its range


@bench.method
class Unseeded(_Base):
    name = "kit-unseeded"

    def fit(self, train, val, ctx):
        import torch
        head = ctx.make_head()
        with torch.no_grad():
            for p in head.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(
                    int(torch.seed() % 2**31))))  # a fresh seed each fit: not reproducible
        return bench.Predictor(head)
'''


@pytest.fixture(scope="module")
def bad_plugins(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kit-plugins")
    (folder / "bad.py").write_text(BAD)
    return [folder]


@pytest.mark.parametrize(("name", "why"), [
    ("kit-peeker", "reads group labels it does not declare"),
    ("kit-range", r"default 2 outside \[5, 40\]"),
    ("kit-unseeded", "the same seed gave another model"),
])
def test_the_kit_catches_a_broken_plugin(name, why, bad_plugins, tmp_path):
    with pytest.raises(AssertionError, match=why):
        check_method(name, plugins=bad_plugins, workdir=tmp_path)
