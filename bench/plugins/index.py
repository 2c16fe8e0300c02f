"""What `bench methods list` and `bench datasets list` show, read from the plugin files'
source without running them.

Why: a plugin file imports torch (and its method the whole engine); importing every
plugin to print a table cost twice `import torch` (3.3 s warm, ~10 s cold). The class
attributes a listing needs are literals in the class body and `bench.variant(...)` calls
take literal arguments, so they are read from the syntax tree. Whatever cannot be read
that way (a computed attribute, a base class from another module, an entry-point
plugin) makes `scan` return None and the caller imports the plugins as before; a test
checks that both ways agree for every built-in plugin.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHOD_BASE = "Method"
DATASET_BASE = "Dataset"


class Unreadable(Exception):
    """This file needs to be imported to be described."""


@dataclass
class MethodInfo:
    name: str
    description: str
    group_labels: frozenset[str]
    family: str
    engine: str
    source: str = field(default="", compare=False)


@dataclass
class DatasetInfo:
    name: str
    description: str
    embedded: bool
    download_hint: str
    can_download: bool
    modality: str
    paper: str
    evaluation_only: bool
    classes: str = ""
    groups: str = ""
    source: str = field(default="", compare=False)


@dataclass
class _Class:
    attrs: dict[str, Any] = field(default_factory=dict)
    defs: set[str] = field(default_factory=set)
    kind: str = ""  # "method" | "dataset" | "" (a helper class)


_METHOD_DEFAULTS = {"name": "", "description": "", "group_labels": frozenset(),
                    "family": "other", "reference_engine": ""}
_DATASET_DEFAULTS = {"name": "", "description": "", "embedded": False, "download_hint": "",
                     "modality": "image", "paper": "", "evaluation_only": False,
                     "classes": "", "groups": ""}


def _literal(node: ast.AST) -> Any:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "frozenset" and not node.keywords):
        return frozenset(_literal(node.args[0])) if node.args else frozenset()
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise Unreadable(ast.dump(node)[:80]) from exc


def _tail(node: ast.AST) -> str:
    """`bench.plugins.method` / `method` -> "method"."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _read_class(node: ast.ClassDef, known: dict[str, _Class]) -> _Class:
    out = _Class()
    for base in node.bases:
        tail = _tail(base)
        if tail in (METHOD_BASE, DATASET_BASE):
            out.kind = "method" if tail == METHOD_BASE else "dataset"
        elif isinstance(base, ast.Name) and base.id in known:
            parent = known[base.id]
            out.attrs.update(parent.attrs)
            out.defs |= parent.defs
            out.kind = parent.kind
        else:
            raise Unreadable(f"class {node.name}: base {ast.unparse(base)}")
    for stmt in node.body:
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            wanted = [n for n in names if n in _METHOD_DEFAULTS or n in _DATASET_DEFAULTS]
            if wanted and stmt.value is not None:
                value = _literal(stmt.value)
                for n in wanted:
                    out.attrs[n] = value
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            out.defs.add(stmt.name)
    return out


def _engine(cls: _Class) -> str:
    """Mirrors bench.method.Method.engine()."""
    if "train" in cls.defs and "fit" not in cls.defs:
        return "stages (autograd)" if cls.attrs.get("reference_engine") else "stages"
    return "own fit"


def _method(cls: _Class, name: str | None = None, description: str | None = None,
            labels: frozenset[str] | None = None) -> MethodInfo:
    a = {**_METHOD_DEFAULTS, **cls.attrs}
    return MethodInfo(
        name=name or a["name"], description=description or a["description"],
        group_labels=frozenset(a["group_labels"] if labels is None else labels),
        family=a["family"], engine=_engine(cls),
    )


def _dataset(cls: _Class) -> DatasetInfo:
    a = {**_DATASET_DEFAULTS, **cls.attrs}
    return DatasetInfo(
        name=a["name"], description=a["description"], embedded=bool(a["embedded"]),
        download_hint=a["download_hint"], can_download="download" in cls.defs,
        modality=a["modality"], paper=a["paper"], evaluation_only=bool(a["evaluation_only"]),
        classes=a["classes"], groups=a["groups"],
    )


