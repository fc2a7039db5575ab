"""Realistic benchmark data: member lists as a homeserver returns them, rooms of skewed sizes."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

FIRST = ["Ada", "Bob", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mia", "Noor"]
LAST = ["Smith", "Nguyen", "Müller", "García", "Kowalski", "Rossi", "Tanaka", "Okafor", "Silva", "Larsen"]
SERVERS = ["matrix.org", "example.com", "tchncs.de", "mozilla.org", "kde.org", "fosdem.org"]


@dataclass(frozen=True)
class Member:
    user_id: str
    membership: str
    displayname: str | None


def user_id(number: int) -> str:
    return f"@{FIRST[number % len(FIRST)].lower()}{number}:{SERVERS[number % len(SERVERS)]}"


def displayname(rng: random.Random, number: int) -> str | None:
    if rng.random() < 0.2:
        return None  # no display name set
    return f"{FIRST[number % len(FIRST)]} {rng.choice(LAST)}"


def membership(rng: random.Random) -> str:
    """90% join, 7% invite, 3% leave (what /state or /members returns for a typical room)."""
    draw = rng.random()
    return "join" if draw < 0.90 else "invite" if draw < 0.97 else "leave"


def members(count: int, first_user: int = 0, seed: int = 1) -> list[Member]:
    rng = random.Random(seed)
    return [Member(user_id(n), membership(rng), displayname(rng, n)) for n in range(first_user, first_user + count)]


def changed(original: list[Member], fraction: float, seed: int = 2) -> list[Member]:
    """The same room a while later: ``fraction`` of the members changed (left, joined, renamed)."""
    rng = random.Random(seed)
    result = list(original)
    for index in rng.sample(range(len(result)), int(len(result) * fraction)):
        old = result[index]
        kind = rng.randrange(3)
        if kind == 0:
            result[index] = Member(old.user_id, "leave" if old.membership != "leave" else "join", old.displayname)
        elif kind == 1:
            result[index] = Member(old.user_id, old.membership, f"{old.displayname or 'x'} (away)")
        else:
            result[index] = Member(user_id(10_000_000 + index), "join", "Newcomer")
    return result


def skewed_room_sizes(rooms: int, total: int, largest: int) -> list[int]:
    """Room sizes like real servers have: a few huge rooms, many small ones (Zipf-like)."""
    weights = [1 / (rank**1.1) for rank in range(1, rooms + 1)]
    scale = total / sum(weights)
    sizes = [max(2, min(largest, int(w * scale))) for w in weights]
    sizes[0] = largest
    return sizes


def state_events(room_id: str, room_members: list[Member], bot: str) -> list[dict[str, object]]:
    """A room's /state response: create, name, and a member event per member (the bot joined)."""
    events: list[dict[str, object]] = [
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": bot,
            "room_id": room_id,
            "event_id": f"$create-{room_id}",
            "origin_server_ts": 1,
            "content": {"room_version": "10", "creator": bot},
        },
        {
            "type": "m.room.name",
            "state_key": "",
            "sender": bot,
            "room_id": room_id,
            "event_id": f"$name-{room_id}",
            "origin_server_ts": 2,
            "content": {"name": "Benchmark room"},
        },
    ]
    for index, member in enumerate([*room_members, Member(bot, "join", "Bot")]):
        content: dict[str, object] = {"membership": member.membership}
        if member.displayname is not None:
            content["displayname"] = member.displayname
            content["avatar_url"] = "mxc://matrix.org/AbCdEfGhIjKlMnOpQrStUvWx"
        events.append(
            {
                "type": "m.room.member",
                "state_key": member.user_id,
                "sender": member.user_id,
                "room_id": room_id,
                "event_id": f"${index:010d}abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
                "origin_server_ts": 1_700_000_000_000 + index,
                "content": content,
                "unsigned": {"age": 1234},
            }
        )
    return events


def state_body(room_id: str, room_members: list[Member], bot: str) -> bytes:
    return json.dumps(state_events(room_id, room_members, bot)).encode()


def event_id(text: str) -> str:
    """A room v4+ event ID (the URL-safe base64 of a SHA-256 hash), as modern rooms have."""
    return "$" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")


def member_events(room_id: str, count: int, seed: int, regulars: int = 2_000) -> list[dict[str, Any]]:
    """A realistic stream: new users joining, people leaving, renames, invites (``regulars`` is
    how many users come and go besides the newcomers)."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    events = []
    for index in range(count):
        kind = rng.random()
        user = user_id(rng.randrange(regulars) if kind >= 0.4 else 20_000_000 + seed * count + index)
        membership = "join" if kind < 0.4 or kind >= 0.8 else "leave" if kind < 0.6 else "invite"
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            content["displayname"] = f"Name {rng.randrange(100)}"
        events.append(
            {
                "type": "m.room.member",
                "state_key": user,
                "sender": user,
                "room_id": room_id,
                "event_id": event_id(f"{room_id}-{seed}-{index}"),
                "origin_server_ts": now_ms + index,
                "content": content,
            }
        )
    return events


def steady_member_events(room_id: str, room_members: list[Member], count: int, seed: int) -> Iterator[dict[str, Any]]:
    """A long-lived room's churn at a steady size: members leave (some kicked), others join
    (returning or new), some rename. The room stays about as big as ``room_members`` made it."""
    rng = random.Random(seed)
    joined = [m.user_id for m in room_members if m.membership == "join"]
    away = [m.user_id for m in room_members if m.membership != "join"]
    newcomers = itertools.count(30_000_000 + seed * count)
    for index in range(count):
        draw = rng.random()
        content: dict[str, Any]
        if draw < 0.45 and joined:
            pick = rng.randrange(len(joined))
            joined[pick], joined[-1] = joined[-1], joined[pick]
            user = joined.pop()
            away.append(user)
            content = {"membership": "leave"}
            sender = user if rng.random() < 0.9 else "@mod:bench.example"
        elif draw < 0.9 or not joined:
            if away and rng.random() < 0.5:
                pick = rng.randrange(len(away))
                away[pick], away[-1] = away[-1], away[pick]
                user = away.pop()
            else:
                user = user_id(next(newcomers))
            joined.append(user)
            content, sender = {"membership": "join", "displayname": f"Name {rng.randrange(100)}"}, user
        else:
            user = sender = joined[rng.randrange(len(joined))]
            content = {"membership": "join", "displayname": f"Renamed {index}"}
        yield {
            "type": "m.room.member",
            "state_key": user,
            "sender": sender,
            "room_id": room_id,
            "event_id": event_id(f"{room_id}-steady-{seed}-{index}"),
            "origin_server_ts": int(time.time() * 1000) + index,
            "content": content,
        }
