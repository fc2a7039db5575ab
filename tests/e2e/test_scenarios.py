"""Scenarios against a real Synapse, with maubot standalone running roomstate and real clients.

Each scenario asserts on the bot's replies and on the plugin's database. Handler runs are counted
from the plugin's debug log ("Processing <event> ..." / "Skipping <event> ...: already processed").
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

from roomstate_dev.bots import StandaloneBot
from roomstate_dev.client import MatrixUser, eventually
from roomstate_dev.servers import Synapse

from .conftest import BotDatabase, People

BIG_ROOM_MEMBERS = 2000


def processed_runs(bot: StandaloneBot, event_id: str) -> int:
    return bot.log_text().count(f"Processing {event_id} ")


def skipped_runs(bot: StandaloneBot, event_id: str) -> int:
    return bot.log_text().count(f"Skipping {event_id} ")


def server_members(user: MatrixUser, room_id: str) -> set[str]:
    return set(user.call("GET", f"{user.room(room_id)}/joined_members")["joined"])


def member_event_id(user: MatrixUser, room_id: str, member: str) -> str:
    state = user.call("GET", f"{user.room(room_id)}/state")
    return next(e["event_id"] for e in state if e["type"] == "m.room.member" and e["state_key"] == member)


def bot_joined(user: MatrixUser, room_id: str, bot: StandaloneBot) -> bool:
    return bot.user_id in server_members(user, room_id)


def test_1_invited_to_existing_room_knows_everyone_at_once(
    people: People, bot: StandaloneBot, bot_db: BotDatabase
) -> None:
    alice, bob, carol, admin = people.alice, people.bob, people.carol, people.admin
    room = alice.create_room("Garden", invite=[bob.user_id, carol.user_id, admin.user_id, people.dave.user_id])
    for user in (bob, carol, admin):
        user.join(room)
    alice.invite(room, bot.user_id)
    eventually(lambda: bot_joined(alice, room, bot), what="bot joined")

    # asked as soon as the bot is in: answered from the first-join full sync
    reply = admin.ask(room, bot.user_id, f"!whereis {bob.user_id}")
    assert reply.splitlines()[0] == f"“Bob” ({bob.user_id}) shares 1 room with me:"
    assert "Garden" in reply
    assert (
        bot_db.members(room)
        == server_members(alice, room)
        == {alice.user_id, bob.user_id, carol.user_id, admin.user_id, bot.user_id}
    )
    assert bot_db.members(room, "invite") == {people.dave.user_id}
    rooms = admin.ask(room, bot.user_id, "!rooms")
    assert "“Garden” (5 members, 1 invited)" in rooms, rooms


def test_2_joins_leaves_renames_are_reflected(people: People, bot: StandaloneBot, bot_db: BotDatabase) -> None:
    alice, bob, carol, dave = people.alice, people.bob, people.carol, people.dave
    room = alice.create_room("Workshop", invite=[bob.user_id, carol.user_id, bot.user_id])
    bob.join(room)
    carol.join(room)
    eventually(
        lambda: bot_db.members(room) == {alice.user_id, bob.user_id, carol.user_id, bot.user_id}, what="initial members"
    )

    alice.invite(room, dave.user_id)
    eventually(lambda: dave.user_id in bot_db.members(room, "invite"), what="invite applied")
    dave.join(room)
    bob.leave(room)
    carol.set_displayname("Carol Danvers")
    alice.set_state(room, "m.room.name", {"name": "Workshop 2"})
    alice.set_state(room, "m.room.topic", {"topic": "Tools and benches"})

    eventually(
        lambda: bot_db.members(room) == {alice.user_id, carol.user_id, dave.user_id, bot.user_id}, what="joins/leaves"
    )
    eventually(
        lambda: (
            (getattr(bot_db.room(room), "name", None), getattr(bot_db.room(room), "topic", None))
            == ("Workshop 2", "Tools and benches")
        ),
        what="rename and topic",
    )
    eventually(
        lambda: (
            bot_db.rows(
                "SELECT m.displayname FROM roomstate_memberships m JOIN roomstate_users u ON u.user_nid = m.user_nid "
                "JOIN roomstate_rooms r ON r.room_nid = m.room_nid WHERE r.room_id = :r AND u.user_id = :u",
                r=room,
                u=carol.user_id,
            )
            == [("Carol Danvers",)]
        ),
        what="displayname change",
    )
    reply = alice.ask(room, bot.user_id, "!rooms")
    assert "“Workshop 2” (4 members)" in reply


def test_3_kicked_and_banned_rooms_are_dropped(
    people: People, bot: StandaloneBot, bot_db: BotDatabase, control_room: str
) -> None:
    alice, bob, admin = people.alice, people.bob, people.admin
    kicked = alice.create_room("Kicked", invite=[bob.user_id, bot.user_id])
    banned = alice.create_room("Banned", invite=[bob.user_id, bot.user_id])
    bob.join(kicked)
    bob.join(banned)
    eventually(
        lambda: {kicked, banned} <= bot_db.room_ids() and len(bot_db.members(banned)) == 3, what="bot in both rooms"
    )

    alice.kick(kicked, bot.user_id)
    alice.ban(banned, bot.user_id)
    eventually(lambda: not ({kicked, banned} & bot_db.room_ids()), what="rooms forgotten")
    assert bot_db.member_rows(kicked) == bot_db.member_rows(banned) == 0
    reply = admin.ask(control_room, bot.user_id, "!rooms")
    assert "Kicked" not in reply and "Banned" not in reply and "Control" in reply
    reply = admin.ask(control_room, bot.user_id, f"!whereis {bob.user_id}")
    assert "Kicked" not in reply and "Banned" not in reply


def test_4_rejoin_after_kick_processes_nothing_twice(people: People, bot: StandaloneBot, bot_db: BotDatabase) -> None:
    alice, bob, carol = people.alice, people.bob, people.carol
    room = alice.create_room("Rejoin", invite=[bob.user_id, carol.user_id, bot.user_id])
    bob.join(room)
    carol.join(room)
    alice.set_state(room, "m.room.topic", {"topic": "before the kick"})
    eventually(
        lambda: len(bot_db.members(room)) == 4 and getattr(bot_db.room(room), "topic", None) == "before the kick",
        what="first join",
    )
    seen_before = bot_db.processed_ids(room)
    assert seen_before

    alice.kick(room, bot.user_id)
    eventually(lambda: room not in bot_db.room_ids(), what="kick applied")
    bob.leave(room)  # while the bot is away
    alice.invite(room, bot.user_id)
    eventually(lambda: bot_db.members(room) == {alice.user_id, carol.user_id, bot.user_id}, what="rejoin synced")

    # the server re-sent state on re-join: the re-join's full sync covered it (or the claims
    # skipped it); nothing ran twice
    time.sleep(2)
    covered = re.search(rf"Synced {re.escape(room)}: .*; it covers the [1-9]\d* state events", bot.log_text())
    assert covered or sum(skipped_runs(bot, event_id) for event_id in seen_before) > 0
    for event_id in bot_db.processed_ids(room):
        assert processed_runs(bot, event_id) <= 1, event_id
    assert bot_db.room(room).topic == "before the kick"


def test_5_restart_with_rolled_back_sync_token(people: People, bot: StandaloneBot, bot_db: BotDatabase) -> None:
    admin, alice = people.admin, people.alice
    room = admin.create_room("Restart", invite=[alice.user_id, bot.user_id])
    alice.join(room)
    eventually(lambda: len(bot_db.members(room)) == 3, what="bot joined")
    time.sleep(1)  # let the bot store its latest sync token
    [(old_token,)] = bot_db.rows("SELECT next_batch FROM standalone_next_batch")

    resync_event = admin.send(room, "!resync")
    eventually(lambda: admin.replies_to(room, resync_event, bot.user_id), what="resync reply")
    topic_event = admin.set_state(room, "m.room.topic", {"topic": "after token"})
    eventually(lambda: bot_db.room(room).topic == "after token", what="topic applied")

    # a token rollback redelivers events only where maubot dispatches the first sync
    bot.stop()
    bot_db.execute("UPDATE standalone_next_batch SET next_batch = :t", t=old_token)
    bot.ignore_first_sync = False
    try:
        bot.start()
        eventually(
            lambda: skipped_runs(bot, resync_event) >= 1 and skipped_runs(bot, topic_event) >= 1,
            what="old events redelivered and skipped",
        )
        assert processed_runs(bot, resync_event) == 1 and processed_runs(bot, topic_event) == 1
        assert len(admin.replies_to(room, resync_event, bot.user_id)) == 1
        assert bot_db.members(room) == server_members(admin, room)
    finally:
        bot.stop()
        bot.ignore_first_sync = True
        bot.start()


def test_6_resync_repairs_corruption_and_refuses_non_admins(
    people: People, bot: StandaloneBot, bot_db: BotDatabase
) -> None:
    admin, alice, bob = people.admin, people.alice, people.bob
    room = alice.create_room("Repair", invite=[admin.user_id, bob.user_id, bot.user_id])
    admin.join(room)
    bob.join(room)
    eventually(lambda: len(bot_db.members(room)) == 4, what="bot joined")
    # stop only once the bot has handled Bob's join event itself, or it would apply it after the
    # restart and repair the corruption before !resync does
    bob_join = member_event_id(alice, room, bob.user_id)
    eventually(lambda: bob_join in bot_db.processed_ids(room), what="bob's join processed")

    bot.stop()
    nid = "(SELECT room_nid FROM roomstate_rooms WHERE room_id = :r)"
    bot_db.execute(
        f"DELETE FROM roomstate_memberships WHERE room_nid = {nid} AND user_nid = "
        "(SELECT user_nid FROM roomstate_users WHERE user_id = :u)",
        r=room,
        u=bob.user_id,
    )
    bot_db.execute("INSERT INTO roomstate_users (user_id) VALUES ('@ghost:localhost')")
    bot_db.execute(
        f"INSERT INTO roomstate_memberships (room_nid, user_nid, membership) SELECT {nid}, "
        "user_nid, 'join' FROM roomstate_users WHERE user_id = '@ghost:localhost'",
        r=room,
    )
    bot_db.execute(f"UPDATE roomstate_room_info SET name = 'CORRUPT' WHERE room_nid = {nid}", r=room)
    bot.restart(**{"sync": {"on_startup": "new", "concurrency": 4}})
    assert "@ghost:localhost" in bot_db.members(room)  # startup left the known room alone

    refusal = bob.ask(room, bot.user_id, "!resync")
    assert refusal.startswith("Sorry, only the bot's admins")
    assert "@ghost:localhost" in bot_db.members(room)
    reply = admin.ask(room, bot.user_id, "!resync")
    assert reply == f"Resynced “Repair”: members +1 ({bob.user_id}), -1 (@ghost:localhost); now 4 members."
    assert bot_db.members(room) == server_members(alice, room)
    assert bot_db.room(room).name == "Repair"
    everything = admin.ask(room, bot.user_id, "!resync all")
    assert everything.startswith("Resynced ") and "failed" not in everything
    bot.restart(**{"sync": {"on_startup": "all", "concurrency": 4}})


def test_7_room_with_two_thousand_members(
    people: People, synapse: Synapse, bot: StandaloneBot, bot_db: BotDatabase, control_room: str
) -> None:
    alice, admin = people.alice, people.admin
    room = alice.create_room("Big", public=True)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(synapse.register_load_user, range(BIG_ROOM_MEMBERS)))
        list(pool.map(lambda user: synapse.join_as_load_user(user, room), users))
    print(f"\n[e2e] {BIG_ROOM_MEMBERS} users registered and joined in {time.monotonic() - started:.1f}s")

    alice.invite(room, bot.user_id)
    started = time.monotonic()
    eventually(lambda: len(bot_db.members(room)) == BIG_ROOM_MEMBERS + 2, timeout=180, what="big room synced")
    print(f"[e2e] bot synced the {BIG_ROOM_MEMBERS + 2}-member room {time.monotonic() - started:.1f}s after the invite")
    assert bot_db.members(room) == server_members(alice, room)

    target = users[BIG_ROOM_MEMBERS // 2]
    reply = admin.ask(control_room, bot.user_id, f"!whereis {target}")
    localpart = target[1:].split(":")[0]  # Synapse's default displayname for these accounts
    assert reply.splitlines()[0] == f"“{localpart}” ({target}) shares 1 room with me:" and "Big" in reply
    rooms = admin.ask(control_room, bot.user_id, "!rooms")
    assert f"“Big” ({BIG_ROOM_MEMBERS + 2} members)" in rooms


def test_8_bad_input_left_rooms_and_homeserver_outage(
    people: People, synapse: Synapse, bot: StandaloneBot, bot_db: BotDatabase, control_room: str
) -> None:
    admin, alice = people.admin, people.alice
    ask = lambda body: admin.ask(control_room, bot.user_id, body)  # noqa: E731
    assert ask("!whereis") == "Whom should I look for? Usage: !whereis @name:server.org"
    assert "is not a valid Matrix user ID" in ask("!whereis @not-valid")
    assert ask("!whereis @nobody:localhost") == "I don't share any rooms with @nobody:localhost."
    assert "not a page number" in ask("!rooms many")
    assert ask("!resync everything").startswith("Usage:")

    left = alice.create_room("Left", invite=[bot.user_id])
    eventually(lambda: left in bot_db.room_ids(), what="bot joined")
    alice.kick(left, bot.user_id)
    eventually(lambda: left not in bot_db.room_ids(), what="kick applied")
    unanswered = alice.send(left, "!rooms")
    time.sleep(3)
    assert alice.replies_to(left, unanswered, bot.user_id) == []
    assert "Left" not in ask("!rooms")

    synapse.stop()
    time.sleep(3)
    assert bot.process.running(), "the bot must survive a homeserver outage"
    synapse.start()
    reply = admin.ask(control_room, bot.user_id, "!rooms", timeout=180)
    assert reply.startswith("I'm in ")
    assert "Sync request errored" in bot.log_text()
    assert bot.process.running()
