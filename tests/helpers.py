"""Test helpers: the plugin on a real mautrix client against the fake homeserver, and SQL access."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import hdrs, web
from maubot.matrix import MaubotMatrixClient
from maubot.plugin_server import PluginWebApp, PrefixResource
from mautrix.client import InternalEventType
from mautrix.util.config import RecursiveDict
from ruamel.yaml import YAML

from roomstate import RoomStateBot
from roomstate.config import Config
from roomstate.db import history, schema

from .fakes import Event, FakeHomeserver

ROOT = Path(__file__).resolve().parent.parent
BOT = "@bot:fake.test"
ADMIN = "@admin:fake.test"
ALICE, BOB, CAROL, DAVE = "@alice:fake.test", "@bob:fake.test", "@carol:fake.test", "@dave:fake.test"
ROOM = "!design:fake.test"
OTHER = "!other:fake.test"

TABLES = (*schema.TABLES, schema.VERSION_TABLE)


async def eventually(check: Any, timeout: float = 10, what: str = "condition") -> Any:
    """Poll ``check()`` (sync or async) until it is truthy; returns its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(0.02)


def load_base_config() -> dict[str, Any]:
    with open(ROOT / "base-config.yaml") as file:
        return dict(YAML().load(file))


def set_keys(data: dict[str, Any], values: dict[str, Any]) -> None:
    """Set ("a.b": value) keys in nested config data."""
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value


def make_config(overrides: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> Config:
    """The base config with the admin set and ``overrides`` applied. ``data`` (if given) is the
    stored config the instance loads from: change it and reload, as the maubot manager does."""
    if data is None:
        data = {}
    data.update(copy.deepcopy(load_base_config()))
    data["admins"] = [ADMIN]
    set_keys(data, overrides or {})
    config = Config(load=lambda: data, load_base=lambda: RecursiveDict(load_base_config()), save=lambda _: None)
    config.load_and_update()
    return config


def drop_tables(url: str) -> None:
    """Remove the plugin's tables (tests on PostgreSQL share one database)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def fresh_database(url: str) -> None:
    """An empty database at ``url``: the SQLite file removed, or the plugin's tables dropped."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
    else:
        drop_tables(url)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'roomstate.db'}"


def postgres_url() -> str | None:
    return os.environ.get("ROOMSTATE_TEST_POSTGRES") or None


