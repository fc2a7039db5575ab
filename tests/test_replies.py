"""Replies that other users cannot take over: no markup, links, line breaks or pings; bounded size."""

from __future__ import annotations

import json
import re

from roomstate import replies
from roomstate.models import HistoryEntry, MemberDiff, ResyncReport, RoomInfo, RoomsAnswer, SyncOutcome, WhereisAnswer

from .helpers import ADMIN, ALICE, ROOM, Harness

HOSTILE = [
    "<a href='https://evil.example'>click</a>",
    "**bold** [link](https://evil.example) `code` ![img](mxc://x/y)",
    "line one\nline two\r\n---\n# Heading",
    "@room please look",
    "https://evil.example/login",
    "evil.example",
    "\u202eevil\u202c right-to-left override",
    "zero\u200bwidth\u2028separator\u2029paragraph",
    "tab\tand\x00nul",
    "&amp; &lt;script&gt;",
    "<" * 5000,
]


def room(name: str, **extra: object) -> RoomInfo:
    return RoomInfo(ROOM, name=name, joined_count=3, **extra)  # type: ignore[arg-type]


def assert_safe(reply: replies.Reply, *, lines: int | None = None, ids: tuple[str, ...] = ()) -> None:
    """No markup, link, line or ping that someone else's text made. ``ids``: validated IDs the
    reply shows as they are (copyable), so they may name any server."""
    content = reply.content()
    assert content["m.mentions"] == {}
    html = content["formatted_body"]
    # only our own tags, without attributes: no links, no images
    assert set(re.findall(r"</?([a-zA-Z]+)", html)) <= {"p", "ul", "li", "b", "code"}
    assert not re.search(r"<[a-zA-Z]+\s", html)  # no tag has attributes
    if lines is not None:  # no line injected by someone else's text
        assert len(content["body"].splitlines()) == lines
    text_outside_code = re.sub(r"<code>.*?</code>", "", html)
    body = content["body"]
    for identifier in ids:
        body = body.replace(identifier, "<id>")
    for text in (body, text_outside_code):
        assert not any(c in text for c in "\u202e\u2028\u2029\x00\r\t")
        assert "https://evil" not in text and "evil.example" not in text  # defanged for linkifiers
    assert len(json.dumps(content).encode()) < 32 * 1024


def test_hostile_room_names_cannot_take_over_a_rooms_reply() -> None:
    answer = RoomsAnswer(tuple(room(name) for name in HOSTILE))
    reply = replies.rooms_page(answer, 1, 50)
    assert_safe(reply, lines=1 + len(HOSTILE))
    assert "<a href" not in reply.html and "&lt;a href=" in reply.html
    assert "**bold**" in reply.plain  # shown as typed, not rendered


def test_a_tombstone_target_is_shown_as_code_never_as_a_link() -> None:
    reply = replies.rooms_page(RoomsAnswer((room("Old", replacement_room="!new:evil.example"),)), 1, 20)
    assert "<code>!new:evil.example</code>" in reply.html
    assert "upgraded to !new:evil.example" in reply.plain  # as it is: copied, it works in a command
    assert_safe(reply, lines=2, ids=("!new:evil.example",))


def test_hostile_display_names_in_whereis() -> None:
    for name in HOSTILE:
        reply = replies.whereis(WhereisAnswer(ALICE, name, (room("A"),)))
        assert_safe(reply, lines=2)


def test_hostile_command_arguments_are_quoted_safely() -> None:
    for argument in [*HOSTILE, "9" * 5000]:
        for reply in (
            replies.bad_page(argument),
            replies.not_a_user_id(argument),
            replies.unknown_user_argument(argument),
        ):
            assert_safe(reply, lines=1)
            assert len(reply.plain) < 300


def test_every_reply_stays_under_the_size_limit() -> None:
    huge = "<&>" * 10_000
    many = tuple(room(huge) for _ in range(2000))
    assert_safe(replies.rooms_page(RoomsAnswer(many), 1, 100))
    report = ResyncReport(
        synced=tuple(
            SyncOutcome(f"!r{i}:x.org", MemberDiff(f"!r{i}:x.org", 5, 5, ("@a:x.org",) * 10, ("@b:x.org",) * 10))
            for i in range(3000)
        ),
        failed=tuple(SyncOutcome(f"!f{i}:x.org", error=huge) for i in range(3000)),
    )
    reply = replies.resync_all(report)
    assert_safe(reply)
    assert "more (too long for one message)" in reply.plain


def test_plain_bodies_read_well_without_markdown() -> None:
    reply = replies.rooms_page(RoomsAnswer((room("Design", invited_count=1, encrypted=True),)), 1, 20)
    assert reply.plain.replace("\u200b", "") == f"I'm in 1 room:\n• “Design” (3 members, 1 invited, encrypted) {ROOM}"
    assert not re.search(r"[*`_\[\]]", reply.plain)


async def test_replies_sent_by_the_bot_ping_nobody(harness: Harness) -> None:
    await harness.start()
    await harness.setup_room(members=(ADMIN,))
    await harness.deliver(harness.hs.state(ROOM, "m.room.name", {"name": "@room <b>x</b>\nhttps://evil.example"}))
    before = len(harness.hs.sent)
    await harness.command(ROOM, ADMIN, "!rooms")
    [content] = harness.replies(before)
    assert content["m.mentions"] == {} and content["msgtype"] == "m.notice"
    assert content["m.relates_to"]["m.in_reply_to"]["event_id"]
    assert "<b>x</b>" not in content["formatted_body"] and len(content["body"].splitlines()) == 2


def test_every_transition_reads_as_what_happened() -> None:
    def said(previous: str, membership: str, **extra: object) -> str:
        entry = HistoryEntry(ROOM, ALICE, membership, previous, 1_780_000_000, **extra)  # type: ignore[arg-type]
        text = replies.transition(entry, replies.name("Ops")).plain.replace("\u200b", "")  # IDs are kept unlinkable
        return text.rsplit(" 2026-", 1)[0]

    assert said("leave", "join", event_id="$e") == "joined “Ops”"
    assert said("join", "join", displayname="Al", event_id="$e") == "renamed to “Al” in “Ops”"
    assert said("join", "join", displayname="", event_id="$e") == "removed their display name in “Ops”"
    assert said("leave", "invite", sender=ADMIN, event_id="$e") == f"invited to “Ops” by {ADMIN}"
    assert said("invite", "invite", displayname="Al", event_id="$e") == "changed their profile while invited to “Ops”"
    assert said("knock", "knock", event_id="$e") == "changed their profile while knocking on “Ops”"
    assert said("invite", "leave", event_id="$e") == "rejected the invite to “Ops”"
    assert said("invite", "leave", sender=ADMIN, event_id="$e") == f"invite to “Ops” withdrawn by {ADMIN}"
    assert said("join", "leave", sender=ADMIN, reason="spam", event_id="$e") == f"kicked from “Ops” by {ADMIN} (“spam”)"
    assert said("join", "ban", sender=ADMIN, event_id="$e") == f"banned from “Ops” by {ADMIN}"
    assert said("ban", "leave", sender=ADMIN, event_id="$e") == f"unbanned in “Ops” by {ADMIN}"
    assert said("join", "leave", event_id="$e") == "left “Ops”"
    resynced = HistoryEntry(ROOM, ALICE, "leave", "join", 1_780_000_000)  # no event ID: a resync found it
    assert replies.transition(resynced, replies.name("Ops")).plain.endswith("(found by a resync)")
