"""The store's methods for the web view's sign-in: the signing secret, one-time links, sessions
and API tokens. Secrets are stored only as their SHA-256 (the caller hashes them)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mautrix.types import RoomID, UserID

from .threads import Transaction

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    created_by: UserID
    created_at: int  # Unix ms
    revoked_at: int | None = None


class WebStore:
    """Mixed into RoomStore, whose writer and reader threads it uses."""

    def _write(self, work: Callable[[Transaction], T], single_statement: bool = False) -> asyncio.Future[T]:
        raise NotImplementedError

    def _read(self, work: Callable[[Transaction], T]) -> asyncio.Future[T]:
        raise NotImplementedError

    def web_secret(self) -> asyncio.Future[bytes]:
        """The signing secret, made (32 random bytes) the first time it is asked for."""
        made = secrets.token_hex(32)

        def job(txn: Transaction) -> bytes:
            txn.execute(
                "INSERT INTO roomstate_web_keys (name, value) VALUES ('signing', ?) ON CONFLICT (name) DO NOTHING",
                (made,),
            )
            row = txn.execute("SELECT value FROM roomstate_web_keys WHERE name = 'signing'").fetchone()
            return bytes.fromhex(str(row[0]))

        return self._write(job)

    def create_link(self, link_hash: str, user_id: UserID, expires_at: int) -> asyncio.Future[None]:
        def job(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO roomstate_web_links (link_hash, user_id, expires_at) VALUES (?, ?, ?)",
                (link_hash, user_id, expires_at),
            )

        return self._write(job)

    def use_link(self, link_hash: str, now: int) -> asyncio.Future[UserID | None]:
        """The link's user, if it exists, has not expired and was never used; it is used now (one
        atomic update: of two racing uses exactly one wins)."""

        def job(txn: Transaction) -> UserID | None:
            txn.execute(
                "UPDATE roomstate_web_links SET used_at = ? WHERE link_hash = ? AND used_at IS NULL AND expires_at > ?",
                (now, link_hash, now),
            )
            if txn.cur.rowcount != 1:
                return None
            row = txn.execute("SELECT user_id FROM roomstate_web_links WHERE link_hash = ?", (link_hash,)).fetchone()
            return UserID(str(row[0]))

        return self._write(job)

    def create_session(
        self, session_hash: str, user_id: UserID, csrf: str, now: int, expires_at: int
    ) -> asyncio.Future[None]:
        def job(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO roomstate_web_sessions (session_hash, user_id, csrf, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_hash, user_id, csrf, now, expires_at),
            )

        return self._write(job)

    def session(self, session_hash: str, now: int) -> asyncio.Future[tuple[UserID, str] | None]:
        """(user, CSRF token) of a session that has not expired, else None."""

        def job(txn: Transaction) -> tuple[UserID, str] | None:
            row = txn.execute(
                "SELECT user_id, csrf FROM roomstate_web_sessions WHERE session_hash = ? AND expires_at > ?",
                (session_hash, now),
            ).fetchone()
            return None if row is None else (UserID(str(row[0])), str(row[1]))

        return self._read(job)

    def end_sessions(self, *, user_id: UserID | None = None, session_hash: str | None = None) -> asyncio.Future[int]:
        """End one session, or all of a user's, or (neither given) every session; how many. A user's
        (everyone's) unused sign-in links go with them."""

        def job(txn: Transaction) -> int:
            if session_hash is not None:
                txn.execute("DELETE FROM roomstate_web_sessions WHERE session_hash = ?", (session_hash,))
                return max(txn.cur.rowcount, 0)
            # signing a user (or everyone) out also voids the links not used yet
            if user_id is not None:
                txn.execute("DELETE FROM roomstate_web_sessions WHERE user_id = ?", (user_id,))
                ended = max(txn.cur.rowcount, 0)
                txn.execute("DELETE FROM roomstate_web_links WHERE user_id = ?", (user_id,))
            else:
                txn.execute("DELETE FROM roomstate_web_sessions")
                ended = max(txn.cur.rowcount, 0)
                txn.execute("DELETE FROM roomstate_web_links")
            return ended

        return self._write(job)

    def delete_expired_web(self, now: int) -> asyncio.Future[None]:
        def job(txn: Transaction) -> None:
            txn.execute("DELETE FROM roomstate_web_sessions WHERE expires_at <= ?", (now,))
            txn.execute("DELETE FROM roomstate_web_links WHERE expires_at <= ?", (now,))

        return self._write(job)

    def create_token(self, token_hash: str, name: str, created_by: UserID, now: int) -> asyncio.Future[bool]:
        """Store a new API token; False if a token of that name exists (revoked ones too)."""

        def job(txn: Transaction) -> bool:
            if txn.execute("SELECT 1 FROM roomstate_api_tokens WHERE name = ?", (name,)).fetchone():
                return False
            txn.execute(
                "INSERT INTO roomstate_api_tokens (token_hash, name, created_by, created_at) VALUES (?, ?, ?, ?)",
                (token_hash, name, created_by, now),
            )
            return True

        return self._write(job)

    def tokens(self) -> asyncio.Future[list[ApiToken]]:
        def job(txn: Transaction) -> list[ApiToken]:
            rows = txn.execute(
                "SELECT name, created_by, created_at, revoked_at FROM roomstate_api_tokens ORDER BY name"
            ).fetchall()
            return [ApiToken(str(n), UserID(str(c)), int(at), None if r is None else int(r)) for n, c, at, r in rows]

        return self._read(job)

    def revoke_token(self, name: str, now: int) -> asyncio.Future[bool]:
        def job(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE roomstate_api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name)
            )
            return txn.cur.rowcount == 1

        return self._write(job)

    def token(self, token_hash: str) -> asyncio.Future[ApiToken | None]:
        """A token that was not revoked, by its hash."""

        def job(txn: Transaction) -> ApiToken | None:
            row = txn.execute(
                "SELECT name, created_by, created_at FROM roomstate_api_tokens"
                " WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
            return None if row is None else ApiToken(str(row[0]), UserID(str(row[1])), int(row[2]))

        return self._read(job)

    def direct_room(self, user_id: UserID) -> asyncio.Future[tuple[RoomID, int] | None]:
        """The direct room the bot made with ``user_id`` (the latest) and when (Unix ms)."""

        def job(txn: Transaction) -> tuple[RoomID, int] | None:
            row = txn.execute(
                "SELECT room_id, created_at FROM roomstate_direct_rooms WHERE user_id = ?", (user_id,)
            ).fetchone()
            return None if row is None else (RoomID(str(row[0])), int(row[1]))

        return self._read(job)

    def set_direct_room(self, user_id: UserID, room_id: RoomID, now: int) -> asyncio.Future[None]:
        def job(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO roomstate_direct_rooms (user_id, room_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id, created_at = excluded.created_at",
                (user_id, room_id, now),
            )

        return self._write(job)
