"""The web view's pages, rendered on the server: readable without JavaScript, usable on a phone,
with headings, table headers and labels. Every string someone else wrote goes through ``html.esc``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mautrix.types import RoomID, UserID

from .. import replies
from ..models import HistoryAnswer, HistoryEntry, Member, RoomInfo, WhereisAnswer
from ..text import is_blank
from ..timeparse import shown
from .html import Markup, esc, join, path, tag

PERIODS = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "90d": 90 * 86_400}
BUCKETS = {"24h": 3_600, "7d": 6 * 3_600, "30d": 86_400, "90d": 86_400}
MEMBERSHIPS = ("join", "invite", "ban", "knock")


@dataclass(frozen=True)
class Viewer:
    user_id: UserID
    csrf: str
    admin: bool


def layout(base: str, title: str, body: Markup, viewer: Viewer | None) -> str:
    who = Markup("")
    if viewer is not None:
        who = tag(
            "span",
            Markup("Signed in as "),
            tag("code", viewer.user_id),
            Markup(" "),
            tag(
                "form",
                tag("input", type="hidden", name="csrf", value=viewer.csrf),
                tag("button", "Sign out", type="submit"),
                method="post",
                action=path(base, "signout"),
            ),
            class_="who",
        )
    nav = tag("nav", tag("a", "Rooms", href=path(base)), aria_label="Main") if viewer else Markup("")
    return "<!DOCTYPE html>" + tag(
        "html",
        tag(
            "head",
            Markup('<meta charset="utf-8">'),
            Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            tag("title", f"{title} – roomstate"),
            Markup(f'<link rel="stylesheet" href="{esc(path(base, "static", "style.css"))}">'),
            Markup(f'<link rel="icon" href="{esc(path(base, "static", "icon.svg"))}" type="image/svg+xml">'),
        ),
        tag("body", tag("header", tag("strong", "roomstate"), nav, who), tag("main", tag("h1", title), body)),
        lang="en",
    )


def message(text: str, *more: Markup) -> Markup:
    return join([tag("p", text), *more])


def _pager(base: str, route: Sequence[str], query: Mapping[str, object], page: int, pages: int) -> Markup:
    if pages <= 1:
        return Markup("")
    links = []
    if page > 1:
        links.append(tag("a", "← Previous", href=path(base, *route, query={**query, "page": page - 1}), rel="prev"))
    links.append(tag("span", f"Page {page} of {pages}"))
    if page < pages:
        links.append(tag("a", "Next →", href=path(base, *route, query={**query, "page": page + 1}), rel="next"))
    return tag("nav", *links, class_="pages", aria_label="Pages")


def _table(caption: str, headers: Sequence[tuple[str, bool]], rows: Sequence[Sequence[Markup | str | int]]) -> Markup:
    head = tag("tr", *(tag("th", label, scope="col", class_="num" if numeric else None) for label, numeric in headers))
    body = [
        tag(
            "tr",
            *(tag("td", cell, class_="num" if headers[index][1] else None) for index, cell in enumerate(row)),
        )
        for row in rows
    ]
    return tag(
        "div", tag("table", tag("caption", caption), tag("thead", head), tag("tbody", *body)), class_="table-wrap"
    )


# ---- rooms ------------------------------------------------------------------------------------------

ROOM_COLUMNS: dict[str, tuple[str, Callable[[RoomInfo], Any], bool]] = {
    "name": ("Room", lambda r: r.display_name.casefold(), False),
    "alias": ("Alias", lambda r: (r.canonical_alias or "").casefold(), False),
    "members": ("Members", lambda r: r.joined_count, True),
    "invited": ("Invited", lambda r: r.invited_count, True),
    "encrypted": ("Encrypted", lambda r: r.encrypted, False),
    "version": ("Version", lambda r: r.room_version or "", False),
    "upgraded": ("Upgraded to", lambda r: r.replacement_room or "", False),
}


def room_link(base: str, room: RoomInfo) -> Markup:
    label = room.name if room.name and not is_blank(room.name) else (room.canonical_alias or room.room_id)
    return tag("a", label, href=path(base, "room", room.room_id))


def rooms(
    base: str,
    shown_rooms: Sequence[RoomInfo],
    *,
    total: int,
    admin: bool,
    q: str,
    sort: str,
    descending: bool,
    page: int,
    pages: int,
    limited: bool,
) -> Markup:
    query = {"q": q, "sort": sort, "dir": "desc" if descending else ""}
    filters = tag(
        "form",
        tag("label", "Filter by name", tag("input", type="search", name="q", value=q)),
        tag("input", type="hidden", name="sort", value=sort),
        tag("button", "Filter", type="submit"),
        method="get",
        action=path(base),
        class_="filters",
        role="search",
    )
    columns = list(ROOM_COLUMNS.items()) + (
        [("waiting", ("Resync due", lambda r: r.needs_resync, False))] if admin else []
    )
    headers = []
    for key, (label, _, numeric) in columns:
        flip = key == sort and not descending
        link = tag(
            "a",
            label + (" ▲" if key == sort and not descending else " ▼" if key == sort else ""),
            href=path(base, query={"q": q, "sort": key, "dir": "desc" if flip else ""}),
        )
        headers.append((link, numeric))
    rows = []
    for room in shown_rooms:
        row: list[Markup | str | int] = [
            room_link(base, room),
            tag("code", room.canonical_alias) if room.canonical_alias else "",
            room.joined_count,
            room.invited_count,
            "yes" if room.encrypted else "no",
            room.room_version or "",
            tag("a", room.replacement_room, href=path(base, "room", room.replacement_room))
            if room.replacement_room
            else "",
        ]
        if admin:
            row.append("yes" if room.needs_resync else "")
        rows.append(row)
    scope = " that you are in too" if limited else ""
    caption = f"{total} room{'s' if total != 1 else ''}{scope}" + (f" matching “{q}”" if q else "")
    table = _table_with_markup_headers(caption, headers, rows)
    return join([filters, table if rows else tag("p", "No rooms to show."), _pager(base, (), query, page, pages)])


def _table_with_markup_headers(
    caption: str, headers: Sequence[tuple[Markup, bool]], rows: Sequence[Sequence[Markup | str | int]]
) -> Markup:
    head = tag(
        "tr",
        *(
            tag("th", label, scope="col", class_="num" if numeric else None, aria_sort=None)
            for label, numeric in headers
        ),
    )
    body = [
        tag("tr", *(tag("td", cell, class_="num" if headers[i][1] else None) for i, cell in enumerate(row)))
        for row in rows
    ]
    return tag(
        "div", tag("table", tag("caption", esc(caption)), tag("thead", head), tag("tbody", *body)), class_="table-wrap"
    )


# ---- one room --------------------------------------------------------------------------------------


def room(
    base: str,
    info: RoomInfo,
    *,
    period: str,
    counts_chart: Markup,
    counts_table: Markup,
    waves_chart: Markup,
    waves_table: Markup,
    members: Sequence[Member],
    members_total: int,
    membership: str,
    search: str,
    page: int,
    pages: int,
    transitions: Sequence[HistoryEntry],
    admin: bool,
) -> Markup:
    facts = [
        ("Room ID", tag("code", info.room_id)),
        ("Name", info.name or "—"),
        ("Topic", info.topic or "—"),
        ("Alias", tag("code", info.canonical_alias) if info.canonical_alias else "—"),
        ("Members", f"{info.joined_count} joined, {info.invited_count} invited"),
        ("Encrypted", "yes" if info.encrypted else "no"),
        ("Room version", info.room_version or "—"),
        ("Created by", tag("code", info.creator) if info.creator else "—"),
    ]
    if info.replacement_room:
        facts.append(("Upgraded to", tag("a", info.replacement_room, href=path(base, "room", info.replacement_room))))
    if admin and info.needs_resync:
        facts.append(("Resync", "waiting for a resync"))
    details = tag("dl", *(join([tag("dt", label), tag("dd", value)]) for label, value in facts), class_="info")
    periods = tag(
        "nav",
        Markup("Period: "),
        *(
            join(
                [
                    tag(
                        "a",
                        name,
                        href=path(base, "room", info.room_id, query={"period": name}),
                        aria_current="page" if name == period else None,
                    ),
                    Markup(" "),
                ]
            )
            for name in PERIODS
        ),
        class_="periods",
        aria_label="Chart period",
    )
    filters = tag(
        "form",
        tag("input", type="hidden", name="period", value=period),
        tag("label", "Search members", tag("input", type="search", name="q", value=search)),
        tag(
            "label",
            "Membership",
            tag(
                "select",
                tag("option", "any", value="", selected=membership == ""),
                *(tag("option", m, value=m, selected=membership == m) for m in MEMBERSHIPS),
                name="membership",
            ),
        ),
        tag("button", "Show", type="submit"),
        method="get",
        action=path(base, "room", info.room_id),
        class_="filters",
        role="search",
    )
    member_rows = [
        [tag("a", m.user_id, href=path(base, "user", m.user_id)), m.displayname or "", m.membership] for m in members
    ]
    members_table = (
        _table(
            f"{members_total} member{'s' if members_total != 1 else ''}, by user ID",
            [("User", False), ("Display name", False), ("Membership", False)],
            member_rows,
        )
        if member_rows
        else tag("p", "Nobody matches.")
    )
    query = {"period": period, "q": search, "membership": membership}
    latest = [
        [
            shown(e.observed_at),
            tag("a", e.user_id, href=path(base, "user", e.user_id)),
            Markup(replies.transition(e, replies.literal("this room"), with_time=False).html),
        ]
        for e in transitions
    ]
    return join(
        [
            details,
            tag("h2", "Members over time"),
            periods,
            counts_chart,
            tag("details", tag("summary", "The numbers"), counts_table),
            tag("h2", "Joins and leaves"),
            waves_chart,
            tag("details", tag("summary", "The numbers"), waves_table),
            tag("h2", "Members"),
            filters,
            members_table,
            _pager(base, ("room", info.room_id), query, page, pages),
            tag("h2", "Latest changes"),
            _table(
                "Newest first (times: when the bot saw them, UTC)",
                [("When", False), ("Who", False), ("What", False)],
                latest,
            )
            if latest
            else tag("p", "No membership changes recorded.", class_="note"),
        ]
    )


# ---- one user -------------------------------------------------------------------------------------


def user(base: str, where: WhereisAnswer, history: HistoryAnswer, names: dict[RoomID, RoomInfo]) -> Markup:
    rooms_rows = [[room_link(base, r), r.joined_count, "yes" if r.encrypted else "no"] for r in where.rooms]
    scope = " that you are in too" if where.only_rooms_of_asker else ""
    rooms_part = (
        _table(
            f"Rooms{scope} shared with the bot", [("Room", False), ("Members", True), ("Encrypted", False)], rooms_rows
        )
        if rooms_rows
        else tag("p", f"No shared rooms{scope}.")
    )
    entries = [
        [shown(e.observed_at), Markup(replies.transition(e, _room_text(e.room_id, names), with_time=False).html)]
        for e in history.entries
    ]
    entries += [
        ["before " + shown(h.since, seconds=True), Markup(replies.held_before(h, _room_text(h.room_id, names)).html)]
        for h in history.held_before
    ]
    history_part = (
        _table("Membership changes, newest first", [("When (UTC)", False), ("What", False)], entries)
        if entries
        else tag("p", "No membership history.")
    )
    name = tag("p", Markup("Display name: "), where.displayname) if where.displayname else Markup("")
    return join([name, tag("h2", "Rooms"), rooms_part, tag("h2", "History"), history_part])


def _room_text(room_id: RoomID, names: dict[RoomID, RoomInfo]) -> replies.Text:
    found = names.get(room_id)
    return replies.room_name(found) if found is not None else replies.code(room_id)


# ---- signing in ------------------------------------------------------------------------------------


def sign_in(base: str, token: str) -> Markup:
    return join(
        [
            tag("p", "This link signs you in to the bot's web view, once. It was sent to you in a direct chat."),
            tag(
                "form",
                tag("input", type="hidden", name="t", value=token),
                tag("button", "Sign in", type="submit"),
                method="post",
                action=path(base, "login"),
            ),
        ]
    )
