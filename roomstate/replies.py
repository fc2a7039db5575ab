"""The bot's chat replies, built so that other people's strings cannot take them over.

Room names, aliases, display names and command arguments are written by other users. Every such
string is cleaned (control, bidi and zero-width characters and line breaks removed, whitespace
collapsed), shortened, HTML-escaped in ``formatted_body``, and defanged where a client would turn
it into a link. IDs (validated before they get here) are shown as they are, so that a copied ID
works when pasted back into a command: as code in HTML, plain in ``body``. ``body`` is plain text
without markdown syntax, and every reply carries ``"m.mentions": {}``, so nobody is ever pinged. A
reply never exceeds REPLY_BUDGET bytes (events may have 64 KiB; escaping can make a name several
times longer).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mautrix.types import RoomID

from .models import (
    BAN,
    INVITE,
    JOIN,
    KNOCK,
    NAMES_LISTED,
    NAMES_SAMPLED,
    HeldBefore,
    HistoryAnswer,
    HistoryEntry,
    MemberDiff,
    MembersAt,
    ResyncReport,
    RoomChanges,
    RoomInfo,
    RoomsAnswer,
    SyncOutcome,
    Wave,
    WhereisAnswer,
)
from .text import is_blank, visible
from .timeparse import shown, shown_period

REPLY_BUDGET = 30_000  # bytes of body + formatted_body
NAME_LIMIT = 80
ARGUMENT_LIMIT = 60
ERROR_LIMIT = 300

_OUR_QUOTES = str.maketrans({"“": '"', "”": '"'})  # ours alone mark other people's text in the body
_LINKISH = re.compile(r"://|www\.|\w\.\w|@\w|#\w|!\w", re.IGNORECASE)
_LINK_PUNCTUATION = re.compile(r"([.:/@#!])")
ZERO_WIDTH_SPACE = "\u200b"


def clean(text: str, limit: int = NAME_LIMIT) -> str:
    """One safe line of someone else's text: nothing invisible (``visible``), at most ``limit``
    characters, and no run of characters a client would turn into a link or a pill."""
    text = visible(text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    if _LINKISH.search(text):
        text = _LINK_PUNCTUATION.sub("\\1" + ZERO_WIDTH_SPACE, text)
    return text


@dataclass(frozen=True)
class Text:
    """A piece of reply in both forms."""

    plain: str
    html: str

    def __add__(self, other: Text | str) -> Text:
        other = other if isinstance(other, Text) else literal(other)
        return Text(self.plain + other.plain, self.html + other.html)

    def __radd__(self, other: str) -> Text:
        return literal(other) + self


def literal(text: str) -> Text:
    """Our own words (still escaped: they may quote numbers and fixed words only)."""
    return Text(text, html.escape(text, quote=False))


def name(text: str, limit: int = NAME_LIMIT) -> Text:
    """Someone else's text (a room or display name): bold in HTML, in quotation marks in the plain
    body, so that a name that copies the bot's own words cannot pass for them."""
    safe = clean(text, limit).translate(_OUR_QUOTES)
    return Text(f"“{safe}”", f"<b>{html.escape(safe)}</b>")


def quoted(text: str, limit: int = ARGUMENT_LIMIT) -> Text:
    """Someone else's text, quoted (e.g. a command argument)."""
    safe = clean(text, limit).translate(_OUR_QUOTES)
    return Text(f"“{safe}”", f"“{html.escape(safe)}”")


def code(identifier: str) -> Text:
    """An ID (validated by the caller): code in HTML (clients neither link nor pill code), as it
    is in the plain body (nobody is pinged: replies carry ``m.mentions: {}``)."""
    safe = visible(identifier[:255])
    return Text(safe, f"<code>{html.escape(safe)}</code>")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class Reply:
    """A finished reply: a header line and list items, within REPLY_BUDGET."""

    plain: str
    html: str

    def content(self) -> dict[str, Any]:
        """The event content, as JSON."""
        return {
            "msgtype": "m.notice",
            "body": self.plain,
            "format": "org.matrix.custom.html",
            "formatted_body": self.html,
            "m.mentions": {},
        }


