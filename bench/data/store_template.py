"""Empty, migrated SQLite stores, cached once per library version, copied to start new ones.

Why: every fresh run directory starts an MLflow store and an Optuna study database.
MLflow runs its schema migrations on a new database (seconds) and Optuna loads its
alembic scripts to stamp one (~0.1 s); a copy of an empty store made once, in the cache
folder and per library version, costs milliseconds. A checksum written beside the
template catches any changed byte; SQLite's quick_check and the expected tables (with an
alembic version) catch a damaged or foreign file, which is rebuilt with one warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.data.cache import TEMPLATE_SUFFIX, cache_dir, sha256_file, unusable

log = logging.getLogger("bench.data.store_template")
_warned: set[str] = set()  # one warning per unusable cache folder per process


@dataclass(frozen=True)
class StoreTemplate:
    """One library's empty store. build(url) creates (and migrates) a store at a SQLite URL."""

    library: str  # "MLflow", "Optuna": in file names and messages
    version: str
    tables: frozenset[str]
    build: Callable[[str], None]

    def path(self, root: Path | None = None) -> Path:
        folder = cache_dir() if root is None else Path(root)
        return folder / f"{self.library.lower()}{TEMPLATE_SUFFIX}{self.version}.db"

    def problem(self, template: Path) -> str | None:
        """Why a cached template cannot be used (None: it can)."""
        if not template.is_file():
            return "missing"
        digest = template.with_name(template.name + ".sha256")
        if digest.is_file():
            try:
                if digest.read_text().strip() != sha256_file(template):
                    return "checksum mismatch"
            except OSError as exc:
                return f"unreadable: {exc.strerror or type(exc).__name__}"
        try:
            con = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
            try:
                check = con.execute("PRAGMA quick_check").fetchall()
                rows = con.execute("SELECT name FROM sqlite_master WHERE type='table'")
                tables = {r[0] for r in rows}
                version = (con.execute("SELECT version_num FROM alembic_version").fetchall()
                           if "alembic_version" in tables else [])
            finally:
                con.close()
        except sqlite3.Error as exc:
            return f"not a usable SQLite database: {exc}"
        if check != [("ok",)]:
            return f"SQLite quick_check: {check[0][0]}"
        missing = self.tables - tables
        if missing:
            return f"missing table(s) {', '.join(sorted(missing))}"
        if len(version) != 1 or not version[0][0]:
            return "no alembic schema version"
        return None

    def _build(self, template: Path) -> None:
        """Create an empty, migrated store beside the template, check it, then its checksum."""
        tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            self.build(f"sqlite:///{tmp}")
            problem = self.problem(tmp)
            if problem is not None:
                raise OSError(f"the new template is unusable ({problem})")
            digest = template.with_name(template.name + ".sha256")
            digest_tmp = digest.with_name(f".{digest.name}.{os.getpid()}.tmp")
            digest_tmp.write_text(sha256_file(tmp) + "\n")
            os.replace(tmp, template)
            os.replace(digest_tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)

    def cached(self) -> Path | None:
        """The verified template, built (or rebuilt, with one warning, when damaged) under a
        lock; None when the cache folder cannot be used."""
        from filelock import FileLock, Timeout

        root = cache_dir()
        template = self.path(root)
        if self.problem(template) is None:  # the usual case: no lock, works read-only
            return template
        try:
            root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(template.with_name(template.name + ".lock")), timeout=300):
                problem = self.problem(template)  # another process may have rebuilt it
                if problem is None:
                    return template
                if problem != "missing":
                    log.warning("cached %s template %s is damaged (%s); rebuilding it",
                                self.library, template, problem)
                self._build(template)
            return template
        except (OSError, Timeout) as exc:
            if str(root) not in _warned:
                _warned.add(str(root))
                log.warning("cache folder %s is unusable (%s); new MLflow and Optuna "
                            "databases are created without cached templates (slower); set "
                            "SPURBENCH_CACHE to a folder you can write",
                            root, unusable(template, exc))
            return None

    def seed(self, db: Path) -> bool:
        """Start the store at `db` as a copy of the template; False where none was made
        (no usable template, or `db` already exists: another process made it first)."""
        if db.exists():
            return False
        template = self.cached()
        db.parent.mkdir(parents=True, exist_ok=True)
        if template is None:
            return False
        tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        try:
            os.link(tmp, db)  # never replaces a store another process has started
            return True
        except OSError:  # it exists now, or this filesystem has no hard links
            return False
        finally:
            tmp.unlink(missing_ok=True)


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL (None for any other URL)."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
