"""What a newcomer meets first: help, command names that do not collide, IDs that can be copied
back into a command, errors that say what is wrong, and the history of people who were there
before the bot."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest_asyncio

from roomstate.commands import COMMANDS

from .helpers import ADMIN, ALICE, BOB, CAROL, ROOM, Harness


@pytest_asyncio.fixture
async def design(harness: Harness) -> AsyncIterator[Harness]:
    """Design: Alice (its creator), Bob, the admin and the bot."""
    await harness.start()
    await harness.setup_room(ROOM, ALICE, "Design", (BOB, ADMIN))
    yield harness


async def test_help_lists_every_command_with_usage_and_who_may_use_it(design: Harness) -> None:
    for asked in ("!roomstate", "!roomstate help", "!help", "!ROOMSTATE Help"):
        [text] = await design.command(ROOM, BOB, asked)
        for name in COMMANDS:
            called = f"!roomstate {name}" if name == "token" else f"!{name}"  # token has no short name
            assert f"• {called}" in text, (asked, name)
        assert "!whereis @user:server — the rooms a user shares with me. Who: anyone, about rooms they are in" in text
        assert "!resync [all] — " in text
        assert "Who: admins, and anyone with power level 100 or more in the room." in text
        assert "sent in a direct chat (signout: end your sessions). Who: anyone; signout all: admins." in text
        assert text.endswith("Each also works as !roomstate <command>.")
    design.update_config(resync_power_level=None, visibility="admins")
    [text] = await design.command(ROOM, BOB, "!help")
    assert "!rooms [page] — the rooms I'm in, with member counts. Who: admins." in text
    assert "Who: admins, and anyone with power level" not in text


async def test_unknown_subcommands_get_pointed_to_help(design: Harness) -> None:
    [reply] = await design.command(ROOM, BOB, "!roomstate frobnicate now")
    assert reply == "I don't know the command “frobnicate”. !help lists what I can do."
    assert await design.command(ROOM, BOB, "!frobnicate") == []  # not ours: another plugin's, maybe


async def test_every_command_works_under_the_base_command(design: Harness) -> None:
    [short] = await design.command(ROOM, ADMIN, f"!whereis {BOB}")
    [long] = await design.command(ROOM, ADMIN, f"!roomstate whereis {BOB}")
    assert short == long and long.startswith(f"“Bob” ({BOB}) shares 1 room")
    [rooms] = await design.command(ROOM, ADMIN, "!roomstate rooms")
    assert rooms.startswith("I'm in 1 room:")


async def test_short_names_and_the_base_name_are_settings_read_live(design: Harness) -> None:
    design.update_config(commands__short=["whereis"], commands__base="rs")
    assert await design.command(ROOM, ADMIN, "!rooms") == []  # another plugin may answer to it now
    assert await design.command(ROOM, ADMIN, "!roomstate rooms") == []
    [rooms] = await design.command(ROOM, ADMIN, "!rs rooms")
    assert rooms.startswith("I'm in 1 room:")
    [where] = await design.command(ROOM, ADMIN, f"!whereis {BOB}")
    assert where.startswith(f"“Bob” ({BOB})")
    [usage] = await design.command(ROOM, ADMIN, "!rs resync everything")
    assert usage == "Usage: !rs resync (this room) or !rs resync all (every room)"
    [text] = await design.command(ROOM, ADMIN, "!rs")
    assert "• !rs rooms [page]" in text and "• !whereis @user:server" in text
    design.update_config(commands__short=[], commands__base="!roomstate")  # a "!" is forgiven
    assert await design.command(ROOM, ADMIN, f"!whereis {BOB}") == []
    assert (await design.command(ROOM, ADMIN, "!roomstate rooms"))[0].startswith("I'm in 1 room:")


async def test_ids_in_replies_can_be_copied_into_the_next_command(design: Harness) -> None:
    [where] = await design.command(ROOM, ADMIN, f"!whereis {BOB}")
    copied = re.search(r"\((@[^)]*)\)", where)
    assert copied is not None and copied.group(1) == BOB  # shown as it is: nothing invisible inside
    [again] = await design.command(ROOM, ADMIN, f"!whereis {copied.group(1)}")
    assert again == where
    [rooms] = await design.command(ROOM, ADMIN, "!rooms")
    assert rooms.splitlines()[1].endswith(f" {ROOM}")


async def test_invisible_characters_in_arguments_are_ignored(design: Harness) -> None:
    """IDs copied out of a client (or out of an older reply) may carry zero-width spaces and
    direction marks."""
    [clean] = await design.command(ROOM, ADMIN, f"!whereis {BOB}")
    for pasted in ("@\u200bbob:\u200bfake.\u200btest", "\u200e@bob:fake.test\u200f", "@bob\u2060:fake.test\ufeff"):
        assert await design.command(ROOM, ADMIN, f"!whereis {pasted}") == [clean], repr(pasted)
    [history] = await design.command(ROOM, ADMIN, "!history @\u200bbob:fake.test 2\u200b")
    assert history.startswith(f"No changes of {BOB} since I started tracking:")


async def test_errors_say_what_is_wrong(design: Harness) -> None:
    for count in ("0", "51", "99999"):
        [reply] = await design.command(ROOM, ADMIN, f"!history {BOB} {count}")
        assert reply == f"“{count}” is not a count I can show: the count must be a number from 1 to 50."
    for when, says in (
        ("tomorrow", "“tomorrow” is not a time like 2026-11-20 14:00, 14:00 or 3h ago (UTC)."),
        ("2099-01-01 10:00", "“2099-01-01 10:00” is in the future."),
        ("2026-02-30", "“2026-02-30” is not a date and time that exists."),
        ("1990-01-01", "“1990-01-01” is more than ten years ago."),
    ):
        [reply] = await design.command(ROOM, ADMIN, f"!members at {when}")
        assert reply.startswith(says + " Usage: !members at <time>"), reply
    [period] = await design.command(ROOM, ADMIN, "!joins 0h")
    assert period.startswith("“0h” is an empty period.")


async def test_history_of_people_who_were_there_before_the_bot(design: Harness) -> None:
    [alice] = await design.command(ROOM, ADMIN, f"!history {ALICE}")
    lines = alice.splitlines()
    assert lines[0] == f"No changes of {ALICE} since I started tracking:"
    assert re.fullmatch(
        r"• member of “Design” since before \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(when I started tracking it\)", lines[1]
    ), lines[1]
    await design.deliver(design.hs.member(ROOM, CAROL, "join"))
    await design.deliver(design.hs.member(ROOM, ALICE, "leave"))
    [after] = await design.command(ROOM, ADMIN, f"!history {ALICE}")
    assert after.splitlines()[0] == f"Latest 1 change of {ALICE}, newest first:"
    assert after.splitlines()[1].startswith("• left “Design”")
    assert len(after.splitlines()) == 2  # the leave explains her membership: nothing held before
    [carol] = await design.command(ROOM, ADMIN, f"!history {CAROL}")
    assert carol.splitlines()[1].startswith("• joined “Design”") and len(carol.splitlines()) == 2


async def test_members_at_a_time_before_tracking_says_when_tracking_began(design: Harness) -> None:
    [before] = await design.command(ROOM, ADMIN, "!members at 1m ago")
    assert re.fullmatch(
        r"I have no record of “Design” at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: I started tracking it at"
        r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.",
        before,
    ), before


async def test_a_failed_power_level_check_is_said_as_such(design: Harness) -> None:
    design.hs.fail("/state/m.room.power_levels", status=502, times=1)
    [reply] = await design.command(ROOM, BOB, "!resync")
    assert reply.startswith("I could not check your power level in this room: the homeserver answered M_UNKNOWN")
    [refused] = await design.command(ROOM, BOB, "!resync")
    assert refused.startswith("Sorry, only the bot's admins")


async def test_odd_spacing_and_invisible_characters_in_the_command_word(design: Harness) -> None:
    [expected] = await design.command(ROOM, ADMIN, "!rooms")
    for body in ("!rooms\u200b", "!roomstate\u00a0rooms", "!roomstate\trooms", "!ROOMSTATE   rooms", "!\u200erooms"):
        assert await design.command(ROOM, ADMIN, body) == [expected], repr(body)
