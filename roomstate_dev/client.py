"""A minimal Matrix client-server API user, over plain HTTP, for driving the bot like a person."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .servers import http


class MatrixUser:
    """A user; with ``as_appservice``, ``token`` is the appservice's and requests act as
    ``user_id`` (cheap load users, see Synapse.register_load_user)."""

    def __init__(self, homeserver: str, user_id: str, token: str, as_appservice: bool = False) -> None:
        self.homeserver, self.user_id, self.token = homeserver, user_id, token
        self.as_appservice = as_appservice

    def __repr__(self) -> str:
        return f"MatrixUser({self.user_id})"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.homeserver}/_matrix/client/v3{path}"
        if self.as_appservice:
            url += ("&" if "?" in path else "?") + f"user_id={quote(self.user_id)}"
        return http(method, url, body, token=self.token)

    def room(self, room_id: str) -> str:
        return f"/rooms/{quote(room_id)}"

    # ---- rooms ------------------------------------------------------------------------------

    def create_room(
        self, name: str | None = None, invite: Iterable[str] = (), public: bool = False, topic: str | None = None
    ) -> str:
        body: dict[str, Any] = {"preset": "public_chat" if public else "private_chat", "invite": list(invite)}
        if name is not None:
            body["name"] = name
        if topic is not None:
            body["topic"] = topic
        return self.call("POST", "/createRoom", body)["room_id"]

    def join(self, room_id: str) -> None:
        self.call("POST", f"/join/{quote(room_id)}", {})

    def leave(self, room_id: str) -> None:
        self.call("POST", f"{self.room(room_id)}/leave", {})

    def invite(self, room_id: str, user_id: str) -> None:
        self.call("POST", f"{self.room(room_id)}/invite", {"user_id": user_id})

    def kick(self, room_id: str, user_id: str, reason: str = "e2e") -> None:
        self.call("POST", f"{self.room(room_id)}/kick", {"user_id": user_id, "reason": reason})

    def ban(self, room_id: str, user_id: str, reason: str = "e2e") -> None:
        self.call("POST", f"{self.room(room_id)}/ban", {"user_id": user_id, "reason": reason})

    def set_state(self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
        return self.call("PUT", f"{self.room(room_id)}/state/{event_type}/{quote(state_key)}", content)["event_id"]

    def set_displayname(self, name: str) -> None:
        self.call("PUT", f"/profile/{quote(self.user_id)}/displayname", {"displayname": name})

    # ---- messages ---------------------------------------------------------------------------

    def send(self, room_id: str, body: str, formatted_body: str | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if formatted_body:
            content.update(format="org.matrix.custom.html", formatted_body=formatted_body)
        path = f"{self.room(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
        return self.call("PUT", path, content)["event_id"]

    def replies_to(self, room_id: str, event_id: str, sender: str) -> list[str]:
        """Bodies of ``sender``'s messages that reply to ``event_id`` (latest 200 events), as a
        person reads them (without the invisible zero-width spaces that defang links)."""
        chunk = self.call("GET", f"{self.room(room_id)}/messages?dir=b&limit=200")["chunk"]
        found = []
        for event in reversed(chunk):
            content = event.get("content") or {}
            relates = (content.get("m.relates_to") or {}).get("m.in_reply_to") or {}
            if event.get("sender") == sender and relates.get("event_id") == event_id:
                found.append(content.get("body", "").replace("\u200b", ""))
        return found

    def ask(self, room_id: str, bot: str, body: str, formatted_body: str | None = None, timeout: float = 60) -> str:
        """Send a command and wait for the bot's reply to it."""
        event_id = self.send(room_id, body, formatted_body)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.replies_to(room_id, event_id, bot)
            if replies:
                return replies[0]
            time.sleep(0.25)
        raise TimeoutError(f"{bot} did not reply to {body!r} in {room_id} within {timeout:.0f}s")


def eventually(check, timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout:.0f}s (last value: {last!r})")
