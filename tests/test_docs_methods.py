"""docs/methods/README.md stays true: every method listed once, with the family, label
needs and engine the code declares, and a page of its own."""

from __future__ import annotations

import re
from pathlib import Path

from bench.plugins.index import listing

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods"
VARIANT_BASES = {"sfr-cfr", "sfr-groupweights", "sfr-nodropout", "sfr-noweights"}


def _table() -> dict[str, list[str]]:
    rows = {}
    for line in (DOCS / "README.md").read_text().splitlines():
        m = re.match(r"\| \[`([\w-]+)`\]\(([\w-]+\.md)\) \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [m.group(2)] + [c.strip() for c in m.group(3).split("|")]
    return rows


def test_every_method_is_in_the_table_as_the_code_declares_it():
    methods, _ = listing()
    table = _table()
    for m in methods:
        if m.name in VARIANT_BASES:
            assert m.name in (DOCS / "README.md").read_text(), m.name
            continue
        assert m.name in table, f"{m.name} missing from docs/methods/README.md"
        page, family, labels, engine = table[m.name][:4]
        assert (DOCS / page).exists(), page
        assert family == m.family, (m.name, family)
        assert labels == (",".join(sorted(m.group_labels)) or "none"), (m.name, labels)
        assert engine == m.engine, (m.name, engine)