def _size(text: Text) -> int:
    """Bytes the text takes in the event's JSON (escaped as mautrix sends it)."""
    return len(json.dumps(text.plain)) + len(json.dumps(text.html))


def reply(header: Text | str, items: Sequence[Text] = (), footer: Text | str | None = None) -> Reply:
    """Header, a bulleted list, and a footer; list items that do not fit are counted instead."""
    header = header if isinstance(header, Text) else literal(header)
    footer = footer if isinstance(footer, Text) or footer is None else literal(footer)
    plain, markup = [header.plain], [header.html]
    used = _size(header) + 200
    if footer is not None:
        used += _size(footer)
    shown: list[Text] = []
    for item in items:
        size = _size(item) + 16
        if used + size > REPLY_BUDGET:
            break
        used += size
        shown.append(item)
    if shown:
        plain += [f"• {item.plain}" for item in shown]
        markup.append("<ul>" + "".join(f"<li>{item.html}</li>" for item in shown) + "</ul>")
    if len(shown) < len(items):
        more = literal(f"… and {len(items) - len(shown)} more (too long for one message)")
        plain.append(more.plain)
        markup.append(f"<p>{more.html}</p>")
    if footer is not None:
        plain.append(footer.plain)
        markup.append(f"<p>{footer.html}</p>")
    if shown or len(markup) > 1:
        markup[0] = f"<p>{markup[0]}</p>"
    return Reply("\n".join(plain), "".join(markup))


# ---- rooms ------------------------------------------------------------------------------------


def room_name(room: RoomInfo) -> Text:
    """The room's name (someone else's text), else (no name, or one that shows nothing) its
    canonical alias or its ID (validated IDs: shown as they are, copyable)."""
    return name(room.name) if room.name and not is_blank(room.name) else code(room.canonical_alias or room.room_id)


def room_line(room: RoomInfo) -> Text:
    parts = [plural(room.joined_count, "member")]
    if room.invited_count:
        parts.append(f"{room.invited_count} invited")
    if room.encrypted:
        parts.append("encrypted")
    if room.needs_resync:
        parts.append("waiting for a resync")
    line = room_name(room) + f" ({', '.join(parts)}) " + code(room.room_id)
    if room.replacement_room:
        line = line + ", upgraded to " + code(room.replacement_room)
    return line


def rooms_page(answer: RoomsAnswer, page: int, page_size: int, command: str = "!rooms") -> Reply:
    if answer.refused:
        return reply(REFUSED_VISIBILITY)
    rooms = answer.rooms
    scope = " that you are in too" if answer.only_rooms_of_asker else ""
    if not rooms:
        return reply(f"I'm not in any rooms{scope} yet." if scope else "I'm not in any rooms yet.")
    pages = (len(rooms) + page_size - 1) // page_size
    if page < 1 or page > pages:
        return reply(
            f"There is no page {page}; there {'is' if pages == 1 else 'are'} {plural(pages, 'page')}"
            f" of rooms ({command} 1 to {command} {pages})."
        )
    start = (page - 1) * page_size
    shown = rooms[start : start + page_size]
    footer = None
    if pages > 1:
        rest = len(rooms) - start - len(shown)
        footer = f"Page {page} of {pages}" + (f", {rest} more: {command} {page + 1}" if rest else "")
    if answer.waiting_for_resync:
        waiting = f"{plural(len(answer.waiting_for_resync), 'room')} waiting for a resync."
        footer = waiting if footer is None else f"{footer}. {waiting}"
    header = f"I'm in {plural(len(rooms), 'room')}{scope}:"
    return reply(header, [room_line(room) for room in shown], footer)


def bad_page(argument: str, command: str = "!rooms") -> Reply:
    return reply(quoted(argument) + f" is not a page number. Usage: {command} [page]")


# ---- whereis ----------------------------------------------------------------------------------


