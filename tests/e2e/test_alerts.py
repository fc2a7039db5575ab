"""Alerts against real Synapse: 30 users joining a room within a minute raise exactly one alert,
edited as the wave grows and when it ends, with the right count; kicking the bot raises one."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from roomstate_dev.bots import StandaloneBot
from roomstate_dev.client import eventually
from roomstate_dev.servers import Synapse

from .conftest import BotDatabase, People

RAIDERS = 30


def bot_messages(people: People, room_id: str, bot: StandaloneBot) -> list[dict[str, Any]]:
    admin = people.admin
    events = admin.call("GET", f"{admin.room(room_id)}/messages?dir=b&limit=200")["chunk"]
    return [e["content"] for e in reversed(events) if e["sender"] == bot.user_id and e["type"] == "m.room.message"]


def test_a_join_wave_and_the_bot_kicked_raise_one_alert_each(
    people: People, synapse: Synapse, bot: StandaloneBot, bot_db: BotDatabase
) -> None:
    admin = people.admin
    mods = admin.create_room("Mods", invite=[bot.user_id])
    lobby = admin.create_room("Raid lobby", invite=[bot.user_id], public=True)
    kicked = admin.create_room("Kick me", invite=[bot.user_id])
    chatty = admin.create_room("Chatty", invite=[bot.user_id], public=True)
    for room in (mods, lobby, kicked, chatty):
        eventually(lambda room=room: bot.user_id in bot_db.members(room), what="bot joined")
    bot.restart(alerts={"room": mods, "join_wave": {"joins": 20, "minutes": 0.5}})
    try:
        # ordinary churn: ten people coming and going three times raise nothing
        regulars = [synapse.register_load_user(71_000 + i) for i in range(10)]
        for _ in range(3):
            for regular in regulars:
                synapse.join_as_load_user(regular, chatty)
            for regular in regulars:
                synapse.call_as_load_user(regular, "POST", f"/rooms/{quote(chatty)}/leave", {})
        raiders = [synapse.register_load_user(70_000 + i) for i in range(RAIDERS)]
        for raider in raiders:
            synapse.join_as_load_user(raider, lobby)

        def ended() -> bool:
            return any(
                c.get("m.new_content", {}).get("body", "").startswith("Join wave in “Raid lobby” ended: 30 users")
                for c in bot_messages(people, mods, bot)
            )

        eventually(ended, timeout=120, what="the wave's last edit")
        sent = bot_messages(people, mods, bot)
        final = [c for c in sent if "m.new_content" in c][-1]["m.new_content"]["body"]
        assert "30 users joined" in final, final
        new = [c for c in sent if "m.relates_to" not in c]
        assert len(new) == 1 and new[0]["body"].startswith("Join wave in “Raid lobby”: "), new  # Chatty: none
        assert all(c["m.relates_to"]["rel_type"] == "m.replace" for c in sent if "m.relates_to" in c)

        admin.kick(kicked, bot.user_id, reason="testing alerts")
        eventually(
            lambda: any(c["body"].startswith("I was kicked from “Kick me”") for c in bot_messages(people, mods, bot)),
            what="the removal alert",
        )
        removal = [c for c in bot_messages(people, mods, bot) if c["body"].startswith("I was kicked")]
        assert removal[0]["body"] == f"I was kicked from “Kick me” by {admin.user_id} (“testing alerts”)."
        assert removal[0]["m.mentions"] == {}
    finally:
        bot.restart(alerts={"room": ""})  # the other tests run without alerts