class Database:
    """Direct SQL on the plugin's database (a separate engine: what an admin would see)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            return list(conn.execute(sa.text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.rows(sql, **params)[0][0]

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def members(self, room_id: str, membership: str | None = None) -> dict[str, tuple[str, str | None]]:
        """user_id -> (membership, displayname) stored for the room."""
        found = self.rows(
            "SELECT u.user_id, m.membership, m.displayname FROM roomstate_memberships m"
            " JOIN roomstate_users u ON u.user_nid = m.user_nid JOIN roomstate_rooms r ON r.room_nid = m.room_nid"
            " WHERE r.room_id = :room",
            room=room_id,
        )
        return {u: (m, d) for u, m, d in found if membership is None or m == membership}

    def joined(self, room_id: str) -> list[str]:
        return sorted(self.members(room_id, "join"))

    def room(self, room_id: str) -> Any:
        found = self.rows(
            "SELECT i.* FROM roomstate_room_info i JOIN roomstate_rooms r ON r.room_nid = i.room_nid"
            " WHERE r.room_id = :room",
            room=room_id,
        )
        return found[0] if found else None

    def tracked(self) -> list[str]:
        return sorted(
            r[0]
            for r in self.rows(
                "SELECT r.room_id FROM roomstate_room_info i JOIN roomstate_rooms r ON r.room_nid = i.room_nid"
            )
        )

    def processed(self, room_id: str) -> set[str]:
        """The events claimed in the room: their ``roomstate_processed_events`` rows, and the member
        events whose history row is their claim."""
        return self.claimed_apart(room_id) | self.claimed_in_history(room_id)

    def claimed_apart(self, room_id: str) -> set[str]:
        """The events with a ``roomstate_processed_events`` row."""
        return {
            r[0]
            for r in self.rows(
                "SELECT p.event_id FROM roomstate_processed_events p JOIN roomstate_rooms r ON r.room_nid = p.room_nid"
                " WHERE r.room_id = :room",
                room=room_id,
            )
        }

    def claimed_in_history(self, room_id: str) -> set[str]:
        """The events whose history row claims them (their ID's hash in the unique index)."""
        rows = self.rows(
            "SELECT h.event_hash FROM roomstate_history h JOIN roomstate_rooms r ON r.room_nid = h.room_nid"
            " WHERE r.room_id = :room AND h.event_hash IS NOT NULL",
            room=room_id,
        )
        return {str(history.unpack_event_id(bytes(row[0]), None)) for row in rows}

    def resync_queue(self) -> dict[str, int]:
        """room_id -> attempts, for rooms waiting for a resync."""
        return {
            r[0]: r[1]
            for r in self.rows(
                "SELECT r.room_id, q.attempts FROM roomstate_resync_queue q JOIN roomstate_rooms r"
                " ON r.room_nid = q.room_nid"
            )
        }

    def dispose(self) -> None:
        self.engine.dispose()


def sync_response(
    joined: dict[str, dict[str, Any]] | None = None,
    left: dict[str, list[Event]] | None = None,
    invited: dict[str, list[Event]] | None = None,
) -> dict[str, Any]:
    """A /sync response. ``joined``: room -> {"state": [...], "timeline": [...], "limited": bool}."""
    rooms: dict[str, Any] = {}
    if joined:
        rooms["join"] = {
            room: {
                "state": {"events": copy.deepcopy(data.get("state", []))},
                "timeline": {"events": copy.deepcopy(data.get("timeline", [])), "limited": data.get("limited", False)},
            }
            for room, data in joined.items()
        }
    if left:
        rooms["leave"] = {room: {"timeline": {"events": copy.deepcopy(events)}} for room, events in left.items()}
    if invited:
        rooms["invite"] = {
            room: {"invite_state": {"events": copy.deepcopy(events)}} for room, events in invited.items()
        }
    return {"rooms": rooms}


class Harness:
    """Runs the real plugin on a real mautrix client (HTTP to the fake homeserver) and a real
    database; can restart it on the same database. Syncs are handed to the client's own sync
    handling, so events reach the handlers exactly as maubot delivers them."""

    def __init__(self, hs: FakeHomeserver, http: aiohttp.ClientSession, db_url: str) -> None:
        self.hs = hs
        self.http = http
        self.db_url = db_url
        self.engine = sa.create_engine(db_url)
        self.db = Database(db_url)
        self.bot: RoomStateBot | None = None
        self.config_overrides: dict[str, Any] = {"sync.retry_min_seconds": 0.05, "sync.retry_max_seconds": 0.5}
        self.ignore_first_sync = True
        self.syncs = 0
        self.config_data: dict[str, Any] = {}
        self.settle_timeout = 30.0
        self.webapp: Any = None  # maubot's PluginWebApp, once serve_web() ran
        self.web_url: str | None = None
        self._web_runner: Any = None

    def make_bot(self) -> RoomStateBot:
        client = MaubotMatrixClient(mxid=BOT, base_url=self.hs.url, token="token", client_session=self.http)
        client.ignore_first_sync = self.ignore_first_sync
        return RoomStateBot(
            client=client,
            loop=asyncio.get_running_loop(),
            http=self.http,
            instance_id="test",
            log=logging.getLogger("roomstate.test"),  # type: ignore[arg-type]
            config=make_config(self.config_overrides, self.config_data),
            database=self.engine,
            webapp=self.webapp,
            webapp_url=None if self.web_url is None else self.web_url + "/",
            loader=None,  # type: ignore[arg-type]
        )

    async def serve_web(self) -> str:
        """Serve the plugin's web app as maubot's manager does (maubot.server): under
        ``/_matrix/maubot/plugin/test/``, where only paths below that slash reach the plugin, on
        127.0.0.1. Returns the base URL without its slash (tests append paths); the plugin gets
        it with the slash as ``webapp_url``, as from maubot. Call before ``start``."""
        webapp = PluginWebApp()
        subpath = "/_matrix/maubot/plugin/test/"

        async def handle(request: web.Request) -> web.StreamResponse:
            if not request.path.startswith(subpath):
                return web.Response(status=404)
            rest = request.rel_url.path[len(subpath) - 1 :]
            return await webapp.handle(
                request.clone(rel_url=request.rel_url.with_path(rest).with_query(request.query_string))
            )

        app = web.Application()
        resource = PrefixResource(subpath.rstrip("/"))
        resource.add_route(hdrs.METH_ANY, handle)
        app.router.register_resource(resource)
        self._web_runner = web.AppRunner(app)
        await self._web_runner.setup()
        site = web.TCPSite(self._web_runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.webapp, self.web_url = webapp, f"http://127.0.0.1:{port}{subpath}".rstrip("/")
        return self.web_url

    async def start(self, settle: bool = True, **config_overrides: Any) -> RoomStateBot:
        self.config_overrides.update(config_overrides)
        self.bot = self.make_bot()
        self.syncs = 0
        await self.bot.internal_start()
        if settle:
            await self.settled()
        return self.bot

    async def settled(self) -> None:
        """Wait until the plugin has nothing left to do (startup syncs, repairs, queued work)."""
        assert self.bot is not None
        assert await self.bot.service.settled(timeout=self.settle_timeout), "the plugin did not settle"

    def update_config(self, **values: Any) -> None:
        """An admin saves new values in the maubot manager ("a__b" means "a.b")."""
        assert self.bot is not None
        set_keys(self.config_data, {key.replace("__", "."): value for key, value in values.items()})
        self.bot.on_external_config_update()

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.internal_stop()
            self.bot = None

    async def close_web(self) -> None:
        if self._web_runner is not None:
            await self._web_runner.cleanup()
            self._web_runner = None

    async def restart(
        self, settle: bool = True, client_kept_syncing: bool = False, **config_overrides: Any
    ) -> RoomStateBot:
        """Stop the plugin and start it again on the same database. ``client_kept_syncing``: as
        in maubot's manager, where an instance restarts while its client syncs on (the next sync
        is not the client's first, and is dispatched)."""
        await self.stop()
        self.engine.dispose()
        self.engine = sa.create_engine(self.db_url)
        bot = await self.start(settle, **config_overrides)
        if client_kept_syncing:
            self.syncs = 1
        return bot

    async def sync(self, response: dict[str, Any], settle: bool = True, copy_response: bool = True) -> None:
        """Hand a /sync response to the client as its syncer does: SYNC_SUCCESSFUL first (with
        the first-sync flag), then (unless it is the ignored first sync) every event, in order."""
        assert self.bot is not None
        client = self.bot.client
        is_first = self.syncs == 0
        self.syncs += 1
        data = copy.deepcopy(response) if copy_response else response
        data.setdefault("next_batch", self.hs.position)  # the fake's stream position: "now"
        data["net.maunium.mautrix"] = {"is_initial": False, "is_first": is_first}
        await client.run_internal_event(InternalEventType.SYNC_SUCCESSFUL, data=data)
        if not (is_first and client.ignore_first_sync):
            try:
                await asyncio.gather(*client.handle_sync(data))
            except Exception:  # as mautrix's syncer does: log, and go on with the next sync
                logging.getLogger("mau.client.sync").exception("Sync handling errored")
        if settle:
            await self.settled()

    async def deliver(
        self, *events: Event, room_id: str | None = None, section: str = "timeline", settle: bool = True
    ) -> None:
        """Deliver events of one room in one sync (``section``: timeline, state, or left)."""
        if self.syncs == 0:
            await self.sync(sync_response(), settle=False)  # the first sync, which maubot ignores
        room = room_id or events[0]["room_id"]
        stripped = [{k: v for k, v in e.items() if k != "room_id"} for e in events]
        if section == "left":
            await self.sync(sync_response(left={room: stripped}), settle=settle)
        elif section == "invite":
            await self.sync(sync_response(invited={room: stripped}), settle=settle)
        else:
            await self.sync(sync_response(joined={room: {section: stripped}}), settle=settle)

    async def command(
        self, room_id: str, sender: str, body: str, formatted_body: str | None = None, settle: bool = True
    ) -> list[str]:
        """Send a message as ``sender``; returns the plain-text bodies of the bot's replies, as sent
        (IDs in them can be copied into the next command)."""
        before = len(self.hs.sent)
        await self.deliver(self.hs.message(room_id, sender, body, formatted_body), settle=settle)
        if not settle:  # wait for the reply alone
            await eventually(lambda: len(self.hs.sent) > before, what=f"a reply to {body}")
        return [content.get("body", "") for _, content in self.hs.sent[before:]]

    def replies(self, since: int = 0) -> list[dict[str, Any]]:
        return [content for _, content in self.hs.sent[since:]]

    async def join_bot(self, room_id: str, inviter: str) -> None:
        """The bot is invited and joins; its join arrives in a sync like Synapse sends it."""
        invite = self.hs.member(room_id, BOT, "invite", sender=inviter)
        await self.deliver(invite, section="invite", settle=False)
        await self.deliver(self.hs.member(room_id, BOT, "join"))

    async def setup_room(
        self, room_id: str = ROOM, creator: str = ALICE, name: str | None = "Design", members: Sequence[str] = (BOB,)
    ) -> None:
        """A room with members, the bot joined and synced."""
        self.hs.create_room(room_id, creator, name=name, members=tuple(members))
        await self.join_bot(room_id, creator)
