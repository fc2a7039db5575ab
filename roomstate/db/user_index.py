"""Which rooms each user is in: the user → room index, written in batches (like an LSM tree).

An ordinary index on memberships by user gets one entry at a random place for every member of
every room the bot syncs (members arrive room by room, scattered over the user order), and every
commit writes each index page it touched once more: with a bot joining 1,000 rooms that was half
of all the time and write volume. So the index lives in two tables instead:

- ``roomstate_user_rooms``: (user, room) pairs, merged. Written in key order only: by a merge,
  or directly by a big first sync (a room's members, sorted), so each page is written once per
  merge, not once per commit.
- ``roomstate_user_rooms_new``: pairs added since the last merge. It stays small (a few hundred
  pages, hot in the cache), so a commit touches few of its pages; at ``MERGE_ROWS`` pairs it is
  merged into the first table and emptied, in the transaction that filled it.

Pairs are not removed when a membership ends: together the two tables hold a superset of the
stored memberships, and readers join each pair back to ``roomstate_memberships`` (a primary-key
lookup) for the truth. ``UserIndex.sweep_chunk`` deletes pairs without a membership, a range of
users at a time, with the periodic cleanup.
"""

from __future__ import annotations

from .dialect import Cursor
from .threads import Transaction

MERGE_ROWS = 50_000  # pairs in the new table that start a merge
DIRECT_ROWS = 2_000  # a first sync of at least this many members writes its pairs directly
SWEEP_USERS = 5_000  # users per sweep transaction (1M pairs: 63 of p50 ~10 ms, max 60 ms with 100k to delete)

# A user's memberships (alias m) for FROM: the rooms the index says they may be in, each joined
# to its membership row. Parameters: ``of_user(user_nid)``.
MEMBERSHIPS_OF_USER = (
    "(SELECT room_nid FROM roomstate_user_rooms WHERE user_nid = ?"
    " UNION SELECT room_nid FROM roomstate_user_rooms_new WHERE user_nid = ?) p"
    " JOIN roomstate_memberships m ON m.room_nid = p.room_nid AND m.user_nid = ?"
)


def of_user(user_nid: int) -> tuple[int, int, int]:
    """The parameters of MEMBERSHIPS_OF_USER."""
    return user_nid, user_nid, user_nid


class UserIndex:
    """Adds pairs and merges; its count of new pairs belongs to the writer thread."""

    def __init__(self) -> None:
        self.new_pairs = 0  # pairs added to the new table since the last merge (an estimate)

    def recount(self, cur: Cursor) -> None:
        """Count what the new table holds (at open, and after each sweep: a merge rolled back
        with its job, or pairs swept, leave the running count off)."""
        cur.execute("SELECT COUNT(*) FROM roomstate_user_rooms_new")
        self.new_pairs = int(cur.fetchone()[0])

    def add(self, txn: Transaction, user_nid: int, room_nid: int) -> None:
        """The user has a membership row in the room now."""
        txn.execute(
            "INSERT INTO roomstate_user_rooms_new (user_nid, room_nid) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (user_nid, room_nid),
        )
        self._added(txn, max(txn.cur.rowcount, 0))

    def add_room(self, txn: Transaction, room_nid: int, members: int) -> None:
        """Every membership row of the room (its first sync, ``members`` rows) is new."""
        table = "roomstate_user_rooms" if members >= DIRECT_ROWS else "roomstate_user_rooms_new"
        txn.execute(
            f"INSERT INTO {table} (user_nid, room_nid) SELECT user_nid, room_nid FROM roomstate_memberships"
            " WHERE room_nid = ? ORDER BY user_nid ON CONFLICT DO NOTHING",
            (room_nid,),
        )
        if table == "roomstate_user_rooms_new":
            self._added(txn, max(txn.cur.rowcount, 0))

    def add_staged(self, txn: Transaction, room_nid: int, staged: str) -> None:
        """The users of the ``staged`` table (user_id column, interned) are about to be written
        into the room: those without a membership row there yet get their pair."""
        txn.execute(
            "INSERT INTO roomstate_user_rooms_new (user_nid, room_nid) SELECT u.user_nid, ?"
            f" FROM {staged} s JOIN roomstate_users u ON u.user_id = s.user_id WHERE NOT EXISTS"
            " (SELECT 1 FROM roomstate_memberships m WHERE m.room_nid = ? AND m.user_nid = u.user_nid)"
            " ORDER BY u.user_nid ON CONFLICT DO NOTHING",
            (room_nid, room_nid),
        )
        self._added(txn, max(txn.cur.rowcount, 0))

    def _added(self, txn: Transaction, count: int) -> None:
        self.new_pairs += count
        if self.new_pairs >= MERGE_ROWS:
            self.merge(txn)

    def merge(self, txn: Transaction) -> None:
        """Move the new pairs into the merged table, in key order."""
        txn.execute(
            "INSERT INTO roomstate_user_rooms (user_nid, room_nid) SELECT user_nid, room_nid"
            " FROM roomstate_user_rooms_new WHERE true ORDER BY user_nid, room_nid ON CONFLICT DO NOTHING"
        )
        txn.execute("DELETE FROM roomstate_user_rooms_new")
        # if this job is rolled back, the pairs stay in the new table: merged next time (the
        # sweep recounts them)
        self.new_pairs = 0

    def sweep_chunk(self, txn: Transaction, from_user_nid: int) -> tuple[int, int | None]:
        """Delete the pairs of users ``from_user_nid`` up to SWEEP_USERS further that have no
        membership row. Returns (pairs deleted, the user to continue from or None when done)."""
        end = from_user_nid + SWEEP_USERS
        deleted = 0
        for table in ("roomstate_user_rooms", "roomstate_user_rooms_new"):
            txn.execute(
                f"DELETE FROM {table} WHERE user_nid >= ? AND user_nid < ? AND NOT EXISTS (SELECT 1 FROM"
                f" roomstate_memberships m WHERE m.room_nid = {table}.room_nid AND m.user_nid = {table}.user_nid)",
                (from_user_nid, end),
            )
            deleted += max(txn.cur.rowcount, 0)
        more = txn.execute("SELECT 1 FROM roomstate_users WHERE user_nid >= ? LIMIT 1", (end,)).fetchone()
        if more:
            return deleted, end
        self.recount(txn.cur)
        return deleted, None
