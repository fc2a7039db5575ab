"""Power levels as the Matrix spec defines them, from raw (untrusted) event content."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("roomstate.power")

CREATOR_LEVEL_WITHOUT_POWER_LEVELS = 100
UNLIMITED = math.inf

# Room versions in which the creators have unlimited power and are not listed in `users`
# (MSC4289; room version 12 and the hydra test version).
_CREATORS_UNLIMITED = {"org.matrix.hydra.11"}
_INTEGER = re.compile(r"[+-]?[0-9]{1,16}")


def creators_have_unlimited_power(room_version: str | None) -> bool:
    if room_version in _CREATORS_UNLIMITED:
        return True
    return room_version is not None and room_version.isdigit() and int(room_version) >= 12


def _level(value: Any, default: int, what: str) -> int:
    """A power level value: an integer (older rooms allow numeric strings); anything else is
    malformed and counts as the default."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int) and abs(value) <= 2**53:
        return value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    log.warning("Malformed power level %s %r; using %d", what, value, default)
    return default


def user_level(
    user_id: str,
    power_levels: Mapping[str, Any] | None,
    create_sender: str | None,
    create_content: Mapping[str, Any] | None,
    room_version: str | None,
) -> float:
    """``user_id``'s power level in a room: ``power_levels`` is the content of its
    m.room.power_levels event (None if there is none), ``create_*`` describe m.room.create."""
    content = create_content or {}
    if creators_have_unlimited_power(room_version):
        extra = content.get("additional_creators")
        creators = {create_sender} | (set(x for x in extra if isinstance(x, str)) if isinstance(extra, list) else set())
        if user_id in creators:
            return UNLIMITED
    if power_levels is None:
        creator = content.get("creator") if isinstance(content.get("creator"), str) else create_sender
        return CREATOR_LEVEL_WITHOUT_POWER_LEVELS if user_id == creator else 0
    default = _level(power_levels.get("users_default", 0), 0, "users_default")
    users = power_levels.get("users")
    if not isinstance(users, Mapping) or user_id not in users:
        return default
    return _level(users[user_id], default, f"of {user_id}")
