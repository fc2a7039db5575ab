"""Restarts against real Synapse, maubot standalone with its defaults: a quiet restart fetches no
room's state (counted in Synapse's access log), changes made while the bot was down are stored
after the catch-up, and the catch-up is the one extra /sync it makes."""

from __future__ import annotations

from roomstate_dev.bots import StandaloneBot
from roomstate_dev.client import eventually
from roomstate_dev.servers import Synapse

from .conftest import BotDatabase, People

ROOMS = 6
STATE = r"^GET /_matrix/client/v3/rooms/[^/]+/state$"
CATCH_UP = r"^GET /_matrix/client/v3/sync\?.*set_presence=offline"


def server_members(people: People, room_id: str) -> set[str]:
    return set(people.admin.call("GET", f"{people.admin.room(room_id)}/joined_members")["joined"])


def test_quiet_restart_fetches_no_room_state_and_changes_while_down_are_stored(
    people: People, synapse: Synapse, bot: StandaloneBot, bot_db: BotDatabase
) -> None:
    admin = people.admin
    alice, bob = people.newcomer("r-alice", "Rita"), people.newcomer("r-bob", "Rob")  # this test's own
    rooms = [admin.create_room(f"Restart {i}", invite=[bot.user_id, alice.user_id]) for i in range(ROOMS)]
    encrypted = admin.create_room("Restart secret", invite=[bot.user_id])
    admin.set_state(encrypted, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    for room in [*rooms, encrypted]:
        eventually(lambda room=room: bot.user_id in bot_db.members(room), what="bot joined")
    eventually(lambda: bot_db.room(encrypted) is not None and bot_db.room(encrypted).encrypted, what="encrypted")

    state_before = len(synapse.requests_by(bot.user_id, STATE))
    catch_ups_before = len(synapse.requests_by(bot.user_id, CATCH_UP))
    bot.restart()  # quiet: nothing changed while it was down
    assert bot.log_text().count("Caught up from the saved sync position: 0 rooms changed") >= 1
    assert len(synapse.requests_by(bot.user_id, STATE)) == state_before  # no room's state fetched
    assert len(synapse.requests_by(bot.user_id, CATCH_UP)) == catch_ups_before + 1

    bot.stop()
    alice.join(rooms[0])
    admin.invite(rooms[1], bob.user_id)
    bob.join(rooms[1])
    admin.set_state(rooms[2], "m.room.name", {"name": "Renamed while down"})
    admin.kick(rooms[3], bot.user_id, reason="not needed here")
    admin.invite(encrypted, bob.user_id)
    bob.join(encrypted)
    state_before = len(synapse.requests_by(bot.user_id, STATE))
    bot.start()
    assert len(synapse.requests_by(bot.user_id, STATE)) == state_before  # no gap: nothing fetched in full
    for room in (rooms[0], rooms[1], encrypted):
        eventually(lambda room=room: bot_db.members(room) == server_members(people, room), what=f"members of {room}")
    assert bot_db.room(rooms[2]).name == "Renamed while down"
    assert rooms[3] not in bot_db.room_ids()
    assert bot_db.room(encrypted).encrypted
    reply = admin.ask(rooms[0], bot.user_id, "!rooms")
    assert "“Renamed while down”" in reply and "“Restart 3”" not in reply, reply
