"""Sign-in for the web view, and the API's bearer tokens.

- A **sign-in link** is one-time and personal: ``!dashboard`` sends it to the asker in a direct
  room. It is ``<nonce>.<signature>``; the nonce's SHA-256 is stored with the user and an expiry
  (``web.link_minutes``), and it is used up in one atomic update. Opening it shows a page whose
  button signs in (a POST): a client that fetches the link for a preview uses nothing up.
- A **session** is ``<id>.<signature>`` in an HttpOnly, SameSite=Strict cookie (Secure when the
  public URL is https) for ``web.session_hours``; stored by the SHA-256 of the ID, with a CSRF
  token for the forms. Every request looks the session up again.
- An **API token** is created by an admin in chat, shown once (in a direct room), stored hashed,
  and acts for the admin who made it, as long as that user is still an admin; revoked in chat.

Signatures are HMAC-SHA-256 with a secret the plugin made and keeps in its database (never in
the configuration the manager shows); every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from mautrix.types import UserID

from ..config import Config
from ..db import RoomStore
from ..db.web_store import ApiToken

TOKEN_PREFIX = "rs_"


def digest(secret_part: str) -> str:
    """What is stored of a secret: its SHA-256, in hex."""
    return hashlib.sha256(secret_part.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    user_id: UserID
    csrf: str
    key: str  # the stored hash (to end this session)


class WebAuth:
    def __init__(self, store: RoomStore, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._secret: bytes | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def _sign(self, purpose: str, value: str) -> str:
        if self._secret is None:
            self._secret = await self.store.web_secret()
        mac = hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:40]

    async def _signed(self, purpose: str, token: str | None) -> str | None:
        """The value of a ``value.signature`` token whose signature is right, else None."""
        if not token or token.count(".") != 1 or len(token) > 200:
            return None
        value, signature = token.split(".")
        expected = await self._sign(purpose, value)
        return value if hmac.compare_digest(signature.encode(), expected.encode()) else None

    # ---- sign-in links and sessions --------------------------------------------------------------

    async def new_link(self, user_id: UserID) -> str:
        """A one-time sign-in token for ``user_id`` (what goes after ``?t=`` in the link)."""
        nonce = secrets.token_urlsafe(32)
        expires = self._now_ms() + int(self.config.web_link_seconds * 1000)
        await self.store.create_link(digest(nonce), user_id, expires)
        return f"{nonce}.{await self._sign('link', nonce)}"

    async def link_is_plausible(self, token: str | None) -> bool:
        """Whether a link's signature is right (the page that offers to sign in shows nothing else)."""
        return await self._signed("link", token) is not None

    async def use_link(self, token: str | None) -> tuple[str, Session] | None:
        """Sign in with a link: (cookie value, session), or None for a forged, expired or used link."""
        nonce = await self._signed("link", token)
        if nonce is None:
            return None
        user_id = await self.store.use_link(digest(nonce), self._now_ms())
        if user_id is None:
            return None
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = self._now_ms()
        key = digest(session_id)
        await self.store.create_session(key, user_id, csrf, now, now + int(self.config.web_session_seconds * 1000))
        return f"{session_id}.{await self._sign('session', session_id)}", Session(user_id, csrf, key)

    async def session(self, cookie: str | None) -> Session | None:
        session_id = await self._signed("session", cookie)
        if session_id is None:
            return None
        key = digest(session_id)
        found = await self.store.session(key, self._now_ms())
        return None if found is None else Session(found[0], found[1], key)

    async def sign_out(self, session: Session) -> None:
        await self.store.end_sessions(session_hash=session.key)

    async def sign_out_user(self, user_id: UserID) -> int:
        return await self.store.end_sessions(user_id=user_id)

    async def sign_out_everyone(self) -> int:
        return await self.store.end_sessions()

    # ---- API tokens ------------------------------------------------------------------------------

    async def new_token(self, name: str, admin: UserID) -> str | None:
        """A new API token named ``name`` acting for ``admin`` (None: the name is taken)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        if not await self.store.create_token(digest(token), name, admin, self._now_ms()):
            return None
        return token

    async def tokens(self) -> list[ApiToken]:
        return await self.store.tokens()

    async def revoke_token(self, name: str) -> bool:
        return await self.store.revoke_token(name, self._now_ms())

    async def token_user(self, authorization: str | None) -> UserID | None:
        """Whom an ``Authorization: Bearer …`` header acts for: the admin who made the token, while
        the token is not revoked and that user is still an admin."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        found = await self.store.token(digest(token))
        if found is None:
            return None
        if not self.config.is_admin(found.created_by):  # revoked for good, not just while not an admin
            await self.store.revoke_token(found.name, self._now_ms())
            return None
        return found.created_by
