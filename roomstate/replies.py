"""The text of the bot's chat replies (markdown)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from .models import MemberDiff, RoomInfo
from .service import ResyncReport, SyncOutcome, WhereisAnswer

NAMES_SHOWN = 10  # user IDs listed per added/removed group before "and N more"


def _esc(text: str) -> str:
    """Neutralize markdown in names that come from other users."""
    for char in "\\`*_[]<>#|~":
        text = text.replace(char, "\\" + char)
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def room_line(room: RoomInfo) -> str:
    parts = [_plural(room.joined_count, "member")]
    if room.invited_count:
        parts.append(f"{room.invited_count} invited")
    if room.encrypted:
        parts.append("encrypted")
    if room.replacement_room:
        parts.append(f"upgraded to {room.replacement_room}")
    return f"- **{_esc(room.display_name)}** ({', '.join(parts)}) `{room.room_id}`"


def rooms_page(rooms: Sequence[RoomInfo], page: int, page_size: int) -> str:
    if not rooms:
        return "I'm not in any rooms yet."
    pages = (len(rooms) + page_size - 1) // page_size
    if page < 1 or page > pages:
        return f"There is no page {page}; I have {_plural(pages, 'page')} of rooms (`!rooms 1` to `!rooms {pages}`)."
    start = (page - 1) * page_size
    shown = rooms[start : start + page_size]
    lines = [f"I'm in {_plural(len(rooms), 'room')}:"] + [room_line(room) for room in shown]
    if pages > 1:
        rest = len(rooms) - start - len(shown)
        more = f", {rest} more: `!rooms {page + 1}`" if rest else ""
        lines.append(f"\nPage {page} of {pages}{more}")
    return "\n".join(lines)


def bad_page(argument: str) -> str:
    return f"`{_esc(argument[:50])}` is not a page number. Usage: `!rooms [page]`"


def whereis(answer: WhereisAnswer) -> str:
    if answer.refused:
        return "Sorry, only the bot's admins may ask where other users are."
    user_id, name = answer.user_id, answer.displayname
    who = f"{_esc(name)} ({user_id})" if name else user_id
    scope = " that you are in too" if answer.only_rooms_of_asker else ""
    if not answer.rooms:
        return f"I don't share any rooms{scope} with {who}."
    header = f"{who} shares {_plural(len(answer.rooms), 'room')}{scope} with me:"
    return "\n".join([header] + [room_line(room) for room in answer.rooms])


def resync_refused() -> str:
    return "Sorry, only the bot's admins (or room moderators with enough power) may resync."


def _names(user_ids: Sequence[str]) -> str:
    shown = ", ".join(user_ids[:NAMES_SHOWN])
    rest = len(user_ids) - NAMES_SHOWN
    return shown + (f" and {rest} more" if rest > 0 else "")


def diff_summary(diff: MemberDiff) -> str:
    if not diff.changed:
        return "no member changes"
    parts: List[str] = []
    if diff.added:
        parts.append(f"+{len(diff.added)} ({_names(diff.added)})")
    if diff.removed:
        parts.append(f"-{len(diff.removed)} ({_names(diff.removed)})")
    return "members " + ", ".join(parts)


def resync_room(outcome: SyncOutcome, room: Optional[RoomInfo]) -> str:
    if outcome.error:
        return f"Could not resync this room: {outcome.error}. Nothing was changed."
    if outcome.forgotten or outcome.diff is None or room is None:
        return "I'm not in this room any more, so I forgot it."
    return (
        f"Resynced **{_esc(room.display_name)}**: {diff_summary(outcome.diff)};"
        f" now {_plural(room.joined_count, 'member')}."
    )


def resync_all(report: ResyncReport) -> str:
    if report.error:
        return f"Could not resync: {report.error}. Nothing was changed."
    lines = [
        f"Resynced {_plural(len(report.synced), 'room')}: "
        f"+{report.added} -{report.removed} members."
    ]
    for outcome in report.synced:
        if outcome.diff is not None and outcome.diff.changed:
            lines.append(f"- `{outcome.room_id}`: {diff_summary(outcome.diff)}")
    if report.forgotten:
        lines.append(f"Forgot {_plural(len(report.forgotten), 'room')} I'm no longer in.")
    if report.failed:
        lines.append(f"{_plural(len(report.failed), 'room')} failed (kept as they were):")
        lines += [f"- `{o.room_id}`: {o.error}" for o in report.failed]
    return "\n".join(lines)
