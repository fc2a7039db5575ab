"""Matrix ID -> numeric ID (``room_nid``, ``user_nid``), for rooms and users, on the writer thread.

The numeric IDs never leave ``db/``. Cached entries are only ever rows that have committed, and
nids are never deleted or reused, so a cached entry never goes stale.
"""

from __future__ import annotations

from collections.abc import Iterable

from mautrix.types import RoomID, UserID

from ..caches import IdleCache
from .threads import Transaction

CACHE_SIZE_ROOMS = 20_000
CACHE_SIZE_USERS = 200_000


class Interner:
    """Matrix ID -> numeric ID, for rooms and users; writer thread only. Cached entries are only
    ever rows that have committed, and nids are never deleted or reused, so they never go stale."""

    def __init__(self, idle_seconds: float) -> None:
        self.rooms: IdleCache[str, int] = IdleCache(CACHE_SIZE_ROOMS, idle_seconds)
        self.users: IdleCache[str, int] = IdleCache(CACHE_SIZE_USERS, idle_seconds)

    def room(self, txn: Transaction, room_id: RoomID, create: bool = True) -> int | None:
        nid = self.rooms.get(room_id)
        if nid is not None:
            return nid
        row = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
        if row is not None:
            nid = int(row[0])
        elif create:
            nid = txn.dialect.insert_returning_id(
                txn.cur, txn.dialect.sql("INSERT INTO roomstate_rooms (room_id) VALUES (?)"), (room_id,), "room_nid"
            )
        else:
            return None
        found = nid
        txn.after_commit(lambda: self.rooms.put(room_id, found))
        return nid

    def cached_user(self, user_id: UserID) -> int | None:
        """The user's nid if it is in the cache (no lookup)."""
        return self.users.get(user_id)

    def found_user(self, txn: Transaction, user_id: UserID, nid: int | None) -> int:
        """The user's nid, given what a lookup of ``user_id`` in this transaction found
        (``None``: not stored yet, so it is stored now); cached once the transaction commits."""
        if nid is None:
            nid = txn.dialect.insert_returning_id(
                txn.cur, txn.dialect.sql("INSERT INTO roomstate_users (user_id) VALUES (?)"), (user_id,), "user_nid"
            )
        found = int(nid)
        txn.after_commit(lambda: self.users.put(user_id, found))
        return found

    def user(self, txn: Transaction, user_id: UserID) -> int:
        nid = self.users.get(user_id)
        if nid is not None:
            return nid
        if txn.dialect.is_sqlite:  # insert first: one statement for a new user
            txn.execute("INSERT INTO roomstate_users (user_id) VALUES (?) ON CONFLICT DO NOTHING", (user_id,))
            if txn.cur.rowcount == 1:
                return self.found_user(txn, user_id, txn.cur.lastrowid)
        # (PostgreSQL looks up first: a conflicting insert would still use up a serial)
        row = txn.execute("SELECT user_nid FROM roomstate_users WHERE user_id = ?", (user_id,)).fetchone()
        return self.found_user(txn, user_id, None if row is None else row[0])

    def known_users(self, txn: Transaction, user_ids: Iterable[str]) -> dict[str, int]:
        """The nids of users already stored (from the cache, the rest in batched lookups)."""
        found: dict[str, int] = {}
        missing: list[str] = []
        for user_id in user_ids:
            nid = self.users.get(user_id)
            if nid is None:
                missing.append(user_id)
            else:
                found[user_id] = nid
        found.update(
            (str(user_id), int(nid))
            for user_id, nid in txn.execute_in(
                "SELECT user_id, user_nid FROM roomstate_users WHERE user_id IN ({marks})", missing
            )
        )
        return found

    def sweep(self, idle_seconds: float) -> None:
        for cache in (self.rooms, self.users):
            cache.idle_seconds = idle_seconds
            cache.sweep()
