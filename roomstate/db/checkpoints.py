"""Checkpoints: a room's member set at a history ``seq``, stored as reusable blocks (Dendrite's
state snapshots, for memberships), and the past rebuilt from them.

A block holds the sorted user nids and membership codes of a slice of a room, cut where a nid's
hash says so (content-defined chunking, ~512 members a block): a change touches one block, and a
later checkpoint reuses every block of the one before it that did not change. The membership at
any past time is the nearest checkpoint before it plus the history rows after it.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from ..models import JOIN, LEAVE
from .codes import CODES
from .threads import IN_CHUNK, Transaction

BLOCK_SHIFT = 23  # a block ends where the top 9 bits of a nid's 32-bit hash are 0: ~512 members
_HASH = 2654435761  # Knuth's multiplicative hash

Members = dict[int, int]  # user_nid -> membership code (no leaves)


def _words(values: Iterable[int]) -> bytes:
    """Unsigned 32-bit little-endian words (portable across machines)."""
    words = array("I", values)
    if sys.byteorder == "big":
        words.byteswap()
    return words.tobytes()


def _unwords(blob: bytes) -> array[int]:
    words = array("I")
    words.frombytes(blob)
    if sys.byteorder == "big":
        words.byteswap()
    return words


def block_list(blob: bytes | None) -> list[int]:
    """The block nids of a checkpoint (empty for "the bot stopped tracking the room")."""
    return [] if blob is None else list(_unwords(bytes(blob)))


def is_cut(user_nid: int) -> bool:
    """Whether a block ends at this nid (content-defined: a change moves no boundary but its own,
    so the other blocks of the room stay byte-identical)."""
    return ((user_nid * _HASH) & 0xFFFFFFFF) >> BLOCK_SHIFT == 0


# the same in SQL, with the membership as its code: rows for _chunks straight from the database
CUT_SQL = f"(((m.user_nid * {_HASH}) & 4294967295) >> {BLOCK_SHIFT}) = 0"
_CODE_SQL = "CASE m.membership " + " ".join(f"WHEN '{name}' THEN {code}" for name, code in CODES.items()) + " END"
# a membership row (table alias m) as the (user_nid, code, is_cut) row a checkpoint is made of
ROW_SQL = f"m.user_nid, {_CODE_SQL}, {CUT_SQL}"


def _block(nids: array[int], codes: bytearray) -> bytes:
    if sys.byteorder == "big":
        nids.byteswap()
    return len(nids).to_bytes(4, "little") + nids.tobytes() + codes


def _chunks(rows: Iterable[tuple[int, int, bool]], counted: list[int] | None = None) -> Iterator[bytes]:
    """Sorted (user_nid, code, is_cut) rows, cut into blocks, each encoded as its member count
    (4 bytes), the nids (4 bytes each) and one byte of membership code each. Streams: ``rows``
    may be a cursor, and only one block is held at a time. Adds the number of rows to
    ``counted[0]``."""
    nids: array[int] = array("I")
    codes = bytearray()
    count = 0
    for nid, code, cut in rows:
        nids.append(nid)
        codes.append(code)
        if cut:
            count += len(nids)
            yield _block(nids, codes)
            nids, codes = array("I"), bytearray()
    if nids:
        count += len(nids)
        yield _block(nids, codes)
    if counted is not None:
        counted[0] += count


STORED_CHUNK = 20_000  # members read per statement by stored_blocks
_DIGIT_CODES = bytes.maketrans(b"0123456789", bytes(range(10)))


def stored_blocks(txn: Transaction, room_nid: int, counted: list[int] | None = None) -> Iterator[bytes]:
    """SQLite: the room's stored memberships as ``_chunks`` cuts them into blocks, read
    STORED_CHUNK members at a time as two aggregated strings (the nids in hex, the codes as
    digits) rather than one Python tuple per member: a first sync's checkpoint of many rooms
    took a sixth of its time in that loop. Adds the number of members to ``counted[0]``."""
    nids: array[int] = array("I")
    codes = bytearray()
    after, count = 0, 0
    while True:
        found, last, hex_nids, digits = txn.execute(
            "SELECT COUNT(*), MAX(user_nid), group_concat(hex_nid, ''), group_concat(code, '') FROM ("
            f" SELECT m.user_nid AS user_nid, printf('%08x', m.user_nid) AS hex_nid, {_CODE_SQL} AS code"
            " FROM roomstate_memberships m WHERE m.room_nid = ? AND m.user_nid > ? ORDER BY m.user_nid LIMIT ?)",
            (room_nid, after, STORED_CHUNK),
        ).fetchone()
        if not found:
            break
        chunk = array("I", bytes.fromhex(hex_nids))  # big-endian words
        if sys.byteorder == "little":
            chunk.byteswap()
        chunk_codes = digits.encode("ascii").translate(_DIGIT_CODES)
        start = 0
        for index, nid in enumerate(chunk):
            if nid <= after:  # the aggregate's order is the subquery's in SQLite; never assume it
                raise RuntimeError(f"room {room_nid}'s members were read back out of order")
            after = nid
            if ((nid * _HASH) & 0xFFFFFFFF) >> BLOCK_SHIFT == 0:  # is_cut, inline: once per member
                nids.extend(chunk[start : index + 1])
                codes += chunk_codes[start : index + 1]
                start = index + 1
                count += len(nids)
                yield _block(nids, codes)
                nids, codes = array("I"), bytearray()
        nids.extend(chunk[start:])
        codes += chunk_codes[start:]
        if after != int(last) or len(chunk) != found or len(chunk_codes) != found:
            raise RuntimeError(f"room {room_nid}'s members were read back inconsistently")
    if nids:
        count += len(nids)
        yield _block(nids, codes)
    if counted is not None:
        counted[0] += count


def _blocks(txn: Transaction, nids: list[int]) -> dict[int, bytes]:
    rows = txn.execute_in("SELECT block_nid, members FROM roomstate_history_blocks WHERE block_nid IN ({marks})", nids)
    return {int(nid): bytes(blob) for nid, blob in rows}


def latest(txn: Transaction, room_nid: int, seq: int = 2**62) -> tuple[int, list[int] | None] | None:
    """(seq, block nids or None for "not tracked") of the room's last checkpoint at or before seq."""
    row = txn.execute(
        "SELECT seq, blocks FROM roomstate_history_checkpoints WHERE room_nid = ? AND seq <= ?"
        " ORDER BY seq DESC LIMIT 1",
        (room_nid, seq),
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), None if row[1] is None else block_list(row[1])


