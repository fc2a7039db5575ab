"""Writing a full member list: the bulk path of a full sync, on the writer thread.

A room without stored members (the bot's first join) is written in bulk: the list is staged in a
temporary table in one pass (``executemany`` over the Member tuples on SQLite, ``COPY`` on
PostgreSQL), then users are interned and memberships inserted by two set-based statements.

A room with stored members is compared with what is stored, and only the rows that differ are
written: the stored rows are read as three aggregated columns (one string or array each, not one
Python tuple per row) and checked against the snapshot, member by member. A
resync of a 100k-member room where 1% changed reads 100k rows and writes 1k.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mautrix.types import RoomID, UserID

from ..models import INVITE, JOIN, LEAVE, NAMES_SAMPLED, Member, MemberDiff
from .checkpoints import ROW_SQL
from .interner import Interner
from .threads import Transaction
from .user_index import UserIndex

STAGED = "roomstate_staged_members"
STAGED_COLUMNS = {
    "sqlite": "user_id TEXT NOT NULL, membership TEXT NOT NULL, displayname TEXT",
    "postgresql": 'user_id TEXT COLLATE "C" NOT NULL, membership TEXT NOT NULL, displayname TEXT',
}
SMALL_WRITE = 32  # rows written one statement each; more go through the staging table
STAGE_SLICE = 10_000  # members staged at a time in a first sync on SQLite
_USER_ID = operator.itemgetter(0)
SEPARATOR = "\x1e"  # user IDs and memberships cannot contain it; a display name can (rarely)
NO_NAME = "\x00"  # stands for NULL: stored text never contains NUL (parsing replaces it)


def _stage(txn: Transaction, rows: Sequence[Sequence[Any]]) -> None:
    txn.dialect.create_temp_table(txn.cur, STAGED, STAGED_COLUMNS[txn.dialect.name])
    txn.dialect.bulk_insert(txn.cur, STAGED, ("user_id", "membership", "displayname"), rows)
    if not txn.dialect.is_sqlite and len(rows) >= 1000:
        # sorts and hashes of 100k rows in memory; no ANALYZE: a never-analyzed table is planned
        # by its actual size, which picks the same hash joins (and saves a pass over the rows)
        txn.execute("SET LOCAL work_mem = '64MB'")


def _intern_staged_users(txn: Transaction) -> None:
    """Create a user row for every staged user that has none."""
    txn.execute(
        f"INSERT INTO roomstate_users (user_id) SELECT s.user_id FROM {STAGED} s"
        " WHERE NOT EXISTS (SELECT 1 FROM roomstate_users u WHERE u.user_id = s.user_id)"
    )


def _upsert_staged(
    txn: Transaction, room_nid: int, room_is_empty: bool = False, returning: bool = False
) -> list[tuple[int, int, bool]] | None:
    """Write the staged rows into the room (into a room without rows: a plain insert). With
    ``returning`` (PostgreSQL), return the written rows as a checkpoint's rows, by user nid: the
    room is not read back for its first checkpoint."""
    conflict = (
        ""
        if room_is_empty
        else (
            " ON CONFLICT (room_nid, user_nid) DO UPDATE SET"
            " membership = excluded.membership, displayname = excluded.displayname"
        )
    )
    returned = returning and not txn.dialect.is_sqlite
    txn.execute(
        "INSERT INTO roomstate_memberships AS m (room_nid, user_nid, membership, displayname)"
        f" SELECT ?, u.user_nid, s.membership, s.displayname FROM {STAGED} s"
        f" JOIN roomstate_users u ON u.user_id = s.user_id WHERE true ORDER BY u.user_nid{conflict}"
        + (f" RETURNING {ROW_SQL}" if returned else ""),
        (room_nid,),
    )
    if not returned:
        return None
    rows = [(int(nid), int(code), bool(cut)) for nid, code, cut in txn.cur.fetchall()]
    rows.sort()  # already in nid order in practice; RETURNING does not promise it
    return rows


def _counts(members: Sequence[Member]) -> tuple[int, int]:
    """(joined, invited) of a member list (counted in Python: cheaper than asking the database)."""
    memberships = [m.membership for m in members]
    return memberships.count(JOIN), memberships.count(INVITE)


@dataclass
class Written:
    """What replace_members did: the diff of joined members, the new counts, and the changes
    (user_id, membership before, after, display name if it changed), unless it wrote ``all``."""

    diff: MemberDiff
    joined: int
    invited: int
    changes: list[tuple[UserID, str, str, str | None]] = field(default_factory=list)
    all: bool = False  # the room was not tracked: everything was inserted (a first sync)
    rows: list[tuple[int, int, bool]] | None = None  # with ``all``: the checkpoint rows, if returned


def replace_members(
    txn: Transaction,
    interner: Interner,
    user_index: UserIndex,
    room_nid: int,
    room_id: RoomID,
    members: Sequence[Member],
    counts: tuple[int, int] | None,
    want_rows: bool = False,
) -> Written:
    """Make the room's stored memberships equal ``members`` (non-leave, one per user).
    ``counts`` are the stored (joined, invited) counts, None for an untracked room. With
    ``want_rows``, a first sync returns its checkpoint rows where that is cheap (PostgreSQL)."""
    stored = None if counts is None else _stored(txn, room_nid)
    if counts is None or stored is None:
        return _insert_all(txn, user_index, room_nid, room_id, members, counts is not None, want_rows)
    return _write_differences(txn, interner, user_index, room_nid, room_id, members, stored, counts)


def _insert_all(
    txn: Transaction,
    user_index: UserIndex,
    room_nid: int,
    room_id: RoomID,
    members: Sequence[Member],
    was_known: bool,
    want_rows: bool,
) -> Written:
    joined, invited = _counts(members)
    rows: list[tuple[int, int, bool]] | None = []
    # SQLite keeps the staging table and the statements' sorts in its own memory: a slice at a
    # time bounds that (a 100k room whole took ~8 MiB more at its peak, for no speed). PostgreSQL
    # stages the room whole, in one slice, and so gets the checkpoint rows of all of it back.
    step = STAGE_SLICE if txn.dialect.is_sqlite else max(len(members), 1)
    for start in range(0, len(members), step):
        _stage(txn, members[start : start + step])  # the Member tuples are the rows: no Python loop
        _intern_staged_users(txn)
        rows = _upsert_staged(txn, room_nid, room_is_empty=True, returning=want_rows and not was_known)
    user_index.add_room(txn, room_nid, len(members))
    sample = itertools.islice((m.user_id for m in members if m.membership == JOIN), NAMES_SAMPLED)
    diff = MemberDiff(
        room_id, added_count=joined, added=tuple(sorted(sample)), rows_written=len(members), was_known=was_known
    )
    if not was_known:
        return Written(diff, joined, invited, all=True, rows=rows)
    # a tracked room that had no members stored (everyone had left): each one is a change
    changes = [(m.user_id, LEAVE, m.membership, m.displayname) for m in members if m.membership != LEAVE]
    return Written(diff, joined, invited, changes)


def _stored(txn: Transaction, room_nid: int) -> Iterable[tuple[UserID, str, str | None]] | None:
    """The room's stored memberships as (user_id, membership, displayname) triples, read as
    three aggregated columns (one string or array each, not one Python tuple per row); None if
    there are none. A display name may be None or ``NO_NAME``, both meaning none."""
    where = " FROM roomstate_memberships m JOIN roomstate_users u ON u.user_nid = m.user_nid WHERE m.room_nid = ?"
    if not txn.dialect.is_sqlite:  # arrays arrive as Python lists, NULLs as None
        row = txn.execute(
            f"SELECT array_agg(u.user_id), array_agg(m.membership), array_agg(m.displayname){where}", (room_nid,)
        ).fetchone()
        return zip(row[0], row[1], row[2], strict=True) if row and row[0] else None
    count, user_ids, memberships, names = txn.execute(
        f"SELECT COUNT(*), group_concat(u.user_id, ?), group_concat(m.membership, ?),"
        f" group_concat(COALESCE(m.displayname, ?), ?){where}",
        (SEPARATOR, SEPARATOR, NO_NAME, SEPARATOR, room_nid),
    ).fetchone()
    if not count:
        return None
    names_list = names.split(SEPARATOR)
    if len(names_list) != count:  # a display name contains the separator: read row by row
        return [
            (r[0], r[1], r[2])
            for r in txn.execute(f"SELECT u.user_id, m.membership, m.displayname{where}", (room_nid,)).fetchall()
        ]
    # names stay as read, NO_NAME for none: the caller compares them so (no pass over 100k names)
    return zip(user_ids.split(SEPARATOR), memberships.split(SEPARATOR), names_list, strict=True)


def _write_differences(
    txn: Transaction,
    interner: Interner,
    user_index: UserIndex,
    room_nid: int,
    room_id: RoomID,
    members: Sequence[Member],
    stored: Iterable[tuple[UserID, str, str | None]],
    counts: tuple[int, int],
) -> Written:
    incoming = dict(zip(map(_USER_ID, members), members, strict=True))
    changed: list[Member] = []
    gone: list[UserID] = []
    was: dict[UserID, str] = {}  # user -> stored membership, for the rows that differ
    renamed: set[UserID] = set()
    take = incoming.pop
    for user_id, membership, name in stored:
        member = take(user_id, None)
        if member is None:
            gone.append(user_id)
            was[user_id] = membership
            continue
        # a stored name of NO_NAME (SQLite's aggregate) is no name
        name_differs = member[2] != name and not (member[2] is None and name == NO_NAME)
        if name_differs or member[1] != membership:
            changed.append(member)
            was[user_id] = membership
            if name_differs:
                renamed.add(user_id)
    renamed.update(m.user_id for m in incoming.values() if m.displayname is not None)
    changed += incoming.values()  # not stored yet
    now = {m.user_id: m for m in changed}
    added = [m.user_id for m in changed if m.membership == JOIN and was.get(m.user_id) != JOIN]
    removed = [u for u, membership in was.items() if membership == JOIN and (u not in now or now[u].membership != JOIN)]
    invited_delta = sum(m.membership == INVITE for m in changed) - sum(m == INVITE for m in was.values())

    if gone:
        _delete_members(txn, room_nid, gone)
    if len(changed) <= SMALL_WRITE:
        for member in changed:
            user_nid = interner.user(txn, member.user_id)
            txn.execute(
                "INSERT INTO roomstate_memberships (room_nid, user_nid, membership, displayname)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (room_nid, user_nid) DO UPDATE SET"
                " membership = excluded.membership, displayname = excluded.displayname",
                (room_nid, user_nid, member.membership, member.displayname),
            )
            if member.user_id not in was:  # a new row
                user_index.add(txn, user_nid, room_nid)
    else:
        _stage(txn, changed)
        _intern_staged_users(txn)
        user_index.add_staged(txn, room_nid, STAGED)  # before the rows: it adds the new ones only
        _upsert_staged(txn, room_nid)
    diff = MemberDiff(
        room_id,
        added_count=len(added),
        removed_count=len(removed),
        added=tuple(heapq.nsmallest(NAMES_SAMPLED, added)),
        removed=tuple(heapq.nsmallest(NAMES_SAMPLED, removed)),
        rows_written=len(changed) + len(gone),
        was_known=True,
    )
    changes: list[tuple[UserID, str, str, str | None]] = [
        (m.user_id, was.get(m.user_id, LEAVE), m.membership, (m.displayname or "") if m.user_id in renamed else None)
        for m in changed
    ]
    changes += [(user_id, was[user_id], LEAVE, None) for user_id in gone]
    return Written(diff, counts[0] + len(added) - len(removed), counts[1] + invited_delta, changes)


def _delete_members(txn: Transaction, room_nid: int, user_ids: list[UserID]) -> None:
    if txn.dialect.is_sqlite or len(user_ids) <= SMALL_WRITE:
        txn.cur.executemany(
            txn.dialect.sql(
                "DELETE FROM roomstate_memberships WHERE room_nid = ?"
                " AND user_nid = (SELECT user_nid FROM roomstate_users WHERE user_id = ?)"
            ),
            [(room_nid, user_id) for user_id in user_ids],
        )
        return
    txn.dialect.create_temp_table(txn.cur, "roomstate_staged_gone", "user_id TEXT NOT NULL")
    txn.dialect.bulk_insert(txn.cur, "roomstate_staged_gone", ("user_id",), ((u,) for u in user_ids))
    txn.execute(
        "DELETE FROM roomstate_memberships WHERE room_nid = ? AND user_nid IN"
        " (SELECT u.user_nid FROM roomstate_staged_gone g JOIN roomstate_users u ON u.user_id = g.user_id)",
        (room_nid,),
    )
