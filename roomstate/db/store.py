"""RoomStore: every read and write of the plugin's tables.

All public methods are coroutines whose body runs on one dedicated worker thread, so database
work never blocks the event loop and the store's own statements never contend with each other.
Numeric IDs stay inside this module: callers pass and get Matrix IDs only.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool, SingletonThreadPool

from ..models import INVITE, JOIN, Member, MemberDiff, RoomInfo, RoomSnapshot
from . import schema
from .compat import select
from .schema import memberships, processed_events, room_info, rooms, users

T = TypeVar("T")
CHUNK = 500  # stays under every SQLite build's bound-parameter limit

log = logging.getLogger("roomstate.db")


def now_ms() -> int:
    return int(time.time() * 1000)


def off_loop(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Make a blocking store method a coroutine that runs on the store's worker thread."""

    @functools.wraps(func)
    async def wrapper(self: "RoomStore", *args: Any, **kwargs: Any) -> T:
        call = functools.partial(func, self, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    return wrapper


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _count_members(membership: str) -> str:
    # Correlated per room: a range scan of the memberships primary key (room_nid, user_nid), so
    # reading one room never aggregates the members of every other room.
    return (
        "(SELECT COUNT(*) FROM roomstate_memberships m"
        f" WHERE m.room_nid = i.room_nid AND m.membership = '{membership}')"
    )


_ROOMS_QUERY = f"""
SELECT r.room_id, i.name, i.topic, i.canonical_alias, i.encrypted, i.creator, i.room_version,
       i.replacement_room, i.updated_at,
       {_count_members(JOIN)} AS joined_count, {_count_members(INVITE)} AS invited_count
FROM roomstate_room_info i
JOIN roomstate_rooms r ON r.room_nid = i.room_nid
"""
_JOINED_ROOMS_OF_USER = """
i.room_nid IN (
    SELECT m.room_nid FROM roomstate_memberships m
    JOIN roomstate_users u ON u.user_nid = m.user_nid
    WHERE u.user_id = :user_id AND m.membership = 'join'
)
"""


# Statements used per event, built once (building and cache-keying a statement costs more than
# running it on SQLite).
_SELECT_ROOM_NID = select(rooms.c.room_nid).where(rooms.c.room_id == sa.bindparam("b_room_id"))
_INSERT_ROOM = rooms.insert()
_INSERT_PROCESSED = processed_events.insert()
_DELETE_PROCESSED = processed_events.delete().where(
    sa.and_(
        processed_events.c.room_nid == sa.bindparam("b_room_nid"),
        processed_events.c.event_id == sa.bindparam("b_event_id"),
    )
)
_SELECT_USER = select(users.c.user_nid, users.c.displayname).where(users.c.user_id == sa.bindparam("b_user_id"))
_INSERT_USER = users.insert()
_RENAME_USER = (
    users.update().where(users.c.user_nid == sa.bindparam("b_nid")).values(displayname=sa.bindparam("b_name"))
)
_SELECT_HAS_INFO = select(room_info.c.room_nid).where(room_info.c.room_nid == sa.bindparam("b_room_nid"))
_MEMBER_KEY = sa.and_(
    memberships.c.room_nid == sa.bindparam("b_room_nid"),
    memberships.c.user_nid == sa.bindparam("b_user_nid"),
)
_SELECT_MEMBER_TS = select(memberships.c.event_ts).where(_MEMBER_KEY)
_INSERT_MEMBER = memberships.insert()
_UPDATE_MEMBER = memberships.update().where(_MEMBER_KEY)
_TOUCH_ROOM = (
    room_info.update()
    .where(room_info.c.room_nid == sa.bindparam("b_room_nid"))
    .values(updated_at=sa.bindparam("b_now"))
)


def _room_from_row(row: Any) -> RoomInfo:
    return RoomInfo(
        room_id=row.room_id,
        name=row.name,
        topic=row.topic,
        canonical_alias=row.canonical_alias,
        encrypted=bool(row.encrypted),
        creator=row.creator,
        room_version=row.room_version,
        replacement_room=row.replacement_room,
        joined_count=int(row.joined_count),
        invited_count=int(row.invited_count),
        updated_at=int(row.updated_at),
    )


def _tune_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    """synchronous=NORMAL (with WAL): commits stop waiting for fsync. The database stays
    consistent; a power cut may lose the last commits, which the next resync restores. The
    same settings as mautrix's own SQLite databases."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _usable_engine(engine: Engine) -> Engine:
    """The engine to run queries on. On SQLite, SQLAlchemy 1.3 (maubot's legacydb extra) uses a
    NullPool, which opens the file anew for every transaction; a pooled engine on the same file
    is several times faster. Anything else is used as maubot made it."""
    if engine.dialect.name == "sqlite" and isinstance(engine.pool, NullPool):
        engine = sa.create_engine(
            engine.url, poolclass=SingletonThreadPool, connect_args={"check_same_thread": False}
        )
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _tune_sqlite_connection)
    return engine


class RoomStore:
    """Rooms, members and processed events in the plugin's SQLAlchemy database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = _usable_engine(engine)
        self._own_engine = self.engine is not engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomstate-db")
        # room_id -> room_nid. Nids are never deleted or reused, so entries never go stale. Only
        # nids read from the database are cached, never one created in a transaction that may
        # still roll back.
        self._room_nids: Dict[str, int] = {}

    # ---- lifecycle -------------------------------------------------------------------------

    def _open(self) -> int:
        if self.engine.dialect.name == "sqlite":
            self.engine.dispose()  # pooled connections made before our listener: drop them
            with self.engine.begin() as conn:
                # a property of the file: readers never see a half-written sync
                conn.execute(sa.text("PRAGMA journal_mode=WAL"))
        return schema.upgrade(self.engine)

    open = off_loop(_open)
    open.__doc__ = """Set up the database file and run migrations; returns the schema version."""

    def open_soon(self) -> "asyncio.Future[int]":
        """Like ``open()``, but queued on the worker thread before this returns, without yielding
        to the event loop: every store call made afterwards runs after the migrations."""
        return asyncio.wrap_future(self._executor.submit(self._open))

    async def close(self) -> None:
        """Finish queued work, then release the worker thread (and our own engine, if any)."""
        loop = asyncio.get_running_loop()
        if self._own_engine:
            await loop.run_in_executor(self._executor, self.engine.dispose)
        await loop.run_in_executor(None, self._executor.shutdown)

    # ---- ID interning (callers hold a transaction) ------------------------------------------

    def _room_nid(self, conn: Connection, room_id: str, create: bool) -> Optional[int]:
        nid = self._room_nids.get(room_id)
        if nid is not None:
            return nid
        nid = conn.execute(_SELECT_ROOM_NID, {"b_room_id": room_id}).scalar()
        if nid is not None:
            self._room_nids[room_id] = nid
        elif create:
            nid = conn.execute(_INSERT_ROOM, {"room_id": room_id}).inserted_primary_key[0]
        return nid

    @staticmethod
    def _intern_users(conn: Connection, wanted: Dict[str, Optional[str]]) -> Dict[str, int]:
        """user_id -> user_nid for every key of ``wanted`` (user_id -> displayname), creating
        missing users and refreshing changed displaynames, in bulk."""
        found: Dict[str, int] = {}
        renamed: List[Dict[str, Any]] = []
        user_ids = list(wanted)
        for chunk in _chunks(user_ids):
            query = select(users.c.user_nid, users.c.user_id, users.c.displayname)
            for row in conn.execute(query.where(users.c.user_id.in_(chunk))):
                found[row.user_id] = row.user_nid
                name = wanted[row.user_id]
                if name is not None and name != row.displayname:
                    renamed.append({"b_nid": row.user_nid, "b_name": name})
        missing = [uid for uid in user_ids if uid not in found]
        if missing:
            conn.execute(users.insert(), [{"user_id": u, "displayname": wanted[u]} for u in missing])
            for chunk in _chunks(missing):
                query = select(users.c.user_nid, users.c.user_id).where(users.c.user_id.in_(chunk))
                found.update((row.user_id, row.user_nid) for row in conn.execute(query))
        if renamed:
            conn.execute(_RENAME_USER, renamed)
        return found

    @staticmethod
    def _intern_user(conn: Connection, user_id: str, displayname: Optional[str]) -> int:
        """One user's nid (created if new; displayname refreshed if given and changed)."""
        row = conn.execute(_SELECT_USER, {"b_user_id": user_id}).first()
        if row is None:
            return conn.execute(_INSERT_USER, {"user_id": user_id, "displayname": displayname}).inserted_primary_key[0]
        if displayname is not None and displayname != row.displayname:
            conn.execute(_RENAME_USER, {"b_nid": row.user_nid, "b_name": displayname})
        return row.user_nid

    @staticmethod
    def _joined_user_ids(conn: Connection, room_nid: int) -> set:
        query = (
            select(users.c.user_id)
            .select_from(memberships.join(users, users.c.user_nid == memberships.c.user_nid))
            .where(sa.and_(memberships.c.room_nid == room_nid, memberships.c.membership == JOIN))
        )
        return {row.user_id for row in conn.execute(query)}

    @staticmethod
    def _has_info(conn: Connection, room_nid: Optional[int]) -> bool:
        if room_nid is None:
            return False
        return conn.execute(_SELECT_HAS_INFO, {"b_room_nid": room_nid}).first() is not None

    # ---- processed events (dedup) -----------------------------------------------------------

    @off_loop
    def claim_event(self, room_id: str, event_id: str, processed_ts: Optional[int] = None) -> bool:
        """Record the event as processed. False if it already was (one atomic INSERT on the
        primary key, so two racing claims can never both succeed)."""
        try:
            with self.engine.begin() as conn:
                room_nid = self._room_nid(conn, room_id, create=True)
                conn.execute(
                    _INSERT_PROCESSED,
                    {
                        "room_nid": room_nid,
                        "event_id": event_id,
                        "processed_ts": processed_ts if processed_ts is not None else now_ms(),
                    },
                )
        except IntegrityError:
            return False
        return True

    @off_loop
    def release_event(self, room_id: str, event_id: str) -> None:
        """Forget a claim, so that a later delivery of the event is processed again."""
        with self.engine.begin() as conn:
            room_nid = self._room_nid(conn, room_id, create=False)
            if room_nid is not None:
                conn.execute(_DELETE_PROCESSED, {"b_room_nid": room_nid, "b_event_id": event_id})

    @off_loop
    def is_processed(self, room_id: str, event_id: str) -> bool:
        query = (
            select(processed_events.c.processed_ts)
            .select_from(processed_events.join(rooms, rooms.c.room_nid == processed_events.c.room_nid))
            .where(sa.and_(rooms.c.room_id == room_id, processed_events.c.event_id == event_id))
        )
        with self.engine.begin() as conn:
            return conn.execute(query).first() is not None

    @off_loop
    def delete_processed_before(self, cutoff_ms: int) -> int:
        """Delete processed-event records older than ``cutoff_ms``, one room at a time so each
        delete is a range scan of the (room_nid, processed_ts) index. Returns rows deleted."""
        deleted = 0
        with self.engine.begin() as conn:
            room_nids = [row.room_nid for row in conn.execute(select(rooms.c.room_nid))]
        for room_nid in room_nids:
            with self.engine.begin() as conn:
                result = conn.execute(
                    processed_events.delete().where(
                        sa.and_(
                            processed_events.c.room_nid == room_nid,
                            processed_events.c.processed_ts < cutoff_ms,
                        )
                    )
                )
                deleted += max(result.rowcount, 0)
        return deleted

    # ---- writes -----------------------------------------------------------------------------

    @off_loop
    def replace_room(self, snapshot: RoomSnapshot) -> MemberDiff:
        """Replace a room's info and member list with ``snapshot`` in one transaction."""
        info = snapshot.info
        with self.engine.begin() as conn:
            room_nid = self._room_nid(conn, info.room_id, create=True)
            was_known = self._has_info(conn, room_nid)
            before = self._joined_user_ids(conn, room_nid)
            user_nids = self._intern_users(
                conn, {m.user_id: m.displayname for m in snapshot.members}
            )
            conn.execute(memberships.delete().where(memberships.c.room_nid == room_nid))
            rows = [
                {
                    "room_nid": room_nid,
                    "user_nid": user_nids[m.user_id],
                    "membership": m.membership,
                    "displayname": m.displayname,
                    "event_ts": m.event_ts,
                }
                for m in snapshot.members
            ]
            if rows:
                conn.execute(memberships.insert(), rows)
            conn.execute(room_info.delete().where(room_info.c.room_nid == room_nid))
            conn.execute(
                room_info.insert().values(
                    room_nid=room_nid,
                    name=info.name,
                    topic=info.topic,
                    canonical_alias=info.canonical_alias,
                    encrypted=info.encrypted,
                    creator=info.creator,
                    room_version=info.room_version,
                    replacement_room=info.replacement_room,
                    updated_at=now_ms(),
                )
            )
        after = {m.user_id for m in snapshot.members if m.membership == JOIN}
        return MemberDiff(
            room_id=info.room_id,
            added=tuple(sorted(after - before)),
            removed=tuple(sorted(before - after)),
            was_known=was_known,
        )

    @off_loop
    def forget_room(self, room_id: str) -> bool:
        """Delete a room's info and members (not its nid nor its processed events).
        Returns whether the room was known."""
        with self.engine.begin() as conn:
            room_nid = self._room_nid(conn, room_id, create=False)
            if room_nid is None:
                return False
            was_known = self._has_info(conn, room_nid)
            conn.execute(memberships.delete().where(memberships.c.room_nid == room_nid))
            conn.execute(room_info.delete().where(room_info.c.room_nid == room_nid))
            return was_known

    @off_loop
    def apply_membership(self, room_id: str, member: Member) -> Optional[bool]:
        """Store one member's new membership. None if the room is not tracked (no info row);
        False if the stored membership comes from a newer event; True if applied."""
        with self.engine.begin() as conn:
            room_nid = self._room_nid(conn, room_id, create=False)
            if not self._has_info(conn, room_nid):
                return None
            user_nid = self._intern_user(conn, member.user_id, member.displayname)
            key = {"b_room_nid": room_nid, "b_user_nid": user_nid}
            stored_ts = conn.execute(_SELECT_MEMBER_TS, key).scalar()
            values = {
                "membership": member.membership,
                "displayname": member.displayname,
                "event_ts": member.event_ts,
            }
            if stored_ts is None:
                conn.execute(_INSERT_MEMBER, {"room_nid": room_nid, "user_nid": user_nid, **values})
            elif stored_ts > member.event_ts:
                return False
            else:
                conn.execute(_UPDATE_MEMBER, {**key, **values})
            conn.execute(_TOUCH_ROOM, {"b_room_nid": room_nid, "b_now": now_ms()})
            return True

    @off_loop
    def update_room_info(self, room_id: str, changes: Dict[str, Any]) -> bool:
        """Set some RoomInfo fields of a tracked room. False if the room is not tracked."""
        allowed = {c.name for c in room_info.columns} - {"room_nid", "updated_at"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"not room info fields: {sorted(unknown)}")
        with self.engine.begin() as conn:
            room_nid = self._room_nid(conn, room_id, create=False)
            if not self._has_info(conn, room_nid):
                return False
            conn.execute(
                room_info.update()
                .where(room_info.c.room_nid == room_nid)
                .values(updated_at=now_ms(), **changes)
            )
            return True

    # ---- reads ------------------------------------------------------------------------------

    @off_loop
    def is_tracked(self, room_id: str) -> bool:
        """Whether the room is tracked (the bot is in it, as far as the store knows)."""
        with self.engine.begin() as conn:
            return self._has_info(conn, self._room_nid(conn, room_id, create=False))

    @off_loop
    def get_room(self, room_id: str) -> Optional[RoomInfo]:
        query = sa.text(_ROOMS_QUERY + " WHERE r.room_id = :room_id")
        with self.engine.begin() as conn:
            row = conn.execute(query, {"room_id": room_id}).first()
        return _room_from_row(row) if row is not None else None

    @off_loop
    def list_rooms(self) -> List[RoomInfo]:
        """Every room the bot is joined to, with member counts."""
        with self.engine.begin() as conn:
            return [_room_from_row(row) for row in conn.execute(sa.text(_ROOMS_QUERY))]

    @off_loop
    def joined_rooms_of(self, user_id: str) -> List[RoomInfo]:
        """Tracked rooms in which ``user_id`` is joined."""
        query = sa.text(_ROOMS_QUERY + " WHERE " + _JOINED_ROOMS_OF_USER)
        with self.engine.begin() as conn:
            return [_room_from_row(row) for row in conn.execute(query, {"user_id": user_id})]

    @off_loop
    def list_members(self, room_id: str, membership: Optional[str] = None) -> List[Member]:
        """Members of a tracked room (all non-leave memberships, or only ``membership``)."""
        query = (
            select(
                users.c.user_id,
                memberships.c.membership,
                memberships.c.displayname,
                memberships.c.event_ts,
            )
            .select_from(
                memberships.join(users, users.c.user_nid == memberships.c.user_nid).join(
                    rooms, rooms.c.room_nid == memberships.c.room_nid
                )
            )
            .where(rooms.c.room_id == room_id)
            .order_by(users.c.user_id)
        )
        if membership is None:
            query = query.where(memberships.c.membership != "leave")
        else:
            query = query.where(memberships.c.membership == membership)
        with self.engine.begin() as conn:
            return [
                Member(row.user_id, row.membership, row.displayname, int(row.event_ts))
                for row in conn.execute(query)
            ]

    @off_loop
    def user_displayname(self, user_id: str) -> Optional[str]:
        with self.engine.begin() as conn:
            query = select(users.c.displayname).where(users.c.user_id == user_id)
            return conn.execute(query).scalar()
