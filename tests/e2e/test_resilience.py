"""Against real Synapse with maubot's default settings: no blind window after a restart, and a bot
SIGKILLed in the middle of heavy concurrent churn ends up with exactly the server's state."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

from roomstate_dev.bots import StandaloneBot
from roomstate_dev.client import MatrixUser, eventually
from roomstate_dev.servers import AS_TOKEN, Synapse

from .conftest import BotDatabase, People

CHURN_ROOMS = 4
CHURN_USERS = 10
CHURN_SECONDS = 24
CONVERGE_SECONDS = 120


def server_state(owner: MatrixUser, room_id: str) -> dict[str, Any]:
    """The room as the homeserver has it: non-leave memberships with display names, name, topic."""
    members: dict[str, tuple[str, str | None]] = {}
    info: dict[str, str | None] = {"name": None, "topic": None}
    for event in owner.call("GET", f"{owner.room(room_id)}/state"):
        content = event.get("content") or {}
        if event["type"] == "m.room.member" and content.get("membership") != "leave":
            name = content.get("displayname")
            members[event["state_key"]] = (content["membership"], name if isinstance(name, str) else None)
        elif event["type"] in ("m.room.name", "m.room.topic"):
            key = event["type"].removeprefix("m.room.")
            value = content.get(key)
            info[key] = value if isinstance(value, str) and value.strip() else None
    return {"members": members, **info}


def stored_state(db: BotDatabase, room_id: str) -> dict[str, Any]:
    rows = db.rows(
        "SELECT u.user_id, m.membership, m.displayname FROM roomstate_memberships m"
        " JOIN roomstate_users u ON u.user_nid = m.user_nid JOIN roomstate_rooms r ON r.room_nid = m.room_nid"
        " WHERE r.room_id = :room",
        room=room_id,
    )
    room = db.room(room_id)
    return {
        "members": {user: (membership, name) for user, membership, name in rows},
        "name": getattr(room, "name", None),
        "topic": getattr(room, "topic", None),
    }


def mismatches(owner: MatrixUser, db: BotDatabase, rooms: list[str]) -> list[str]:
    found = []
    for room_id in rooms:
        server, stored = server_state(owner, room_id), stored_state(db, room_id)
        for user in sorted(set(server["members"]) | set(stored["members"])):
            if server["members"].get(user) != stored["members"].get(user):
                found.append(
                    f"{room_id} {user}: server {server['members'].get(user)} != stored {stored['members'].get(user)}"
                )
        for key in ("name", "topic"):
            if server[key] != stored[key]:
                found.append(f"{room_id} {key}: server {server[key]!r} != stored {stored[key]!r}")
    return found


def churn_once(local: random.Random, user: MatrixUser, owner: MatrixUser, room_id: str, target: str) -> None:
    """One random change by ``user`` or the room's owner: memberships, names, room state."""
    action = local.randrange(11)
    if action < 2:
        user.join(room_id)
    elif action == 2:
        user.leave(room_id)
    elif action == 3:
        user.set_displayname(f"{user.user_id[1:6]} {local.randint(0, 999)}")
    elif action == 4:
        path = f"{user.room(room_id)}/state/m.room.member/{quote(user.user_id)}"
        user.call("PUT", path, {"membership": "join", "displayname": f"per-room {local.randint(0, 99)}"})
    elif action == 5:
        owner.invite(room_id, target)
    elif action == 6:
        owner.kick(room_id, target, reason="churn")
    elif action == 7:
        owner.ban(room_id, target, reason="churn")
    elif action == 8:
        owner.call("POST", f"{owner.room(room_id)}/unban", {"user_id": target})
    elif action == 9:
        owner.set_state(room_id, "m.room.name", {"name": f"Churn {local.randint(0, 99)}"})
    else:
        owner.set_state(room_id, "m.room.topic", {"topic": local.choice(["", "a", "b\nc"])})


def test_no_blind_window_after_a_quiet_restart(people: People, bot: StandaloneBot, bot_db: BotDatabase) -> None:
    """maubot does not dispatch the first sync after a start; a join during it must still land."""
    alice, bob = people.alice, people.bob
    room = alice.create_room("Quiet restart", invite=[bot.user_id], public=True)
    eventually(lambda: bot.user_id in bot_db.members(room), what="bot joined")
    for attempt in range(2):
        bot.restart(wait_for_first_sync=False)  # the first sync is still long-polling
        time.sleep(1)
        if attempt == 0:
            bob.join(room)
            eventually(lambda: bob.user_id in bot_db.members(room), timeout=60, what="join after restart stored")
        else:
            bob.leave(room)
            eventually(lambda: bob.user_id not in bot_db.members(room), timeout=60, what="leave after restart stored")


def test_sigkill_during_concurrent_churn_converges_to_the_server_state(
    people: People, synapse: Synapse, bot: StandaloneBot, bot_db: BotDatabase
) -> None:
    owner = people.alice
    rooms = [owner.create_room(f"Churn {i}", invite=[bot.user_id], public=True) for i in range(CHURN_ROOMS)]
    for room_id in rooms:
        eventually(lambda room_id=room_id: bot.user_id in bot_db.members(room_id), what="bot joined")
    users = [
        MatrixUser(synapse.url, synapse.register_load_user(50_000 + i), AS_TOKEN, as_appservice=True)
        for i in range(CHURN_USERS)
    ]
    rng = random.Random(20261124)
    stop = threading.Event()
    done: list[int] = []
    errors: list[str] = []

    def act(user: MatrixUser, seed: int) -> None:
        local = random.Random(seed)
        count = 0
        while not stop.is_set():
            try:
                churn_once(local, user, owner, local.choice(rooms), local.choice(users).user_id)
                count += 1
            except RuntimeError as error:  # not allowed right now (e.g. banned): that is churn too
                if "M_FORBIDDEN" not in str(error) and "M_BAD_STATE" not in str(error):
                    errors.append(str(error)[:200])
            time.sleep(local.uniform(0, 0.05))
        done.append(count)

    threads = [threading.Thread(target=act, args=(user, rng.random())) for user in users]
    for thread in threads:
        thread.start()
    time.sleep(CHURN_SECONDS / 3)
    bot.kill()  # SIGKILL, mid-churn: no shutdown code runs
    time.sleep(CHURN_SECONDS / 3)
    caught_up = bot.log_text().count("Caught up from the saved sync position")
    bot.start(wait_for_first_sync=False)
    assert bot.log_text().count("Caught up from the saved sync position") == caught_up + 1  # not a full resync
    time.sleep(CHURN_SECONDS / 3)
    stop.set()
    for thread in threads:
        thread.join()
    churn_ended = time.monotonic()
    assert sum(done) > 100, f"too little churn happened: {done}"
    assert len(errors) < sum(done) / 10, errors[:5]

    last: list[str] = []

    def converged() -> bool:
        nonlocal last
        last = mismatches(owner, bot_db, rooms)
        return not last

    try:
        eventually(converged, timeout=CONVERGE_SECONDS, interval=1, what="stored state equal to the server's")
    except TimeoutError:
        raise AssertionError(f"{len(last)} mismatches after {CONVERGE_SECONDS}s:\n" + "\n".join(last[:20])) from None
    print(f"\n[e2e] {sum(done)} churn actions, converged {time.monotonic() - churn_ended:.1f}s after the churn ended")
    applied = re.findall(r"Processing (\$\S+) in \S+ with on_\w+: (?:applied|unchanged)", bot.log_text())
    twice = sorted(event for event, times in Counter(applied).items() if times > 1)
    assert not twice, f"applied twice: {twice[:5]}"