def _variant(call: ast.Call, classes: dict[str, _Class]) -> MethodInfo:
    args = list(call.args)
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    names = ("name", "base", "fixed", "description", "group_labels")
    for k, v in zip(names, args, strict=False):
        kw.setdefault(k, v)
    base = kw.get("base")
    if not isinstance(base, ast.Name) or base.id not in classes:
        raise Unreadable("variant of a class from elsewhere")
    labels = kw.get("group_labels")
    return _method(classes[base.id], _literal(kw["name"]), _literal(kw["description"]),
                   None if labels is None else _literal(labels))


def scan_file(path: Path) -> tuple[list[MethodInfo], list[DatasetInfo]]:
    """The methods and datasets one plugin file registers; Unreadable if it must be run."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    classes: dict[str, _Class] = {}
    methods: list[MethodInfo] = []
    datasets: list[DatasetInfo] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            try:
                cls = _read_class(node, classes)
            except Unreadable:
                if node.decorator_list:
                    raise
                continue  # a helper class (a batch rule, a head) the listing never needs
            classes[node.name] = cls
            for deco in node.decorator_list:
                tail = _tail(deco)
                if tail == "method":
                    methods.append(_method(cls))
                elif tail == "dataset":
                    datasets.append(_dataset(cls))
                elif tail:
                    raise Unreadable(f"decorator {tail}")
        elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and _tail(node.value.func) == "variant"):
            methods.append(_variant(node.value, classes))
        elif isinstance(node, ast.For | ast.While | ast.If | ast.With | ast.Try):
            if any(isinstance(n, ast.Call) and _tail(n.func) in ("variant", "method", "dataset")
                   for n in ast.walk(node)):
                raise Unreadable("registration inside a statement")
    return methods, datasets


def scan(folders: list[Path]) -> tuple[list[MethodInfo], list[DatasetInfo]] | None:
    """Every plugin in `folders` (files as bench.plugins.registry.load_dir picks them), or None
    when one of them has to be imported to be described."""
    methods: list[MethodInfo] = []
    datasets: list[DatasetInfo] = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                m, d = scan_file(path)
            except (Unreadable, SyntaxError, OSError, KeyError):
                return None
            for info in [*m, *d]:
                info.source = str(path)
            methods += m
            datasets += d
    return sorted(methods, key=lambda m: m.name), sorted(datasets, key=lambda d: d.name)


def _imported(extra_dirs: list[Path]) -> tuple[list[MethodInfo], list[DatasetInfo]]:
    from bench.plugins import registry

    registry.load_plugins(extra_dirs)
    methods = [
        MethodInfo(name, e.description, e.group_labels, e.cls.family, e.cls.engine())
        for name, e in registry.methods().items()
    ]
    datasets = [
        DatasetInfo(name, c.description, c.embedded, c.download_hint, c.can_download(),
                    c.modality, c.paper, c.evaluation_only, c.classes, c.groups)
        for name, c in registry.datasets().items()
    ]
    return methods, datasets


def listing(extra_dirs: list[Path] | None = None) -> tuple[list[MethodInfo], list[DatasetInfo]]:
    """Every registered plugin, read statically where possible, else by importing them."""
    from importlib.metadata import entry_points

    from bench.plugins import registry

    extra = [Path(d) for d in extra_dirs or []]
    for d in extra:
        if not d.is_dir():
            from bench.errors import UserError

            raise UserError(f"--plugins {d}: not a directory")
    if not list(entry_points(group=registry.ENTRY_POINT_GROUP)):
        found = scan([*registry.builtin_plugin_dirs(), *extra])
        if found is not None:
            return found
    return _imported(extra)


@dataclass
class PluginFiles:
    """Which file defines each plugin, so a run imports only the files it uses."""

    methods: dict[str, Path]
    datasets: dict[str, Path]


def plugin_files(extra_dirs: list[Path] | None = None) -> PluginFiles | None:
    """Name -> file for every plugin, or None when that cannot be known without importing
    (entry-point plugins, a file the syntax tree cannot describe, a name defined twice:
    importing everything then reports the duplicate)."""
    from importlib.metadata import entry_points

    from bench.plugins import registry

    if list(entry_points(group=registry.ENTRY_POINT_GROUP)):
        return None
    folders = [*registry.builtin_plugin_dirs(), *[Path(d) for d in extra_dirs or []]]
    if not all(Path(f).is_dir() for f in folders):
        return None
    found = scan(folders)
    if found is None:
        return None
    methods, datasets = found
    for infos in (methods, datasets):
        names = [i.name for i in infos]
        if len(set(names)) != len(names):
            return None
    return PluginFiles({m.name: Path(m.source) for m in methods},
                       {d.name: Path(d.source) for d in datasets})