def whereis(answer: WhereisAnswer) -> Reply:
    if answer.refused:
        return reply(REFUSED_VISIBILITY)
    who = (
        code(answer.user_id)
        if is_blank(answer.displayname)
        else name(answer.displayname or "") + " (" + code(answer.user_id) + ")"
    )
    scope = " that you are in too" if answer.only_rooms_of_asker else ""
    if not answer.rooms:
        return reply("I don't share any rooms" + scope + " with " + who + ".")
    header = who + f" shares {plural(len(answer.rooms), 'room')}{scope} with me:"
    return reply(header, [room_line(room) for room in answer.rooms])


WHEREIS_USAGE = "Whom should I look for? Usage: !whereis @name:server.org"


def not_a_user_id(argument: str) -> Reply:
    return reply(quoted(argument) + " is not a valid Matrix user ID. Use the form @name:server.org.")


def unknown_user_argument(argument: str) -> Reply:
    return reply(
        "I can't tell which user " + quoted(argument) + " is. Give a Matrix ID like @name:server.org"
        " or mention (pill) the user."
    )


# ---- resync -----------------------------------------------------------------------------------

RESYNC_USAGE = "Usage: !resync (this room) or !resync all (every room)"
RESYNC_REFUSED = "Sorry, only the bot's admins (or room moderators with enough power) may resync."
RESYNC_ALL_REFUSED = "Sorry, only the bot's admins may resync every room."
REFUSED_VISIBILITY = "Sorry, only the bot's admins may ask which rooms the bot is in."
SLOW_DOWN = "You are sending commands too fast; I'll ignore them for a little while."
INTERNAL_ERROR = "Sorry, that failed because of an internal error; the details are in the bot's log."
STORAGE_UNAVAILABLE = "My database is unavailable right now; I'll catch up when it is back."


def _user_ids(user_ids: Sequence[str], total: int, shown_at_most: int = NAMES_SAMPLED) -> Text:
    text = literal("")
    for index, user_id in enumerate(user_ids[:shown_at_most]):
        text = text + (", " if index else "") + code(user_id)
    rest = total - min(len(user_ids), shown_at_most)
    return text + (f" and {rest} more" if rest > 0 else "")


def diff_summary(diff: MemberDiff) -> Text:
    if not diff.changed:
        return literal("no member changes")
    parts: list[Text] = []
    if diff.added_count:
        parts.append(f"+{diff.added_count} (" + _user_ids(diff.added, diff.added_count) + ")")
    if diff.removed_count:
        parts.append(f"-{diff.removed_count} (" + _user_ids(diff.removed, diff.removed_count) + ")")
    summary = literal("members ")
    for index, part in enumerate(parts):
        summary = summary + (", " if index else "") + part
    return summary


def resync_room(outcome: SyncOutcome) -> Reply:
    if outcome.error:
        return reply(
            "Could not resync this room: " + clean(outcome.error, ERROR_LIMIT) + ". Nothing was changed;"
            " I'll keep trying in the background."
        )
    if outcome.forgotten or outcome.diff is None or outcome.room is None:
        return reply("I'm not in this room any more, so I forgot it.")
    room = outcome.room
    return reply(
        "Resynced "
        + room_name(room)
        + ": "
        + diff_summary(outcome.diff)
        + f"; now {plural(room.joined_count, 'member')}."
    )


def resync_all(report: ResyncReport) -> Reply:
    if report.error:
        return reply("Could not resync: " + clean(report.error, ERROR_LIMIT) + ". Nothing was changed.")
    changes = f"+{report.added} -{report.removed} members" if report.added or report.removed else "no member changes"
    header = f"Resynced {plural(len(report.synced), 'room')}: {changes}."
    items = [
        code(o.room_id) + ": " + diff_summary(o.diff) for o in report.synced if o.diff is not None and o.diff.changed
    ]
    items += [
        code(o.room_id) + ": failed (" + clean(o.error or "", ERROR_LIMIT) + "), will retry" for o in report.failed
    ]
    footer = None
    if report.forgotten:
        footer = f"Forgot {plural(len(report.forgotten), 'room')} I'm no longer in."
    return reply(header, items, footer)


# ---- history ----------------------------------------------------------------------------------