def blocks_of(members: Members | Iterable[tuple[int, int, bool]], counted: list[int] | None = None) -> Iterator[bytes]:
    """``members`` (a dict, or rows as ``current_rows`` gives them) cut into blocks; adds the
    number of members to ``counted[0]``."""
    if isinstance(members, dict):
        members = [(nid, code, is_cut(nid)) for nid, code in sorted(members.items())]
    return _chunks(members, counted)


def write_checkpoint(
    txn: Transaction, room_nid: int, seq: int, blocks: Iterable[bytes], even_if_unchanged: bool = False
) -> int:
    """Store a member set, cut into ``blocks`` (``blocks_of``, ``stored_blocks``), as the room's
    checkpoint at ``seq``, reusing the blocks of the checkpoint before it that did not change. If
    nothing did, the previous checkpoint still holds and none is written, unless
    ``even_if_unchanged`` (a new base for retention). Returns how many new blocks."""
    previous = latest(txn, room_nid, seq)
    previous_nids = previous[1] or [] if previous else []
    known = {blob: nid for nid, blob in _blocks(txn, previous_nids).items()}
    block_nids: list[int] = []
    written = 0
    for blob in blocks:
        nid = known.get(blob)
        if nid is None:
            nid = known[blob] = txn.dialect.insert_returning_id(
                txn.cur,
                txn.dialect.sql("INSERT INTO roomstate_history_blocks (members) VALUES (?)"),
                (blob,),
                "block_nid",
            )
            written += 1
        block_nids.append(nid)
    if previous is not None and previous[1] == block_nids and not even_if_unchanged:
        return 0  # unchanged since the previous checkpoint: it still holds
    txn.execute(
        "INSERT INTO roomstate_history_checkpoints (room_nid, seq, blocks) VALUES (?, ?, ?)",
        (room_nid, seq, _words(block_nids)),
    )
    return written


