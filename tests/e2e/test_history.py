"""Membership history against a real Synapse: joins, a rename, a kick and a ban with reasons, and a
bot restart in between; each history command's answer is checked as a person reads it."""

from __future__ import annotations

import re
import time

from roomstate_dev.bots import StandaloneBot
from roomstate_dev.client import eventually

from .conftest import BotDatabase, People


def lines(reply: str) -> list[str]:
    """Reply lines without the timestamps, which depend on when the test runs."""
    return [re.sub(r" \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC", "", line) for line in reply.splitlines()]


def test_history_of_a_room_with_moderation_and_a_restart(
    people: People, bot: StandaloneBot, bot_db: BotDatabase
) -> None:
    admin = people.admin  # the moderator; the others are this test's own, renamed, kicked and banned
    alice, bob, carol, dave = (people.newcomer(f"h-{name.lower()}", name) for name in ("Alice", "Bob", "Carol", "Dave"))
    room = admin.create_room("Lobby", invite=[bot.user_id])
    eventually(lambda: bot.user_id in bot_db.members(room), what="bot joined")
    for user in (alice, bob, carol):
        admin.invite(room, user.user_id)
        user.join(room)
    eventually(lambda: len(bot_db.members(room)) == 5, what="members joined")
    bob.set_displayname("Bobby Tables")
    admin.kick(room, carol.user_id, reason="spam links")
    eventually(lambda: carol.user_id not in bot_db.members(room), what="kick applied")
    time.sleep(2)
    before_restart = time.time()
    time.sleep(2)

    bot.restart()
    admin.invite(room, dave.user_id)
    dave.join(room)
    eventually(lambda: dave.user_id in bot_db.members(room), what="dave joined after the restart")
    admin.ban(room, dave.user_id, reason="raid")
    eventually(lambda: dave.user_id in bot_db.members(room, "ban"), what="ban applied")

    assert lines(admin.ask(room, bot.user_id, f"!history {carol.user_id}")) == [
        f"Latest 3 changes of {carol.user_id}, newest first:",
        f"• kicked from “Lobby” by {admin.user_id} (“spam links”)",
        "• joined “Lobby”",
        f"• invited to “Lobby” by {admin.user_id}",
    ]
    bob_history = lines(alice.ask(room, bot.user_id, f"!history {bob.user_id}"))  # alice shares the room
    assert bob_history[:3] == [
        f"Latest 3 changes of {bob.user_id} in rooms you are in too, newest first:",
        "• renamed to “Bobby Tables” in “Lobby”",
        "• joined “Lobby”",
    ]
    assert lines(admin.ask(room, bot.user_id, f"!history {dave.user_id} 2")) == [
        f"Latest 2 changes of {dave.user_id}, newest first:",
        f"• banned from “Lobby” by {admin.user_id} (“raid”)",
        "• joined “Lobby”",
    ]

    joins = lines(alice.ask(room, bot.user_id, "!joins 1h"))
    assert joins[0] == "In “Lobby” in the last 1 h: 4 joined, 1 left (1 kicked), 1 banned.", joins
    assert joins[1] == f"• joined: {', '.join(sorted(u.user_id for u in (alice, bob, carol, dave)))}"
    assert joins[2] == f"• left: {carol.user_id}"  # dave went by a ban: counted there only
    assert joins[3] == f"• banned: {dave.user_id}"
    assert alice.ask(room, bot.user_id, "!joins all").startswith("Sorry, only the bot's admins")
    waves = lines(admin.ask(room, bot.user_id, "!joins all 1h"))
    assert "• “Lobby”: +4 -2" in waves  # waves count every departure, the ban included

    ago = int(time.time() - before_restart)
    then = lines(admin.ask(room, bot.user_id, f"!members at {ago}s ago"))
    assert then == [  # before the restart: admin, bot, alice, bob; dave joined and left since
        "“Lobby” at: 4 members.",
        "Nobody joined or left since then.",
    ], then
    early = admin.ask(room, bot.user_id, "!members at 1h ago")
    assert early.startswith("I have no record of “Lobby” at "), early
