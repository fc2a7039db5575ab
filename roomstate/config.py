"""The plugin's configuration (see base-config.yaml for the documented defaults)."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from mautrix.util.config import BaseProxyConfig, ConfigUpdateHelper

log = logging.getLogger("roomstate.config")

WHEREIS_VISIBILITY = ("admins", "shared", "everyone")
STARTUP_SYNC_MODES = ("all", "new")


_MISSING = object()
NULLABLE_KEYS = ("resync_power_level",)

# The values of base-config.yaml (a test keeps them equal). Used for keys a config lacks, which
# happens in standalone mode: maubot.standalone has no base for plugin_config.
DEFAULTS: Dict[str, Any] = {
    "admins": [],
    "resync_power_level": 100,
    "whereis.visibility": "shared",
    "rooms.page_size": 20,
    "sync.on_startup": "all",
    "sync.concurrency": 4,
    "dedup.retention_hours": 168,
    "dedup.cleanup_interval_minutes": 60,
}


class Config(BaseProxyConfig):
    def do_update(self, helper: ConfigUpdateHelper) -> None:
        # helper.copy() treats an explicit null like a missing key; keep the user's null.
        for key in NULLABLE_KEYS:
            value = helper.source.get(key, _MISSING)
            if value is not _MISSING:
                helper.base[key] = value
        for key in DEFAULTS:
            if key not in NULLABLE_KEYS:
                helper.copy(key)

    def _value(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING or (value is None and key not in NULLABLE_KEYS):
            return DEFAULTS[key]
        return value

    def _number(self, key: str, kind: type, minimum: float) -> Any:
        value = self._value(key)
        try:
            return max(kind(minimum), kind(value))
        except (TypeError, ValueError):
            log.warning("Config %s: %r is not a number; using %r", key, value, DEFAULTS[key])
            return kind(DEFAULTS[key])

    def _choice(self, key: str, choices: tuple) -> str:
        value = str(self._value(key)).lower()
        if value not in choices:
            log.warning("Config %s: %r is not one of %s; using %r", key, value, choices, DEFAULTS[key])
            return DEFAULTS[key]
        return value

    @property
    def admins(self) -> List[str]:
        return [str(user) for user in (self._value("admins") or [])]

    @property
    def resync_power_level(self) -> Optional[int]:
        if self._value("resync_power_level") is None:
            return None
        return self._number("resync_power_level", int, -(2**53))

    @property
    def whereis_visibility(self) -> str:
        return self._choice("whereis.visibility", WHEREIS_VISIBILITY)

    @property
    def page_size(self) -> int:
        return self._number("rooms.page_size", int, 1)

    @property
    def startup_sync(self) -> str:
        return self._choice("sync.on_startup", STARTUP_SYNC_MODES)

    @property
    def sync_concurrency(self) -> int:
        return self._number("sync.concurrency", int, 1)

    @property
    def retention_seconds(self) -> float:
        return self._number("dedup.retention_hours", float, 0) * 3600

    @property
    def cleanup_interval_seconds(self) -> float:
        return self._number("dedup.cleanup_interval_minutes", float, 1 / 60) * 60
