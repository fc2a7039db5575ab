"""The plugin's configuration (see base-config.yaml for the documented defaults).

Values are read on every use, so a change made in the maubot manager takes effect at once.
Missing or invalid values fall back to the defaults with a warning (maubot standalone has no base
config for ``plugin_config``, so a partial config is normal there).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mautrix.types import RoomID, UserID
from mautrix.util.config import BaseProxyConfig, ConfigUpdateHelper

from .parsing import is_room_id, is_user_id

log = logging.getLogger("roomstate.config")

VISIBILITY = ("admins", "shared", "everyone")
COMMAND_NAMES = ("rooms", "whereis", "resync", "history", "joins", "members", "alerts", "dashboard", "token", "help")
_COMMAND_WORD = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
STARTUP_SYNC_MODES = ("catch-up", "all", "new")

_MISSING = object()
NULLABLE_KEYS = ("resync_power_level",)
RENAMED_KEYS = {"visibility": "whereis.visibility"}  # new key: key in 0.1.0 configs

# The values of base-config.yaml (a test keeps them equal).
DEFAULTS: dict[str, Any] = {
    "admins": [],
    "resync_power_level": 100,
    "visibility": "shared",
    "rooms.page_size": 20,
    "sync.on_startup": "catch-up",
    "sync.concurrency": 4,
    "sync.retry_min_seconds": 5,
    "sync.retry_max_seconds": 3600,
    "dedup.retention_hours": 168,
    "dedup.cleanup_interval_minutes": 60,
    "commands.base": "roomstate",
    "commands.short": [name for name in COMMAND_NAMES if name != "token"],
    "commands.rate_limit": 10,
    "commands.rate_period_seconds": 60,
    "history.retention_days": 90,
    "memory.idle_hours": 24,
    "alerts.room": "",
    "alerts.rooms": [],
    "alerts.join_wave.joins": 20,
    "alerts.join_wave.minutes": 5,
    "alerts.stuck_hours": 1,
    "alerts.mention": [],
    "alerts.per_minute": 6,
    "web.link_minutes": 10,
    "web.session_hours": 12,
    "web.open_metrics": False,
}


class Config(BaseProxyConfig):
    def do_update(self, helper: ConfigUpdateHelper) -> None:
        for new, old in RENAMED_KEYS.items():
            if new not in helper.source and old in helper.source:
                helper.base[new] = helper.source[old]
            elif new in helper.source:
                helper.copy(new)
        # helper.copy() treats an explicit null like a missing key; keep the user's null.
        for key in NULLABLE_KEYS:
            value = helper.source.get(key, _MISSING)
            if value is not _MISSING:
                helper.base[key] = value
        for key in DEFAULTS:
            if key not in NULLABLE_KEYS and key not in RENAMED_KEYS:
                helper.copy(key)

    def _value(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING and key in RENAMED_KEYS:
            value = self.get(RENAMED_KEYS[key], _MISSING)
        if value is _MISSING or (value is None and key not in NULLABLE_KEYS):
            return DEFAULTS[key]
        return value

    def _number(self, key: str, kind: type, minimum: float, maximum: float = float("inf")) -> Any:
        value = self._value(key)
        try:
            if isinstance(value, bool):
                raise TypeError
            return kind(min(max(kind(minimum), kind(value)), maximum))
        except (TypeError, ValueError, OverflowError):
            log.warning("Config %s: %r is not a number; using %r", key, value, DEFAULTS[key])
            return kind(DEFAULTS[key])

    def _choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = str(self._value(key)).lower()
        if value not in choices:
            log.warning("Config %s: %r is not one of %s; using %r", key, value, choices, DEFAULTS[key])
            return str(DEFAULTS[key])
        return value

    @property
    def admins(self) -> frozenset[str]:
        value = self._value("admins")
        return frozenset(str(user) for user in value) if isinstance(value, list) else frozenset()

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    @property
    def resync_power_level(self) -> int | None:
        if self._value("resync_power_level") is None:
            return None
        return int(self._number("resync_power_level", int, -(2**53), 2**53))

    @property
    def visibility(self) -> str:
        return self._choice("visibility", VISIBILITY)

    @property
    def page_size(self) -> int:
        return int(self._number("rooms.page_size", int, 1, 100))

    @property
    def startup_sync(self) -> str:
        return self._choice("sync.on_startup", STARTUP_SYNC_MODES)

    @property
    def sync_concurrency(self) -> int:
        return int(self._number("sync.concurrency", int, 1, 64))

    @property
    def retry_min_seconds(self) -> float:
        return float(self._number("sync.retry_min_seconds", float, 0.1))

    @property
    def retry_max_seconds(self) -> float:
        return float(max(self._number("sync.retry_max_seconds", float, 0.1), self.retry_min_seconds))

    @property
    def retention_seconds(self) -> float:
        return float(self._number("dedup.retention_hours", float, 0)) * 3600

    @property
    def cleanup_interval_seconds(self) -> float:
        return float(self._number("dedup.cleanup_interval_minutes", float, 1 / 60)) * 60

    @property
    def base_command(self) -> str:
        """The name of the command every other is a subcommand of (``!roomstate rooms``)."""
        value = str(self._value("commands.base")).strip().lower().removeprefix("!")
        if not _COMMAND_WORD.fullmatch(value):
            log.warning("Config commands.base: %r is not a command name; using %r", value, DEFAULTS["commands.base"])
            return str(DEFAULTS["commands.base"])
        return value

    @property
    def short_commands(self) -> frozenset[str]:
        """The subcommands also answered under their own name (``!rooms``)."""
        value = self._value("commands.short")
        if not isinstance(value, list):
            log.warning("Config commands.short: %r is not a list; using %r", value, DEFAULTS["commands.short"])
            value = DEFAULTS["commands.short"]
        names = {str(name).strip().lower().removeprefix("!") for name in value}
        unknown = names - set(COMMAND_NAMES)
        if unknown:
            log.warning("Config commands.short: no such commands: %s", ", ".join(sorted(unknown)))
        return frozenset(names & set(COMMAND_NAMES))

    def invocation(self, name: str) -> str:
        """How to call a command now: ``!rooms`` when it has its short name, else ``!roomstate rooms``."""
        if name in self.short_commands:
            return f"!{name}"
        return f"!{self.base_command} {name}"

    @property
    def rate_limit(self) -> int:
        return int(self._number("commands.rate_limit", int, 0))

    @property
    def rate_period_seconds(self) -> float:
        return float(self._number("commands.rate_period_seconds", float, 0.001))

    @property
    def history_retention_seconds(self) -> float:
        """0: no history."""
        return float(self._number("history.retention_days", float, 0)) * 86400

    @property
    def idle_seconds(self) -> float:
        return float(self._number("memory.idle_hours", float, 0)) * 3600

    # ---- alerts ---------------------------------------------------------------------------------

    @property
    def alert_room(self) -> RoomID | None:
        """Where alerts go; None: no alerts."""
        value = self._value("alerts.room")
        if not value:
            return None
        if not is_room_id(value):
            log.warning("Config alerts.room: %r is not a room ID; no alerts are sent", value)
            return None
        return RoomID(str(value))

    @property
    def alert_watched_rooms(self) -> frozenset[RoomID] | None:
        """The rooms watched for join waves and the rest; None: every room the bot tracks."""
        value = self._value("alerts.rooms")
        rooms = frozenset(RoomID(str(r)) for r in value if is_room_id(r)) if isinstance(value, list) else frozenset()
        return rooms or None

    @property
    def join_wave_joins(self) -> int:
        """A join wave: more than this many distinct users joining ..."""
        return int(self._number("alerts.join_wave.joins", int, 1))

    @property
    def join_wave_seconds(self) -> float:
        """... within this long; it ends after this long without a join."""
        return float(self._number("alerts.join_wave.minutes", float, 1 / 60)) * 60

    @property
    def stuck_seconds(self) -> float:
        """A room waiting for a resync longer than this is stuck."""
        return float(self._number("alerts.stuck_hours", float, 1 / 60)) * 3600

    @property
    def alert_mentions(self) -> tuple[UserID, ...]:
        """Users every alert mentions (pings) on purpose."""
        value = self._value("alerts.mention")
        return tuple(UserID(str(u)) for u in value if is_user_id(u)) if isinstance(value, list) else ()

    @property
    def alerts_per_minute(self) -> int:
        """New alert notices per minute; more become one summary."""
        return int(self._number("alerts.per_minute", int, 1))

    # ---- the web view ---------------------------------------------------------------------------

    @property
    def web_link_seconds(self) -> float:
        """How long a sign-in link works."""
        return float(self._number("web.link_minutes", float, 1, 24 * 60)) * 60

    @property
    def web_session_seconds(self) -> float:
        """How long a web session lasts."""
        return float(self._number("web.session_hours", float, 0.1, 24 * 30)) * 3600

    @property
    def open_metrics(self) -> bool:
        """/metrics answers without a token (only on a trusted network)."""
        return self._value("web.open_metrics") is True
