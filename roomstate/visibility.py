"""Who may see which rooms: the one visibility policy every reader asks (chat commands now, the
web view and API next).

``visibility`` in the config decides it:

- ``admins``: only the bot's admins get answers; everyone else is refused.
- ``shared`` (default): admins see every room; anyone else only the rooms they are joined to
  themselves, checked on every question (someone who leaves a room stops seeing it at once).
- ``everyone``: anybody sees every room the bot is in.

What a user asks about themselves (their own rooms, their own history) is never limited to the
rooms they are in now: it is theirs. Questions about every room at once (``!joins all``) and the
resync queue are for admins only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TypeVar

from mautrix.types import RoomID, UserID

from .config import Config

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scope:
    """What one asker may see, as of the moment it was made."""

    asker: UserID
    admin: bool = False
    refused: bool = False  # nothing at all
    rooms: frozenset[RoomID] | None = None  # the rooms the asker may see; None: every room

    @property
    def limited(self) -> bool:
        """Answers are limited to the rooms the asker is in (and say so)."""
        return not self.refused and self.rooms is not None

    def sees(self, room_id: RoomID) -> bool:
        return not self.refused and (self.rooms is None or room_id in self.rooms)

    def visible(self, items: Iterable[T], room_of: Callable[[T], RoomID]) -> list[T]:
        """The items in rooms the asker may see."""
        return [item for item in items if self.sees(room_of(item))]

    def about(self, subject: UserID) -> Scope:
        """The scope of a question about ``subject``: the asker's own rooms and history are
        theirs to see in full (unless they are refused everything)."""
        if subject == self.asker and not self.refused:
            return Scope(self.asker, self.admin)
        return self


class Visibility:
    """The visibility policy: ``scope(asker)`` says what the asker may see right now."""

    def __init__(self, config: Config, joined_rooms_of: Callable[[UserID], Awaitable[Collection[RoomID]]]) -> None:
        self.config = config
        self._joined_rooms_of = joined_rooms_of

    def is_admin(self, user_id: UserID) -> bool:
        return self.config.is_admin(user_id)

    async def scope(self, asker: UserID) -> Scope:
        admin = self.is_admin(asker)
        mode = self.config.visibility
        if admin or mode == "everyone":
            return Scope(asker, admin)
        if mode == "admins":
            return Scope(asker, refused=True, rooms=frozenset())
        return Scope(asker, rooms=frozenset(await self._joined_rooms_of(asker)))

    def may_see_every_room_at_once(self, asker: UserID) -> bool:
        """Summaries across all rooms (``!joins all``) and the resync queue: admins only."""
        return self.is_admin(asker)
