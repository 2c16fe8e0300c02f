"""Plugin registry: decorators register methods and datasets; discovery loads plugin files.

Plugins come from the built-in `methods/` and `datasets/` folders (shipped inside the wheel
as bench/_builtin/), from `--plugins DIR` folders, and from the `spurbench.plugins`
entry-point group. Plugin folders are loaded by file path, never imported as packages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from bench.data.dataset import Dataset
from bench.errors import UserError, unknown
from bench.plugins.method import Method
from bench.tuning.space import Param

ENTRY_POINT_GROUP = "spurbench.plugins"


@dataclass
class MethodEntry:
    name: str
    cls: type[Method]
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    source: str = ""
    labels: frozenset[str] | None = None  # a variant may need fewer group labels than its base

    def create(self) -> Method:
        return self.cls()

    def search_space(self) -> dict[str, Param]:
        return {k: p for k, p in self.cls().search_space().items() if k not in self.fixed}

    @property
    def group_labels(self) -> frozenset[str]:
        return frozenset(self.cls.group_labels if self.labels is None else self.labels)


_METHODS: dict[str, MethodEntry] = {}
_DATASETS: dict[str, type[Dataset]] = {}
_LOADED: set[str] = set()


def _source_of(obj: Any) -> str:
    mod = sys.modules.get(getattr(obj, "__module__", ""), None)
    return str(getattr(mod, "__file__", "") or getattr(obj, "__module__", ""))


def _check_new(kind: str, name: str, table: dict, source: str) -> None:
    if not name:
        raise UserError(f"a {kind} plugin in {source} has no name")
    if name in table:
        old = table[name].source if kind == "method" else _source_of(table[name])
        if old != source:
            raise UserError(f"{kind} '{name}' is defined twice: in {old} and in {source}")


def method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a method plugin under `cls.name`."""
    source = _source_of(cls)
    _check_new("method", cls.name, _METHODS, source)
    _METHODS[cls.name] = MethodEntry(cls.name, cls, cls.description, source=source)
    return cls


def variant(
    name: str,
    base: type[Method],
    fixed: dict[str, Any],
    description: str,
    group_labels: frozenset[str] | None = None,
) -> None:
    """Register a named variant: the base method with some hyperparameters fixed."""
    space = base().search_space()
    bad = [k for k in fixed if k not in space]
    if bad:
        raise UserError(f"variant '{name}' fixes unknown parameter(s) {bad} of '{base.name}'")
    source = _source_of(base)
    _check_new("method", name, _METHODS, source)
    _METHODS[name] = MethodEntry(
        name, base, description, dict(fixed), base.name, source, group_labels
    )


def dataset(cls: type[Dataset]) -> type[Dataset]:
    """Class decorator: register a dataset plugin under `cls.name`."""
    _check_new("dataset", cls.name, _DATASETS, _source_of(cls))
    _DATASETS[cls.name] = cls
    return cls


def builtin_plugin_dirs() -> list[Path]:
    """The built-in plugin folders: inside the installed wheel, else beside bench/ in a checkout."""
    pkg = Path(__file__).resolve().parents[1]  # the bench package
    for base in (pkg / "_builtin", pkg.parent):
        dirs = [base / "methods", base / "datasets"]
        if all(d.is_dir() for d in dirs):
            return dirs
    return []


def _load_file(path: Path) -> None:
    key = str(path.resolve())
    if key in _LOADED:
        return
    _LOADED.add(key)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    mod_name = f"spurbench_plugin_{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as exc:
        _LOADED.discard(key)
        sys.modules.pop(mod_name, None)
        raise UserError(f"plugin {path} failed to load: {type(exc).__name__}: {exc}") from exc


def load_dir(folder: Path) -> None:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--plugins {folder}: not a directory")
    for path in sorted(folder.rglob("*.py")):
        if not path.name.startswith("_"):
            _load_file(path)


def load_plugins(extra_dirs: list[Path] | tuple[Path, ...] = ()) -> None:
    """Load built-in plugins, then entry points, then `--plugins` folders (idempotent)."""
    for folder in builtin_plugin_dirs():
        load_dir(folder)
    if "entry-points" not in _LOADED:
        _LOADED.add("entry-points")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:
                raise UserError(f"plugin entry point '{ep.name}' failed to load: {exc}") from exc
    for folder in extra_dirs:
        load_dir(Path(folder))


def load_files(paths: list[Path]) -> None:
    """Load these plugin files only (see bench.plugins.index.plugin_files)."""
    for path in paths:
        _load_file(Path(path))


def methods() -> dict[str, MethodEntry]:
    return dict(sorted(_METHODS.items()))


def datasets() -> dict[str, type[Dataset]]:
    return dict(sorted(_DATASETS.items()))


def _load_missing() -> None:
    """A plugin asked for by name that is not loaded yet (a run imports only the files it
    uses): load the built-in plugins, so the name is found or reported against them all."""
    load_plugins()


def get_method(name: str) -> MethodEntry:
    if name not in _METHODS:
        _load_missing()
    if name not in _METHODS:
        raise unknown("method", name, _METHODS)
    return _METHODS[name]


def get_dataset(name: str) -> Dataset:
    if name not in _DATASETS:
        _load_missing()
    if name not in _DATASETS:
        raise unknown("dataset", name, _DATASETS)
    return _DATASETS[name]()
