"""Fixtures: the database backends, the fake homeserver, and the plugin harness.

``db_url`` is parametrized over the available databases: SQLite always, PostgreSQL when
ROOMSTATE_TEST_POSTGRES names a server to use (scripts/test.sh starts one when it can).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import sqlalchemy as sa

from roomstate.db import RoomStore

from .fakes import FakeHomeserver
from .helpers import BOT, Database, Harness, drop_tables, postgres_url, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url = postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server (set ROOMSTATE_TEST_POSTGRES)")
    drop_tables(url)
    yield url
    drop_tables(url)


@pytest.fixture
def sqlite_only(tmp_path: Path) -> str:
    """For behaviour only SQLite has (WAL, file locks)."""
    return sqlite_url(tmp_path)


@pytest_asyncio.fixture
async def hs() -> AsyncIterator[FakeHomeserver]:
    server = FakeHomeserver(BOT)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def harness(hs: FakeHomeserver, db_url: str) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as http:
        h = Harness(hs, http, db_url)
        yield h
        await h.stop()
        await h.close_web()
        h.engine.dispose()
        h.db.dispose()


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[RoomStore]:
    """An open RoomStore on ``db_url`` (some test files have their own, with other settings)."""
    engine = sa.create_engine(db_url)
    s = RoomStore(engine)
    await s.open()
    yield s
    await s.close()
    engine.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()