def members_at(
    txn: Transaction,
    room_nid: int,
    seq: int,
    known: tuple[int, Members] | None = None,
    decoded: dict[int, Members] | None = None,
    forward_only: bool = False,
) -> Members | None:
    """The room's non-leave members after history row ``seq``, or None if the bot did not track
    the room then. Rebuilt from the nearer of the checkpoints around ``seq`` (forward with each
    row's membership from the one before, backward with each row's previous membership from the
    one after), or forward from ``known`` (the members after an earlier seq, left unmodified) when
    that is at least as recent. ``decoded`` caches decoded checkpoints between calls.
    ``forward_only`` for the writer: rows deferred to its commit are not in the table yet, while
    a checkpoint after them may already be."""
    base = latest(txn, room_nid, seq)
    if base is None or base[1] is None:
        return None
    if known is not None and known[0] >= base[0]:
        return _replay(txn, room_nid, dict(known[1]), known[0], seq, forward=True)
    cache = {} if decoded is None else decoded
    after = None if forward_only else _next(txn, room_nid, seq)
    if after is not None and after[1] is not None and after[0] - seq < seq - base[0]:
        return _replay(txn, room_nid, dict(_decoded(txn, (after[0], after[1]), cache)), seq, after[0], forward=False)
    return _replay(txn, room_nid, dict(_decoded(txn, (base[0], base[1]), cache)), base[0], seq, forward=True)


def _next(txn: Transaction, room_nid: int, seq: int) -> tuple[int, list[int] | None] | None:
    """The room's first checkpoint after ``seq``."""
    row = txn.execute(
        "SELECT seq, blocks FROM roomstate_history_checkpoints WHERE room_nid = ? AND seq > ? ORDER BY seq LIMIT 1",
        (room_nid, seq),
    ).fetchone()
    return None if row is None else (int(row[0]), None if row[1] is None else block_list(row[1]))


def _decoded(txn: Transaction, checkpoint: tuple[int, list[int]], cache: dict[int, Members]) -> Members:
    found = cache.get(checkpoint[0])
    if found is None:
        found = cache[checkpoint[0]] = _decode_all(txn, checkpoint[1])
    return found


def _replay(txn: Transaction, room_nid: int, state: Members, low: int, high: int, forward: bool) -> Members:
    """Apply the room's rows with ``low < seq <= high`` to ``state``: forward, each user's last
    membership; backward (``state`` is after ``high``, the result after ``low``), each user's
    previous membership before their first row. dict() keeps the last row of each user."""
    column, order = ("membership", "") if forward else ("previous", " DESC")
    changes = dict(
        txn.execute(
            f"SELECT user_nid, {column} FROM roomstate_history WHERE room_nid = ? AND seq > ? AND seq <= ?"
            f" ORDER BY seq{order}",
            (room_nid, low, high),
        ).fetchall()
    )
    state.update(changes)
    leave = CODES[LEAVE]
    for user_nid in [nid for nid, code in changes.items() if code == leave]:
        del state[user_nid]
    return state


