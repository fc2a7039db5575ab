"""SQLite connection setup."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from roomstate.db import dialect
from roomstate.db.dialect import Dialect


@pytest.fixture
def no_adapters() -> Iterator[None]:
    """The process's sqlite3 adapters for None and bytes are put back as they were."""
    keys = [(kind, sqlite3.PrepareProtocol) for kind in (type(None), bytes)]
    saved = {key: sqlite3.adapters.pop(key) for key in keys if key in sqlite3.adapters}
    yield
    for key in keys:
        sqlite3.adapters.pop(key, None)
    sqlite3.adapters.update(saved)


def test_nulls_and_blobs_are_bound_as_before(no_adapters: None, tmp_path: Path) -> None:
    conn = Dialect(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")).connect()
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is dialect._same
    row = conn.execute("SELECT ?, typeof(?), ?, typeof(?)", (None, None, b"\x00\xff", b"\x00\xff")).fetchone()
    assert row == (None, "null", b"\x00\xff", "blob")
    conn.close()


def test_an_adapter_registered_by_someone_else_is_left_alone(no_adapters: None, tmp_path: Path) -> None:
    theirs = bytes.hex
    sqlite3.register_adapter(bytes, theirs)
    conn = Dialect(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")).connect()
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is theirs
    assert conn.execute("SELECT ?", (b"\x01",)).fetchone() == ("01",)
    conn.close()