HISTORY_USAGE = "Usage: !history @name:server.org [count]"
JOINS_USAGE = "Usage: !joins [period] in a room, e.g. !joins 1h, !joins 7d; !joins all [period] across rooms"
MEMBERS_USAGE = "Usage: !members at <time>, e.g. !members at 2026-11-20 14:00 (UTC), !members at 3h ago"
HISTORY_REFUSED = "Sorry, only the bot's admins may ask about membership history here."
JOINS_ALL_REFUSED = "Sorry, only the bot's admins may ask about every room."
ALERTS_REFUSED = "Sorry, only the bot's admins may see the alert settings."


def _by(entry: HistoryEntry) -> Text:
    return " by " + code(entry.sender) if entry.sender else literal("")


def _because(entry: HistoryEntry) -> Text:
    return literal(" (") + quoted(entry.reason, 120) + ")" if entry.reason else literal("")


def transition(entry: HistoryEntry, room: Text, *, with_time: bool = True) -> Text:
    """What happened, in words: "joined Ops", "kicked from Design by @mod (spam)", and when."""
    was, now = entry.previous, entry.membership
    if now == JOIN and was == JOIN:
        if not is_blank(entry.displayname):
            text = "renamed to " + name(entry.displayname or "") + " in " + room
        else:
            text = "removed their display name in " + room
    elif now == JOIN:
        text = "joined " + room
    elif now == was:  # a new display name while invited or knocking
        text = "changed their profile while " + ("invited to " if now == INVITE else "knocking on ") + room
    elif now == INVITE:
        text = "invited to " + room + _by(entry)
    elif now == KNOCK:
        text = "knocked on " + room
    elif now == BAN:
        text = "banned from " + room + _by(entry) + _because(entry)
    elif was == BAN:
        text = "unbanned in " + room + _by(entry)
    elif was == INVITE and not entry.sender:
        text = "rejected the invite to " + room
    elif was == INVITE:
        text = "invite to " + room + " withdrawn" + _by(entry)
    elif was == KNOCK and entry.sender:
        text = "knock on " + room + " refused" + _by(entry)
    elif entry.sender:
        text = "kicked from " + room + _by(entry) + _because(entry)
    else:
        text = "left " + room + _because(entry)
    if with_time:
        text = text + " " + shown(entry.observed_at)
    if entry.event_id is None:
        text = text + " (found by a resync)"
    return text


_HELD = {JOIN: "member of ", INVITE: "invited to ", BAN: "banned from ", KNOCK: "knocking on "}


def held_before(held: HeldBefore, room: Text) -> Text:
    """A membership held since before the bot tracked the room."""
    return (
        _HELD.get(held.membership, held.membership + " in ")
        + room
        + f" since before {shown(held.since, seconds=True)} (when I started tracking it)"
    )


def history(answer: HistoryAnswer) -> Reply:
    if answer.refused:
        return reply(HISTORY_REFUSED)
    scope = " in rooms you are in too" if answer.only_rooms_of_asker else ""
    if not answer.entries and not answer.held_before:
        return reply("I have no membership history of " + code(answer.user_id) + scope + ".")
    rooms = {room.room_id: room for room in answer.rooms}
    items = [transition(e, _room_name(e.room_id, rooms)) for e in answer.entries]
    items += [held_before(h, _room_name(h.room_id, rooms)) for h in answer.held_before]
    if answer.entries:
        count = plural(len(answer.entries), "change")
        header = literal(f"Latest {count} of ") + code(answer.user_id) + scope + ", newest first:"
    else:
        header = literal("No changes of ") + code(answer.user_id) + scope + " since I started tracking:"
    return reply(header, items)


def _room_name(room_id: RoomID, rooms: dict[RoomID, RoomInfo]) -> Text:
    room = rooms.get(room_id)
    return room_name(room) if room is not None else code(room_id)


def _listing(user_ids: list[str], total: int) -> Text:
    return _user_ids(user_ids, total, NAMES_LISTED)


def joins(answer: RoomChanges) -> Reply:
    if answer.refused:
        return reply(HISTORY_REFUSED)
    header = (
        "In " + room_name(answer.room) + f" in the last {shown_period(answer.seconds)}: "
        f"{answer.joined.total} joined, {answer.left.total} left"
        + (f" ({answer.kicked} kicked)" if answer.kicked else "")
        + (f", {answer.banned.total} banned" if answer.banned.total else "")
        + "."
    )
    items = [
        label + ": " + _listing(list(group.sample), group.total)
        for label, group in (("joined", answer.joined), ("left", answer.left), ("banned", answer.banned))
        if group.total
    ]
    return reply(header, items)