def _decode_all(txn: Transaction, block_nids: list[int]) -> Members:
    """The members of a checkpoint with these blocks, decoded in bulk."""
    blocks = _blocks(txn, block_nids)
    nids: array[int] = array("I")
    codes = bytearray()
    for block_nid in block_nids:
        blob = blocks[block_nid]
        count = int.from_bytes(blob[:4], "little")
        nids.extend(_unwords(blob[4 : 4 + 4 * count]))
        codes += blob[4 + 4 * count :]
    return dict(zip(nids, codes, strict=True))


def joined_count(txn: Transaction, block_nids: list[int]) -> int:
    """How many of the checkpoint's members are joined (counted in the blocks' code bytes)."""
    join, total = CODES[JOIN], 0
    for blob in _blocks(txn, block_nids).values():
        count = int.from_bytes(blob[:4], "little")
        total += blob.count(join, 4 + 4 * count)
    return total


def member_count(txn: Transaction, block_nids: list[int]) -> int:
    """How many members the checkpoint with these blocks holds."""
    return sum((len(blob) - 4) // 5 for blob in _blocks(txn, block_nids).values())


def stop(txn: Transaction, room_nid: int, seq: int) -> None:
    """From ``seq`` on the bot does not track the room: a checkpoint without blocks."""
    txn.execute(
        "INSERT INTO roomstate_history_checkpoints (room_nid, seq, blocks) VALUES (?, ?, NULL)", (room_nid, seq)
    )


def current_rows(txn: Transaction, room_nid: int) -> Generator[tuple[int, int, bool], None, None]:
    """The room's stored memberships as (user_nid, code, is_cut) rows, by nid (for a checkpoint),
    read as they are consumed (a cursor of their own: a 100k-member room is not held in memory as
    100k tuples, 10 MiB, while the checkpoint is written)."""
    cur = txn.cur.connection.cursor()
    try:
        cur.execute(
            txn.dialect.sql(f"SELECT {ROW_SQL} FROM roomstate_memberships m WHERE m.room_nid = ? ORDER BY m.user_nid"),
            (room_nid,),
        )
        yield from cur
    finally:
        cur.close()


_OLDEST = " FROM roomstate_history WHERE room_nid = ? AND seq <= ? ORDER BY seq LIMIT ?"  # compact's rows


def compact(
    txn: Transaction,
    room_nid: int,
    cutoff: int,
    limit: int,
    before_delete: Callable[[Transaction, list[tuple[int, int, Any]]], None] | None = None,
) -> int:
    """Forget the room's history at or before seq ``cutoff``: the membership at the last row
    before it becomes a checkpoint (the base of what is kept), then up to ``limit`` older rows
    are deleted and, once none are left, the older checkpoints with the blocks only they used (and
    a base saying "not tracked" with nothing after it). ``before_delete`` gets the (room_nid, seq,
    event_hash) of the rows about to be deleted, in the same transaction. Returns how many rows
    were deleted."""
    base = latest(txn, room_nid, cutoff)
    last_row = txn.execute(
        "SELECT MAX(seq) FROM roomstate_history WHERE room_nid = ? AND seq <= ?", (room_nid, cutoff)
    ).fetchone()[0]
    upto = None if base is None else base[0]
    if last_row is not None and (upto is None or int(last_row) > upto):
        upto = int(last_row)
        members = members_at(txn, room_nid, upto, forward_only=True)
        if members is not None:
            write_checkpoint(txn, room_nid, upto, blocks_of(members), even_if_unchanged=True)
            base = latest(txn, room_nid, upto)
    if upto is None:
        return 0
    if before_delete is not None:
        doomed = txn.execute(f"SELECT room_nid, seq, event_hash{_OLDEST}", (room_nid, upto, limit)).fetchall()
        before_delete(txn, doomed)
    txn.execute(
        f"DELETE FROM roomstate_history WHERE room_nid = ? AND seq IN (SELECT seq{_OLDEST})",
        (room_nid, room_nid, upto, limit),
    )
    deleted = max(txn.cur.rowcount, 0)
    if deleted < limit and base is not None:
        base_seq = base[0]
        if base[1] is None and latest(txn, room_nid) == base:  # untracked ever since: nothing to keep
            base_seq += 1
        _delete_checkpoints_before(txn, room_nid, base_seq)
    return deleted


def _delete_checkpoints_before(txn: Transaction, room_nid: int, seq: int) -> None:
    """Delete the room's checkpoints before ``seq`` and the blocks no later one of the room uses
    (a block is only ever shared between checkpoints of one room)."""
    old: set[int] = set()
    kept: set[int] = set()
    for checkpoint_seq, blob in txn.execute(
        "SELECT seq, blocks FROM roomstate_history_checkpoints WHERE room_nid = ?", (room_nid,)
    ).fetchall():
        (old if int(checkpoint_seq) < seq else kept).update(block_list(blob))
    txn.execute("DELETE FROM roomstate_history_checkpoints WHERE room_nid = ? AND seq < ?", (room_nid, seq))
    unused = sorted(old - kept)
    for start in range(0, len(unused), IN_CHUNK):
        chunk = tuple(unused[start : start + IN_CHUNK])
        txn.execute(f"DELETE FROM roomstate_history_blocks WHERE block_nid IN ({', '.join('?' * len(chunk))})", chunk)


def tracked_rooms(txn: Transaction) -> list[int]:
    """Rooms whose latest checkpoint holds members (not "not tracked")."""
    rows = txn.execute(
        "SELECT c.room_nid FROM roomstate_history_checkpoints c WHERE c.blocks IS NOT NULL"
        " AND c.seq = (SELECT MAX(l.seq) FROM roomstate_history_checkpoints l WHERE l.room_nid = c.room_nid)"
    ).fetchall()
    return [int(row[0]) for row in rows]


def tracked_since_many(txn: Transaction, room_nids: Iterable[int]) -> dict[int, int]:
    """room_nid -> the seq of the first checkpoint of its current tracked span (after its last
    "not tracked" checkpoint); rooms not tracked now are left out."""
    rows = txn.execute_in(
        "SELECT c.room_nid, MIN(c.seq) FROM roomstate_history_checkpoints c WHERE c.blocks IS NOT NULL"
        " AND c.seq > COALESCE((SELECT MAX(n.seq) FROM roomstate_history_checkpoints n"
        " WHERE n.room_nid = c.room_nid AND n.blocks IS NULL), -1) AND c.room_nid IN ({marks}) GROUP BY c.room_nid",
        sorted(set(room_nids)),
    )
    return {int(room_nid): int(seq) for room_nid, seq in rows}


def tracked_after(txn: Transaction, room_nid: int, seq: int) -> int | None:
    """The seq of the room's first checkpoint with members after ``seq`` (tracking began again)."""
    row = txn.execute(
        "SELECT MIN(seq) FROM roomstate_history_checkpoints WHERE room_nid = ? AND seq > ? AND blocks IS NOT NULL",
        (room_nid, seq),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def rooms_to_compact(txn: Transaction, cutoff: int) -> list[int]:
    """Rooms with history to forget at ``cutoff``: rows at or before it (found on the seq index),
    or more than one checkpoint at or before it, or only "not tracked" since before it."""
    rows = txn.execute(
        "SELECT DISTINCT room_nid FROM roomstate_history WHERE seq <= ?"
        " UNION SELECT room_nid FROM roomstate_history_checkpoints WHERE seq <= ?"
        " GROUP BY room_nid HAVING COUNT(*) > 1"
        " UNION SELECT c.room_nid FROM roomstate_history_checkpoints c WHERE c.blocks IS NULL AND c.seq <= ?"
        " AND c.seq = (SELECT MAX(l.seq) FROM roomstate_history_checkpoints l WHERE l.room_nid = c.room_nid)",
        (cutoff, cutoff, cutoff),
    ).fetchall()
    return sorted(int(row[0]) for row in rows)
