"""Periods ("1h", "7d") and points in time ("2026-11-20 14:00", "3h ago") in command arguments.
All times are UTC."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

MAX_SECONDS = 10 * 365 * 24 * 3600
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_PERIOD = re.compile(r"([0-9]{1,6})\s*(s|m|min|h|d|w)", re.IGNORECASE)
_AGO = re.compile(r"([0-9]{1,6})\s*(s|m|min|h|d|w)\s+ago", re.IGNORECASE)
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?\s*(?:Z|UTC)?", re.IGNORECASE
)
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*(?:UTC)?", re.IGNORECASE)


class BadTime(ValueError):
    """The argument is not a period or time this module understands; ``reason`` says why, in
    words fit for a reply."""

    def __init__(self, text: str, reason: str = "not a time I understand") -> None:
        super().__init__(text)
        self.text = text
        self.reason = reason


def period(text: str) -> int:
    """Seconds in a period like "30m", "1h", "7d" (at most ten years)."""
    match = _PERIOD.fullmatch(text.strip())
    if match is None:
        raise BadTime(text, "not a period like 30m, 1h, 7d or 2w")
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise BadTime(text, "an empty period")
    if seconds > MAX_SECONDS:
        raise BadTime(text, "longer than ten years")
    return seconds


def point_in_time(text: str, now: datetime) -> datetime:
    """A UTC time from "2026-11-20 14:00", "2026-11-20", "14:00" (the last such time), or
    "3h ago", or "now"; never in the future."""
    text = text.strip()
    if text.lower() == "now":
        return now
    if match := _AGO.fullmatch(text):
        return now - timedelta(seconds=period(f"{match.group(1)}{match.group(2)}"))
    try:
        if match := _DATE_TIME.fullmatch(text):
            year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
            moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
        elif match := _CLOCK.fullmatch(text):
            moment = now.replace(hour=int(match.group(1)), minute=int(match.group(2)), second=0, microsecond=0)
            if moment > now:
                moment -= timedelta(days=1)
        else:
            raise BadTime(text, "not a time like 2026-11-20 14:00, 14:00 or 3h ago (UTC)")
    except BadTime:
        raise
    except ValueError as error:  # e.g. 2026-02-30 or 25:00
        raise BadTime(text, "not a date and time that exists") from error
    if moment > now:
        raise BadTime(text, "in the future")
    if (now - moment).total_seconds() > MAX_SECONDS:
        raise BadTime(text, "more than ten years ago")
    return moment


def shown(unix_seconds: int, *, seconds: bool = False) -> str:
    """A time in UTC, to the minute (to the second with ``seconds``, where minutes would mislead)."""
    form = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime(form)


def shown_period(seconds: int) -> str:
    """A period as people say it: "30 min", "24 h" (hours up to two days), "7 d"."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0 and not (unit == "d" and seconds < 2 * 86400):
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
