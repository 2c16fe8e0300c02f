"""The on-disk feature cache: content-addressed, atomic, verified on read, process-safe.

An entry is `<cache>/features/<dataset>-<key>.npz` (plain arrays, read with
allow_pickle=False) plus a `.json` manifest written after it with the file's size and
sha256 and each array's shape and dtype. The key hashes everything that decides the
numbers: the dataset's fingerprint, the identity (size, mtime) of every item file, the
encoder id, its weights identity and its preprocessing. The text tower's outputs (class,
attribute and "class with attribute" prompt embeddings) are stored beside the features;
an entry whose manifest does not list its text arrays predates them and is rebuilt. A corrupt
or stale entry is rebuilt with one warning, never trusted; a file lock makes two processes
encoding the same dataset wait for one another instead of both writing.

The cache folder also holds rendered embedded-dataset images (`datasets/`, verified by
their own checksums) and MLflow's empty template store (`mlflow-empty-<version>.db`, see
bench.run.tracking); `sweep` (`bench cache clear`) removes all three kinds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from bench.data.spec import DatasetSpec
from bench.encoders.factory import Encoded, Encoder
from bench.errors import UserError

FORMAT = 1
# <library>-empty-<version>.db: an empty store (bench.data.store_template), with .sha256
# and .lock beside it
TEMPLATE_SUFFIX = "-empty-"
TEMPLATE_LIBRARIES = ("mlflow", "optuna")
log = logging.getLogger("bench.data.cache")


def cache_dir() -> Path:
    """Where spurbench keeps caches: $SPURBENCH_CACHE, else ~/.cache/spurbench."""
    env = os.environ.get("SPURBENCH_CACHE")
    # "~/x" from a config file or quoted shell line is the home folder, not ./~/x
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spurbench"


def unusable(root: Path, exc: BaseException) -> str:
    """Why a cache folder could not be used, in words (a file in its place, no permission)."""
    for parent in (Path(root), *Path(root).parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def make_dir(folder: Path, root: Path | None = None) -> Path:
    """Create a folder in the cache; an unusable cache (a file, no permission) is one
    UserError naming the cache folder and SPURBENCH_CACHE, not an OSError traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        root = cache_dir() if root is None else root
        raise UserError(
            f"cache folder {root} is unusable ({unusable(folder, exc)}); set SPURBENCH_CACHE "
            "to a folder you can write"
        ) from None
    return folder


def is_template_file(name: str) -> bool:
    """A cached empty store, its checksum or lock, or a half-written one (".name.tmp")."""
    return name.lstrip(".").startswith(tuple(f"{lib}{TEMPLATE_SUFFIX}"
                                             for lib in TEMPLATE_LIBRARIES))


def features_dir(root: Path) -> Path:
    return Path(root) / "features"


def items_identity(spec: DatasetSpec) -> str:
    """Hash of (path, size, mtime) of every image a spec names: a changed image is a new key.

    Texts and feature rows are already inside spec.fingerprint(); only files need this.
    """
    if spec.item_kind != "image":
        return ""
    root = Path(spec.root or "")
    h = hashlib.sha256()
    for item in spec.metadata["item"].to_list():
        path = root / str(item)
        try:
            st = os.stat(path)
        except OSError:
            raise UserError(f"dataset '{spec.name}': image file {path} is missing") from None
        h.update(f"{item}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_identity(spec: DatasetSpec, encoder: Encoder) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "dataset": spec.name,
        "fingerprint": spec.fingerprint(),
        "items": items_identity(spec),
        "rows": spec.metadata.height,
        "encoder": encoder.cache_identity(),
    }