def waves(seconds: int, found: tuple[Wave, ...] | None) -> Reply:
    if found is None:
        return reply(JOINS_ALL_REFUSED)
    if not found:
        return reply(f"Nobody joined or left any room in the last {shown_period(seconds)}.")
    header = f"Joins and leaves in the last {shown_period(seconds)}, biggest first:"
    return reply(header, [room_name(w.room) + f": +{w.joined} -{w.left}" for w in found])


def members_at(room: RoomInfo, answer: MembersAt | None) -> Reply:
    if answer is None:
        return reply(HISTORY_REFUSED)
    when = shown(answer.at, seconds=answer.at % 60 != 0 or answer.tracked_since is not None)
    if not answer.tracked:
        if answer.tracked_since is not None:
            return reply(
                "I have no record of " + room_name(room) + f" at {when}: I started tracking it at"
                f" {shown(answer.tracked_since, seconds=True)}."
            )
        return reply(
            "I have no record of " + room_name(room) + f" at {when}: I was not in it then"
            " (or that is before the history I keep)."
        )
    header = (
        room_name(room)
        + f" at {when}: {plural(answer.joined_count, 'member')}"
        + (f", {answer.invited_count} invited" if answer.invited_count else "")
        + "."
    )
    items: list[Text] = []
    if answer.joined_since_total:
        items.append(
            f"joined since ({answer.joined_since_total}): "
            + _listing(list(answer.joined_since), answer.joined_since_total)
        )
    if answer.left_since_total:
        items.append(
            f"left since ({answer.left_since_total}): " + _listing(list(answer.left_since), answer.left_since_total)
        )
    footer = None if items else "Nobody joined or left since then."
    return reply(header, items, footer)


# ---- help and errors ---------------------------------------------------------------------------


def help_text(commands: Sequence[tuple[str, str, str]], base: str) -> Reply:
    """The command list: (how to call it, what it does, who may use it) each."""
    items = [code(call) + f" — {summary}. Who: {who}." for call, summary, who in commands]
    return reply(
        "roomstate knows which rooms I'm in, who is in each and what each is. Commands:",
        items,
        f"Each also works as !{base} <command>.",
    )


def unknown_command(word: str, help_command: str) -> Reply:
    return reply("I don't know the command " + quoted(word) + f". {help_command} lists what I can do.")


def power_unknown(error: str) -> Reply:
    return reply(
        "I could not check your power level in this room: " + clean(error, ERROR_LIMIT) + ". Please try again later."
    )


def bad_count(argument: str, maximum: int) -> Reply:
    return reply(quoted(argument) + f" is not a count I can show: the count must be a number from 1 to {maximum}.")


def bad_time(argument: str, reason: str, usage: str) -> Reply:
    return reply(quoted(argument) + f" is {reason}. {usage}")


# ---- alerts to the moderators' room ---------------------------------------------------------------


def _minutes(seconds: int) -> str:
    minutes = max(1, round(seconds / 60))
    return plural(minutes, "minute")


def wave_notice(
    room: RoomInfo, joined: int, first_joiners: Sequence[str], started_at: int, *, ended_at: int | None, joins: str
) -> Reply:
    """A join wave: posted when it begins, edited as it grows and when it ends."""
    if ended_at is None:
        header = (
            "Join wave in " + room_name(room) + f": {plural(joined, 'user')} joined since {shown(started_at)}"
            " (and counting)."
        )
    else:
        header = (
            "Join wave in " + room_name(room) + f" ended: {plural(joined, 'user')} joined"
            f" in {_minutes(ended_at - started_at)}, from {shown(started_at)}."
        )
    items = [literal("first to join: ") + _user_ids(list(first_joiners), joined, NAMES_SAMPLED)] if joined else []
    return reply(header, items, f"Who joined and left: {joins} in that room. Room: " + room.room_id)


