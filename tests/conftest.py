"""Fixtures: a real SQLite file, the fake homeserver, and the real plugin on a real mautrix client."""
from __future__ import annotations

import asyncio
import copy
import logging
import os
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import aiohttp
import pytest
import pytest_asyncio
import sqlalchemy as sa
from maubot.matrix import MaubotMatrixClient, MaubotMessageEvent
from mautrix.client import SyncStream
from mautrix.types import Event, EventType, MessageEvent, StateEvent
from mautrix.util.config import RecursiveDict
from ruamel.yaml import YAML

from roomstate import RoomStateBot
from roomstate.config import Config

from .fakes import FakeHomeserver

ROOT = Path(__file__).resolve().parent.parent
BOT = "@bot:fake.test"
ADMIN = "@admin:fake.test"


def load_base_config() -> Dict[str, Any]:
    with open(ROOT / "base-config.yaml") as file:
        return YAML().load(file)


def make_config(overrides: Optional[Dict[str, Any]] = None) -> Config:
    data = copy.deepcopy(dict(load_base_config()))
    data["admins"] = [ADMIN]
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return Config(load=lambda: data, load_base=lambda: RecursiveDict(load_base_config()), save=lambda _: None)


def database_url(tmp_path: Path) -> str:
    """ROOMSTATE_TEST_DATABASE (e.g. a PostgreSQL URL) or a fresh SQLite file."""
    return os.environ.get("ROOMSTATE_TEST_DATABASE") or f"sqlite:///{tmp_path / 'roomstate.db'}"


def drop_all(url: str) -> None:
    if url.startswith("sqlite"):
        return
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("processed_events", "memberships", "room_info", "users", "rooms", "schema_version"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS roomstate_{table}"))
    engine.dispose()


class Harness:
    """Runs the plugin against the fake homeserver; can restart it on the same database."""

    def __init__(self, hs: FakeHomeserver, http: aiohttp.ClientSession, db_url: str) -> None:
        self.hs = hs
        self.http = http
        self.db_url = db_url
        self.engine = sa.create_engine(db_url)
        self.bot: Optional[RoomStateBot] = None
        self.config_overrides: Dict[str, Any] = {}

    def make_bot(self) -> RoomStateBot:
        client = MaubotMatrixClient(mxid=BOT, base_url=self.hs.url, token="token", client_session=self.http)
        return RoomStateBot(
            client=client,
            loop=asyncio.get_running_loop(),
            http=self.http,
            instance_id="test",
            log=logging.getLogger("roomstate.test"),
            config=make_config(self.config_overrides),
            database=self.engine,
            webapp=None,
            webapp_url=None,
            loader=None,  # type: ignore[arg-type]
        )

    async def start(self, **config_overrides: Any) -> RoomStateBot:
        self.config_overrides.update(config_overrides)
        self.bot = self.make_bot()
        await self.bot.internal_start()
        await self.bot.reconciled
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.internal_stop()
            self.bot = None

    async def restart(self, **config_overrides: Any) -> RoomStateBot:
        await self.stop()
        self.engine.dispose()
        self.engine = sa.create_engine(self.db_url)
        return await self.start(**config_overrides)

    async def deliver(self, *raw_events: Dict[str, Any], source: SyncStream = SyncStream.JOINED_ROOM | SyncStream.TIMELINE) -> None:
        """Hand events to the plugin exactly as mautrix's syncer does, and wait for the handlers."""
        assert self.bot is not None
        tasks = []
        for raw in raw_events:
            raw = copy.deepcopy(raw)
            evt = (StateEvent if "state_key" in raw else Event).deserialize(raw)
            if getattr(evt, "state_key", None) is not None:
                evt.type = evt.type.with_class(EventType.Class.STATE)
            else:
                evt.type = evt.type.with_class(EventType.Class.MESSAGE)
            client = self.bot.client
            if isinstance(evt, MessageEvent):
                evt = MaubotMessageEvent(evt, client)  # as MaubotMatrixClient.dispatch_event does
            setattr(evt, "source", source)
            tasks += client.dispatch_manual_event(evt.type, evt, include_global_handlers=True, force_synchronous=True)
        await asyncio.gather(*tasks)

    async def command(self, room_id: str, sender: str, body: str, formatted_body: Optional[str] = None) -> List[str]:
        """Send a message as ``sender``; returns the plain-text bodies of the bot's replies
        (blank lines dropped), as a client without HTML would show them."""
        before = len(self.hs.sent)
        await self.deliver(self.hs.message(room_id, sender, body, formatted_body))
        return [
            "\n".join(line for line in content.get("body", "").splitlines() if line.strip())
            for _, content in self.hs.sent[before:]
        ]

    async def invite_and_join_bot(self, room_id: str, inviter: str) -> None:
        """The bot is invited and joins; its join event is delivered like a sync would."""
        await self.deliver(self.hs.member(room_id, BOT, "invite", sender=inviter), source=SyncStream.INVITED_ROOM | SyncStream.STATE)
        await self.deliver(self.hs.member(room_id, BOT, "join"))

    def rows(self, sql: str, **params: Any) -> List[Any]:
        with self.engine.begin() as conn:
            return list(conn.execute(sa.text(sql), params))


@pytest_asyncio.fixture
async def hs() -> AsyncIterator[FakeHomeserver]:
    server = FakeHomeserver(BOT)
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def harness(hs: FakeHomeserver, tmp_path: Path) -> AsyncIterator[Harness]:
    url = database_url(tmp_path)
    drop_all(url)
    async with aiohttp.ClientSession() as http:
        h = Harness(hs, http, url)
        yield h
        await h.stop()
        h.engine.dispose()
    drop_all(url)


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    url = database_url(tmp_path)
    drop_all(url)
    yield url
    drop_all(url)
