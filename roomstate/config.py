"""The plugin's configuration (see base-config.yaml for the documented defaults)."""
from __future__ import annotations

from typing import List, Optional

from mautrix.util.config import BaseProxyConfig, ConfigUpdateHelper

WHEREIS_VISIBILITY = ("admins", "shared", "everyone")
STARTUP_SYNC_MODES = ("all", "new")


_MISSING = object()
NULLABLE_KEYS = ("resync_power_level",)


class Config(BaseProxyConfig):
    def do_update(self, helper: ConfigUpdateHelper) -> None:
        # helper.copy() treats an explicit null like a missing key; keep the user's null.
        for key in NULLABLE_KEYS:
            value = helper.source.get(key, _MISSING)
            if value is not _MISSING:
                helper.base[key] = value
        for key in (
            "admins",
            "whereis.visibility",
            "rooms.page_size",
            "sync.on_startup",
            "sync.concurrency",
            "dedup.retention_hours",
            "dedup.cleanup_interval_minutes",
        ):
            helper.copy(key)

    @property
    def admins(self) -> List[str]:
        return [str(user) for user in (self["admins"] or [])]

    @property
    def resync_power_level(self) -> Optional[int]:
        level = self["resync_power_level"]
        return None if level is None else int(level)

    @property
    def whereis_visibility(self) -> str:
        value = str(self["whereis.visibility"]).lower()
        return value if value in WHEREIS_VISIBILITY else "shared"

    @property
    def page_size(self) -> int:
        return max(1, int(self["rooms.page_size"]))

    @property
    def startup_sync(self) -> str:
        value = str(self["sync.on_startup"]).lower()
        return value if value in STARTUP_SYNC_MODES else "all"

    @property
    def sync_concurrency(self) -> int:
        return max(1, int(self["sync.concurrency"]))

    @property
    def retention_seconds(self) -> float:
        return max(0.0, float(self["dedup.retention_hours"])) * 3600

    @property
    def cleanup_interval_seconds(self) -> float:
        return max(1.0, float(self["dedup.cleanup_interval_minutes"])) * 60