def bot_removed_notice(room: RoomInfo, membership: str, sender: str, reason: str | None) -> Reply:
    how = "banned from" if membership == BAN else "kicked from"
    because = literal(" (") + quoted(reason, 120) + ")" if reason else literal("")
    return reply(literal(f"I was {how} ") + room_name(room) + " by " + code(sender) + because + ".")


def upgraded_notice(room: RoomInfo, replacement: str, sender: str) -> Reply:
    return reply(
        room_name(room) + " was upgraded to " + code(replacement) + " by " + code(sender) + "; I track the new room"
        " once I am in it."
    )


def stuck_notice(room: RoomInfo, waiting_since: int, error: str | None) -> Reply:
    problem = literal(": ") + clean(error, ERROR_LIMIT) if error else literal("")
    return reply(
        room_name(room) + f" has been waiting for a resync since {shown(waiting_since)}" + problem + ". I keep trying."
    )


def recovered_notice(room: RoomInfo) -> Reply:
    return reply(room_name(room) + " is in sync again.")


def alerts_summary(items: Sequence[Text], total: int) -> Reply:
    return reply(
        f"{plural(total, 'alert')} at once (too many to post each):",
        items,
        "Join waves among them are not followed up one by one; !joins all lists them.",
    )


def alerts_status(
    room: str | None,
    watched: Sequence[str] | None,
    joins: int,
    minutes: float,
    stuck_hours: float,
    mentions: Sequence[str],
) -> Reply:
    if room is None:
        return reply("No alerts are sent: set alerts.room in the plugin's settings to a room I am in.")
    items = [
        literal("alerts go to ") + code(room),
        literal("watched rooms: ")
        + (literal("every room I am in") if watched is None else _user_ids(list(watched), len(watched))),
        literal(f"join wave: more than {joins} users joining within {minutes:g} min"),
        literal(f"stuck: waiting for a resync longer than {stuck_hours:g} h"),
        literal("mentioned: ") + (_user_ids(list(mentions), len(mentions)) if mentions else literal("nobody")),
    ]
    return reply("Alerts:", items)


# ---- the web view ------------------------------------------------------------------------------


def sign_in_link(link: str, minutes: int) -> Reply:
    return reply(
        f"Your sign-in link for the web view (it works once, for {plural(minutes, 'minute')}; do not share it):",
        [literal(link)],
        "Signed in, you see what you may see here in chat. !dashboard signout ends your sessions.",
    )


def api_token(name: str, token: str, base: str) -> Reply:
    return reply(
        literal("API token ") + quoted(name) + " (shown once; it acts for you while you are an admin):",
        [code(token)],
        f"Use it as: curl -H 'Authorization: Bearer {token}' {base}/api/v1/rooms",
    )


DASHBOARD_USAGE = "Usage: !dashboard (a sign-in link) | !dashboard signout | !dashboard signout all (admins)"
WEB_DISABLED = "The web view is not enabled for this bot (maubot serves plugin web apps when it has a public URL)."
DIRECT_ROOM_UNAVAILABLE = (
    "I can't send it: someone else is in our direct chat now, and I make at most one new direct chat an hour. "
    "Try again later."
)
LINK_SENT_PRIVATELY = "I sent you a sign-in link in our direct chat (it works once)."
TOKEN_USAGE = "Usage: !roomstate token create <name> | list | revoke <name>"
TOKENS_REFUSED = "Sorry, only the bot's admins may manage API tokens."


def signed_out(count: int, everyone: bool) -> Reply:
    who = "everyone" if everyone else "you"
    return reply(f"Signed {who} out of the web view: ended {plural(count, 'session')}.")


def token_list(tokens: Sequence[Any]) -> Reply:
    if not tokens:
        return reply("No API tokens yet. !roomstate token create <name> makes one.")
    items = [
        quoted(t.name)
        + " by "
        + code(t.created_by)
        + f", made {shown(t.created_at // 1000)}"
        + (f", revoked {shown(t.revoked_at // 1000)}" if t.revoked_at else "")
        for t in tokens
    ]
    return reply("API tokens:", items)
