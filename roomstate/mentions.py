"""Finding the user a command argument means: a plain MXID, a pill, or a matrix.to/matrix: link."""

from __future__ import annotations

import enum
import re
from urllib.parse import unquote

from mautrix.types import MessageEventContent, UserID

from .parsing import is_user_id

_LINKED_USER_RE = re.compile(r"""(?:https://matrix\.to/#/|matrix:u/)(@?[^"'\s<>?/]+)""", re.IGNORECASE)


class Problem(enum.Enum):
    MISSING = "missing"
    NOT_A_USER_ID = "not a user ID"
    UNKNOWN = "unknown"


class BadUserArgument(ValueError):
    """The argument does not name a user."""

    def __init__(self, problem: Problem, argument: str) -> None:
        super().__init__(f"{problem.value}: {argument!r}")
        self.problem = problem
        self.argument = argument


def _linked_users(text: str) -> list[UserID]:
    found: list[UserID] = []
    for match in _LINKED_USER_RE.finditer(text or ""):
        user_id = unquote(match.group(1))
        user_id = user_id if user_id.startswith("@") else "@" + user_id
        if is_user_id(user_id) and user_id not in found:
            found.append(UserID(user_id))
    return found


def resolve_user(argument: str | None, content: MessageEventContent | None, bot_user_id: UserID) -> UserID:
    """The user ID a command argument refers to; raises BadUserArgument."""
    argument = (argument or "").strip()
    first = argument.split()[0] if argument else ""
    if is_user_id(first):
        return UserID(first)
    formatted = getattr(content, "formatted_body", None)
    linked = _linked_users(first) or _linked_users(formatted if isinstance(formatted, str) else "")
    mentions = content.get("m.mentions") if content is not None else None
    mentioned = mentions.get("user_ids") if isinstance(mentions, dict) else None
    if isinstance(mentioned, list):
        linked += [UserID(u) for u in mentioned if is_user_id(u) and u not in linked]
    linked = [u for u in linked if u != bot_user_id] or linked
    if linked:
        return linked[0]
    if not argument:
        raise BadUserArgument(Problem.MISSING, argument)
    if first.startswith("@"):
        raise BadUserArgument(Problem.NOT_A_USER_ID, first)
    raise BadUserArgument(Problem.UNKNOWN, argument)