def _key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:  # noqa: ANN001
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Entry:
    """One cache entry: its data file, its manifest, and the lock that guards writing it."""

    data: Path

    @property
    def manifest(self) -> Path:
        return self.data.with_suffix(".json")

    @property
    def lock(self) -> Path:
        return self.data.with_suffix(".lock")

    @classmethod
    def for_key(cls, root: Path, dataset: str, key: str) -> Entry:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
        return cls(features_dir(root) / f"{safe}-{key}.npz")

    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"manifest unreadable ({type(exc).__name__})") from None

    def load(self, identity: dict[str, Any]) -> Encoded:
        """Read and verify: manifest, identity, size, checksum, shapes and dtypes."""
        m = self.read_manifest()
        if m.get("identity") != identity:
            raise ValueError("manifest was written for different inputs")
        if not self.data.is_file():
            raise ValueError("data file missing")
        size = self.data.stat().st_size
        if size != m.get("bytes"):
            raise ValueError(f"data file has {size} bytes, manifest says {m.get('bytes')}")
        if sha256_file(self.data) != m.get("sha256"):
            raise ValueError("checksum mismatch")
        try:
            with np.load(self.data, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile/ValueError on damaged files
            raise ValueError(f"unreadable arrays ({type(exc).__name__}: {exc})") from None
        expected = m.get("arrays", {})
        if set(arrays) != set(expected):
            raise ValueError("array names differ from the manifest")
        for name, arr in arrays.items():
            want = expected[name]
            if list(arr.shape) != want["shape"] or str(arr.dtype) != want["dtype"]:
                raise ValueError(f"array '{name}' has shape {arr.shape} dtype {arr.dtype}")
        if arrays["features"].shape[0] != identity["rows"]:
            raise ValueError("row count differs from the dataset")
        if "text" not in m:
            # written before attribute text was cached: same key, so rebuilt in place
            raise ValueError("entry predates attribute text")
        return Encoded(
            features=arrays["features"],
            class_text=arrays.get("class_text"),
            visual_projection=arrays.get("visual_projection"),
            logit_scale=float(m["logit_scale"]),
            untrained=bool(m["untrained"]),
            attr_text=arrays.get("attr_text"),
            class_attr_text=arrays.get("class_attr_text"),
        )

    def write(self, identity: dict[str, Any], encoded: Encoded, meta: dict[str, Any]) -> None:
        arrays = {"features": np.ascontiguousarray(encoded.features, dtype=np.float32)}
        if encoded.class_text is not None:
            arrays["class_text"] = np.ascontiguousarray(encoded.class_text, dtype=np.float32)
        for name in ("visual_projection", "attr_text", "class_attr_text"):
            value = getattr(encoded, name)
            if value is not None:
                arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
        self.data.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.unlink(missing_ok=True)  # no manifest = no entry while the data changes
        _atomic_write(self.data, lambda f: np.savez(f, **arrays))
        manifest = {
            **meta,
            "identity": identity,
            "bytes": self.data.stat().st_size,
            "sha256": sha256_file(self.data),
            "arrays": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()
            },
            "logit_scale": float(encoded.logit_scale),
            "untrained": bool(encoded.untrained),
            "text": sorted(k for k in arrays if k.endswith("text")),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        _atomic_write(self.manifest, lambda f: f.write(json.dumps(manifest, indent=1).encode()))

    def remove(self) -> int:
        freed = 0
        for path in (self.data, self.manifest, self.lock):
            if path.exists():
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
        return freed


def _try_load(entry: Entry, identity: dict[str, Any]) -> tuple[Encoded | None, str | None]:
    """(the entry's data, None), or (None, why it is unusable; None when there is none)."""
    if not entry.manifest.exists() and not entry.data.exists():
        return None, None
    try:
        return entry.load(identity), None
    except ValueError as exc:
        return None, str(exc)


def cached_encode(spec: DatasetSpec, encoder: Encoder, cache_root: Path) -> Encoded:
    """encoder.encode(spec), computed once and stored; later calls read the verified entry.

    The entry is read twice when it is unusable (before and under the lock, as another
    process may be writing it); a corrupt one is reported once, not once per look.
    """
    identity = entry_identity(spec, encoder)
    entry = Entry.for_key(Path(cache_root), spec.name, _key(identity))
    found, problem = _try_load(entry, identity)
    if found is not None:
        return found
    make_dir(entry.data.parent, Path(cache_root))
    lock = FileLock(str(entry.lock))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        log.warning("another process is encoding %s with %s; waiting for it", spec.name, encoder.id)
        lock.acquire()
    try:
        # the other process may have written it meanwhile
        found, again = _try_load(entry, identity)
        if found is not None:
            return found
        if again is not None:
            log.warning("feature cache entry %s is corrupt or stale (%s); rebuilding it",
                        entry.data, again)
        encoded = encoder.encode(spec)
        entry.write(identity, encoded, {"dataset": spec.name, "encoder": encoder.id})
        return encoded
    finally:
        lock.release()


def list_entries(root: Path) -> list[tuple[Entry, dict[str, Any] | None]]:
    """Every entry under root with its manifest (None when the manifest is unreadable)."""
    folder = features_dir(root)
    if not folder.is_dir():
        return []
    out = []
    for data in sorted(folder.glob("*.npz")):
        entry = Entry(data)
        try:
            out.append((entry, entry.read_manifest()))
        except ValueError:
            out.append((entry, None))
    return out


def verify(entry: Entry) -> str:
    """'ok', or why the entry would be rebuilt (checked against its own manifest)."""
    try:
        m = entry.read_manifest()
        entry.load(m["identity"])
    except (ValueError, KeyError) as exc:
        return f"corrupt: {exc}"
    return "ok"


@dataclass
class Cleared:
    """What `sweep` removed: feature entries, rendered datasets, store templates, bytes."""

    entries: int = 0
    rendered: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    freed: int = 0


def _remove_tree(target: Path) -> int:
    freed = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    shutil.rmtree(target)
    return freed


def sweep(root: Path, dataset: str | None = None) -> Cleared:
    """Remove feature entries and leftovers, rendered embedded-dataset images and (without
    `dataset`) the MLflow template databases: everything here is rebuilt when needed."""
    out = Cleared()
    for entry, manifest in list_entries(root):
        if dataset is not None and (manifest or {}).get("dataset") != dataset:
            continue
        out.freed += entry.remove()
        out.entries += 1
    folder = features_dir(root)
    if folder.is_dir():
        for path in folder.iterdir():
            stale = path.name.startswith(".") and ".tmp" in path.name
            orphan = path.suffix in (".json", ".lock") and not path.with_suffix(".npz").exists()
            if dataset is None and (stale or orphan):
                out.freed += path.stat().st_size
                path.unlink(missing_ok=True)
    rendered = Path(root) / "datasets"
    if rendered.is_dir():
        for target in sorted(rendered.iterdir()):
            if target.is_dir() and (dataset is None or target.name == dataset):
                out.freed += _remove_tree(target)
                out.rendered.append(target.name)
        if dataset is None:
            out.freed += _remove_tree(rendered)
    if dataset is None and Path(root).is_dir():
        for path in sorted(Path(root).iterdir()):
            if is_template_file(path.name) and path.is_file():
                if path.suffix == ".db":
                    out.templates.append(path.name)
                out.freed += path.stat().st_size
                path.unlink(missing_ok=True)
    return out


def clear(root: Path, dataset: str | None = None) -> tuple[int, int]:
    """Remove what `sweep` removes; (feature entries, bytes) freed."""
    done = sweep(root, dataset)
    return done.entries, done.freed
