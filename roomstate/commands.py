"""The chat commands: their names, what each says and who may use it, how arguments are read.

Every command is a subcommand of ``commands.base`` (``!roomstate rooms``); those listed in
``commands.short`` also answer under their own name (``!rooms``). Both are read on every
message, so a change in the maubot manager applies at once. Arguments are cleaned of invisible
characters (zero-width, direction marks) before they are read: an ID copied out of a client often
carries them. Questions go to ``RoomQueries``, changes to ``RoomStateService``; the answer is a
``replies.Reply``. Nothing fails silently: a bad argument gets a reply saying what is wrong, a
storage or homeserver failure gets one saying so (and one log line).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from mautrix.types import EventID, RoomID, UserID

from . import replies, timeparse
from .config import Config
from .db import StorageError
from .direct import DirectRoomUnavailable
from .homeserver import REQUEST_ERRORS, HomeserverError
from .mentions import BadUserArgument, Problem, resolve_user
from .models import RoomInfo
from .queries import RoomQueries
from .ratelimit import RateLimiter, Verdict
from .replies import Reply
from .service import RoomStateService
from .text import visible
from .web.chat import WebChat

log = logging.getLogger("roomstate.commands")

HISTORY_DEFAULT_COUNT = 10
HISTORY_MAX_COUNT = 50
DEFAULT_JOINS_PERIOD = 24 * 3600
NUMBER_RE = re.compile(r"[0-9]+")  # ASCII digits only: "²".isdigit() is True
PAGE_RE = re.compile(r"[0-9]{1,6}")
TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}")


class CommandEvent(Protocol):
    """What a command needs of the message (maubot's MessageEvent has it)."""

    @property
    def sender(self) -> UserID: ...

    @property
    def room_id(self) -> RoomID: ...

    @property
    def event_id(self) -> EventID: ...

    @property
    def content(self) -> Any: ...


@dataclass(frozen=True)
class Command:
    name: str
    arguments: str  # usage, e.g. "@user:server [count]"
    summary: str
    who: Callable[[Config], str]  # who may use it, in words, under the current settings
    run: Callable[[ChatCommands, CommandEvent, str], Awaitable[Reply]]


def _by_visibility(config: Config) -> str:
    return {
        "admins": "admins",
        "shared": "anyone, about rooms they are in (admins: every room)",
        "everyone": "anyone",
    }[config.visibility]


def _resync_who(config: Config) -> str:
    level = config.resync_power_level
    return "admins" if level is None else f"admins, and anyone with power level {level} or more in the room"


def _anyone(config: Config) -> str:
    return "anyone"


def _admins(config: Config) -> str:
    return "admins"


def _dashboard_who(config: Config) -> str:
    return "anyone; signout all: admins"


class ChatCommands:
    def __init__(
        self,
        service: RoomStateService,
        queries: RoomQueries,
        config: Config,
        bot_user_id: UserID,
        logger: logging.Logger = log,
        web: WebChat | None = None,
    ) -> None:
        self.service = service
        self.queries = queries
        self.config = config
        self.bot_user_id = bot_user_id
        self.log = logger
        self.rate_limiter = RateLimiter()
        self.web = web  # None: the web view is off

    # ---- names --------------------------------------------------------------------------------

    def answers_to(self, word: str) -> bool:
        """Whether ``!word`` is one of ours under the current settings (maubot splits the body at
        the first space only: ``word`` may go on after a tab, a no-break space or an invisible
        character)."""
        words = visible(word).lower().split()
        if not words:
            return False
        first = words[0]
        return first == self.config.base_command or (first in COMMANDS and first in self.config.short_commands)

    def invocation(self, name: str) -> str:
        """How to call a subcommand now: ``!rooms`` when it has its short name, else ``!roomstate rooms``."""
        return self.config.invocation(name)

    # ---- answering ----------------------------------------------------------------------------

    async def answer(self, evt: CommandEvent, body: str) -> Reply | None:
        """The reply to a command message (``body`` starts with ``!``); None: no reply (the
        sender is over the rate limit and was told so before)."""
        words = visible(body[1:]).split(maxsplit=1)
        word, rest = (words[0].lower() if words else ""), (words[1] if len(words) > 1 else "")
        if word == self.config.base_command:
            words = rest.split(maxsplit=1)
            word, rest = (words[0].lower() if words else "help"), (words[1] if len(words) > 1 else "")
        verdict = self._check_rate(evt.sender)
        if verdict is not Verdict.ALLOW:
            return replies.reply(replies.SLOW_DOWN) if verdict is Verdict.SLOW_DOWN else None
        command = COMMANDS.get(word)
        if command is None:
            return replies.unknown_command(word, self.invocation("help"))
        self.service.metrics.count("roomstate_commands_total", command=command.name)
        try:
            return await command.run(self, evt, rest)
        except StorageError as error:
            self.log.warning("Answering %s in %s without the database: %s", evt.event_id, evt.room_id, error)
            return replies.reply(replies.STORAGE_UNAVAILABLE)
        except Exception:
            self.log.exception("Answering %s in %s failed", evt.event_id, evt.room_id)
            return replies.reply(replies.INTERNAL_ERROR)

    def _usage(self, name: str, text: str) -> str:
        """A usage text (written with short names) with the command as it is called now."""
        return text.replace(f"!{name}", self.invocation(name))

    def _check_rate(self, user_id: UserID) -> Verdict:
        if self.config.is_admin(user_id):
            return Verdict.ALLOW
        return self.rate_limiter.check(user_id, self.config.rate_limit, self.config.rate_period_seconds)

    # ---- the commands -------------------------------------------------------------------------

    async def help(self, evt: CommandEvent, args: str) -> Reply:
        lines = [
            (self.invocation(c.name) + (f" {c.arguments}" if c.arguments else ""), c.summary, c.who(self.config))
            for c in COMMANDS.values()
        ]
        return replies.help_text(lines, self.config.base_command)

    async def rooms(self, evt: CommandEvent, args: str) -> Reply:
        page = args or "1"
        if not PAGE_RE.fullmatch(page):
            return replies.bad_page(page, self.invocation("rooms"))
        answer = await self.queries.rooms_for(evt.sender)
        return replies.rooms_page(answer, int(page), self.config.page_size, self.invocation("rooms"))

    async def whereis(self, evt: CommandEvent, args: str) -> Reply:
        try:
            user_id = resolve_user(args, evt.content, self.bot_user_id)
        except BadUserArgument as error:
            return _bad_user(error, self._usage("whereis", replies.WHEREIS_USAGE))
        return replies.whereis(await self.queries.whereis(user_id, asker=evt.sender, asked_in=evt.room_id))

    async def resync(self, evt: CommandEvent, args: str) -> Reply:
        scope = args.lower()
        if scope not in ("", "all"):
            return replies.reply(self._usage("resync", replies.RESYNC_USAGE))
        if scope == "all":
            if not self.queries.may_resync_all(evt.sender):
                return replies.reply(replies.RESYNC_ALL_REFUSED)
            return replies.resync_all(await self.service.resync_all())
        try:
            allowed = await self.queries.may_resync(evt.room_id, evt.sender)
        except HomeserverError as error:
            self.log.warning("Could not read the power levels of %s: %s", evt.room_id, error)
            return replies.power_unknown(str(error))
        if not allowed:
            return replies.reply(replies.RESYNC_REFUSED)
        return replies.resync_room(await self.service.sync_room(evt.room_id))

    async def history(self, evt: CommandEvent, args: str) -> Reply:
        words = args.split()
        count = HISTORY_DEFAULT_COUNT
        if len(words) >= 2 and NUMBER_RE.fullmatch(words[-1]):
            count = int(words[-1]) if len(words[-1]) <= 4 else 0
            if not 1 <= count <= HISTORY_MAX_COUNT:
                return replies.bad_count(words[-1], HISTORY_MAX_COUNT)
            words = words[:-1]
        try:
            user_id = resolve_user(" ".join(words), evt.content, self.bot_user_id)
        except BadUserArgument as error:
            return _bad_user(error, self._usage("history", replies.HISTORY_USAGE))
        return replies.history(await self.queries.history_of(user_id, asker=evt.sender, count=count))

    async def joins(self, evt: CommandEvent, args: str) -> Reply:
        words = args.lower().split()
        every_room = bool(words) and words[0] == "all"
        words = words[1:] if every_room else words
        if len(words) > 1:
            return replies.reply(self._usage("joins", replies.JOINS_USAGE))
        try:
            seconds = timeparse.period(words[0]) if words else DEFAULT_JOINS_PERIOD
        except timeparse.BadTime as error:
            return replies.bad_time(error.text, error.reason, self._usage("joins", replies.JOINS_USAGE))
        if every_room:
            return replies.waves(seconds, await self.queries.waves(asker=evt.sender, seconds=seconds))
        return replies.joins(await self.queries.joins(evt.room_id, asker=evt.sender, seconds=seconds))

    async def alerts(self, evt: CommandEvent, args: str) -> Reply:
        if not self.config.is_admin(evt.sender):
            return replies.reply(replies.ALERTS_REFUSED)
        config = self.config
        watched = config.alert_watched_rooms
        return replies.alerts_status(
            config.alert_room,
            None if watched is None else sorted(watched),
            config.join_wave_joins,
            config.join_wave_seconds / 60,
            config.stuck_seconds / 3600,
            config.alert_mentions,
        )

    async def dashboard(self, evt: CommandEvent, args: str) -> Reply:
        words = args.lower().split()
        if words[:1] == ["signout"]:
            if self.web is None:
                return replies.reply(replies.WEB_DISABLED)
            everyone = words[1:2] == ["all"]
            if everyone and not self.config.is_admin(evt.sender):
                return replies.reply("Sorry, only the bot's admins may end everyone's sessions.")
            auth = self.web.auth
            count = await (auth.sign_out_everyone() if everyone else auth.sign_out_user(evt.sender))
            return replies.signed_out(count, everyone)
        if words:
            return replies.reply(self._usage("dashboard", replies.DASHBOARD_USAGE))
        if self.web is None or not self.web.enabled:
            return replies.reply(replies.WEB_DISABLED)
        try:
            room_id = await self.web.send_link(evt.sender)
        except DirectRoomUnavailable:
            return replies.reply(replies.DIRECT_ROOM_UNAVAILABLE)
        except (*REQUEST_ERRORS, HomeserverError) as error:
            self.log.warning("Could not send a sign-in link to %s: %s", evt.sender, error)
            return replies.reply("I could not send you a sign-in link in a direct chat; please try again later.")
        if room_id == evt.room_id:
            return replies.reply("There it is (above).")
        return replies.reply(replies.LINK_SENT_PRIVATELY)

    async def token(self, evt: CommandEvent, args: str) -> Reply:
        if not self.config.is_admin(evt.sender):
            return replies.reply(replies.TOKENS_REFUSED)
        if self.web is None:
            return replies.reply(replies.WEB_DISABLED)
        words = args.split()
        action = words[0].lower() if words else ""
        name = words[1] if len(words) == 2 else ""
        if action == "list" and len(words) == 1:
            return replies.token_list(await self.web.tokens())
        if action not in ("create", "revoke") or not TOKEN_NAME_RE.fullmatch(name):
            return replies.reply(self._usage("token", replies.TOKEN_USAGE))
        if action == "revoke":
            revoked = await self.web.revoke(name)
            return replies.reply(f"Revoked the token {name}." if revoked else f"There is no token {name} to revoke.")
        try:
            room_id = await self.web.send_token(name, evt.sender)
        except DirectRoomUnavailable:
            return replies.reply(replies.DIRECT_ROOM_UNAVAILABLE)
        except (*REQUEST_ERRORS, HomeserverError) as error:
            self.log.warning("Could not send an API token to %s: %s", evt.sender, error)
            return replies.reply("I could not send you the token in a direct chat; nothing was made usable.")
        if room_id is None:
            return replies.reply(f"A token named {name} exists already (revoked ones keep their name).")
        return replies.reply(
            "There it is (above)." if room_id == evt.room_id else "I sent you the token in our direct chat."
        )

    async def members(self, evt: CommandEvent, args: str) -> Reply:
        usage = self._usage("members", replies.MEMBERS_USAGE)
        if not args.lower().startswith("at ") and args.lower() != "at":
            return replies.reply(usage)
        when = args[2:].strip()
        if not when:
            return replies.reply(usage)
        try:
            moment = timeparse.point_in_time(when, datetime.now(timezone.utc))
        except timeparse.BadTime as error:
            return replies.bad_time(error.text, error.reason, usage)
        room = await self.queries.room(evt.room_id)
        answer = await self.queries.members_at(evt.room_id, asker=evt.sender, at=int(moment.timestamp()))
        return replies.members_at(room or RoomInfo(evt.room_id), answer)


def _bad_user(error: BadUserArgument, usage: str) -> Reply:
    if error.problem is Problem.MISSING:
        return replies.reply(usage)
    if error.problem is Problem.NOT_A_USER_ID:
        return replies.not_a_user_id(error.argument)
    return replies.unknown_user_argument(error.argument)


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("rooms", "[page]", "the rooms I'm in, with member counts", _by_visibility, ChatCommands.rooms),
        Command("whereis", "@user:server", "the rooms a user shares with me", _by_visibility, ChatCommands.whereis),
        Command(
            "resync",
            "[all]",
            "fetch this room's members and info again (all: every room, admins)",
            _resync_who,
            ChatCommands.resync,
        ),
        Command(
            "history",
            "@user:server [count]",
            f"a user's membership changes, newest first (count 1–{HISTORY_MAX_COUNT}, default {HISTORY_DEFAULT_COUNT})",
            _by_visibility,
            ChatCommands.history,
        ),
        Command(
            "joins",
            "[all] [period]",
            "who joined and left this room in a period like 30m, 24h, 7d (default 24h; all: every room, admins)",
            _by_visibility,
            ChatCommands.joins,
        ),
        Command(
            "members",
            "at <time>",
            "this room's members at a past time: 2026-11-20 14:00, 14:00, 3h ago (UTC)",
            _by_visibility,
            ChatCommands.members,
        ),
        Command(
            "alerts", "", "the alerts I send to the moderators' room, and their settings", _admins, ChatCommands.alerts
        ),
        Command(
            "dashboard",
            "[signout [all]]",
            "a one-time sign-in link to the web view, sent in a direct chat (signout: end your sessions)",
            _dashboard_who,
            ChatCommands.dashboard,
        ),
        Command(
            "token", "create <name> | list | revoke <name>", "API tokens for the web API", _admins, ChatCommands.token
        ),
        Command("help", "", "this list", _anyone, ChatCommands.help),
    )
}
