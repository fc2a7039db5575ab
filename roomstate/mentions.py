"""Finding the user a command argument means: a plain MXID, a pill, or a matrix.to/matrix: link."""
from __future__ import annotations

import re
from typing import Any, List
from urllib.parse import unquote

from .snapshot import is_user_id

_LINKED_USER_RE = re.compile(
    r"""(?:https://matrix\.to/#/|matrix:u/)(@?[^"'\s<>?/]+)""", re.IGNORECASE
)


class BadUserArgument(ValueError):
    """The argument does not name a user; ``str()`` is the reply to send."""


def _linked_users(text: str) -> List[str]:
    found = []
    for match in _LINKED_USER_RE.finditer(text or ""):
        user_id = unquote(match.group(1))
        user_id = user_id if user_id.startswith("@") else "@" + user_id
        if is_user_id(user_id) and user_id not in found:
            found.append(user_id)
    return found


def resolve_user(argument: str, content: Any, bot_user_id: str) -> str:
    """The user ID a command argument refers to. Raises BadUserArgument with a readable reason."""
    argument = (argument or "").strip()
    first = argument.split()[0] if argument else ""
    if is_user_id(first):
        return first
    linked = _linked_users(first) or _linked_users(getattr(content, "formatted_body", None) or "")
    mentions = getattr(content, "mentions", None)
    linked += [u for u in (getattr(mentions, "user_ids", None) or []) if u not in linked]
    linked = [u for u in linked if u != bot_user_id] or linked
    if linked:
        return linked[0]
    if not argument:
        raise BadUserArgument("Whom should I look for? Usage: `!whereis @name:server.org`")
    if first.startswith("@"):
        raise BadUserArgument(
            f"`{first[:100]}` is not a valid Matrix user ID. Use the form `@name:server.org`."
        )
    raise BadUserArgument(
        f"I can't tell which user `{argument[:100]}` is. Give a Matrix ID like `@name:server.org`"
        " or mention (pill) the user."
    )
