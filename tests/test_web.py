"""The web view, API and metrics over real HTTP (served as maubot serves a plugin's web app), with
the real plugin and the fake homeserver: private by default, signed in by a one-time link sent
in a direct room, sessions that see exactly what chat shows, inert rendering of other people's
text, API tokens and metrics."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from roomstate.metrics import Histogram, Metrics

from .helpers import ADMIN, ALICE, BOB, BOT, CAROL, DAVE, ROOM, Harness

OPS = "!ops:fake.test"
HOSTILE = '<script>alert(1)</script>\u202e"><img src=x onerror=alert(2)> javascript:alert(3)'


@pytest_asyncio.fixture
async def site(harness: Harness) -> AsyncIterator[Harness]:
    """Design (Alice, Bob, the admin) and Ops (Bob, Carol), the web view served."""
    await harness.serve_web()
    await harness.start()
    await harness.setup_room(ROOM, ALICE, "Design", (BOB, ADMIN))
    await harness.setup_room(OPS, BOB, "Ops", (CAROL,))
    yield harness


def link_sent_to(harness: Harness, user: str) -> str:
    """The sign-in link the bot sent to ``user``'s direct room."""
    direct = [room for room, request in harness.hs.created if user in request.get("invite", [])]
    assert direct, "no direct room was made"
    bodies = [content["body"] for room, content in harness.hs.sent if room == direct[-1]]
    found = re.findall(r"http://\S+/login\?t=\S+", "\n".join(bodies))
    assert found, bodies
    return found[-1]


async def sign_in(harness: Harness, user: str, room: str = ROOM) -> aiohttp.ClientSession:
    """A browser-like session (its own cookie jar) signed in as ``user`` through !dashboard."""
    before = len(harness.hs.sent)
    await harness.command(room, user, "!dashboard")
    [reply] = [content["body"] for where, content in harness.hs.sent[before:] if where == room]
    assert reply == "I sent you a sign-in link in our direct chat (it works once)."
    link = link_sent_to(harness, user)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with browser.get(link) as page:
        assert page.status == 200 and "Sign in" in await page.text()
    async with browser.post(link.split("?")[0], data={"t": URL(link).query["t"]}, allow_redirects=False) as done:
        assert done.status == 303
        cookie = done.cookies["roomstate_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/_matrix/maubot/plugin/test"
        home = done.headers["Location"]
    async with browser.get(home, allow_redirects=False) as rooms:  # where the sign-in leads: the rooms page
        assert rooms.status == 200 and "<h1>Rooms</h1>" in await rooms.text(), home
        assert f'<a href="{home}">Rooms</a>' in await rooms.text()  # and the nav's link to it
    return browser


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    async with session.get(url, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers


async def test_nothing_answers_without_signing_in_but_health(site: Harness) -> None:
    base = site.web_url
    async with aiohttp.ClientSession() as anonymous:
        status, text, _ = await get(anonymous, f"{base}/health")
        assert (status, text) == (200, "ok")
        for path in ("/", "/room/%21design%3Afake.test", "/user/%40alice%3Afake.test"):
            status, text, headers = await get(anonymous, base + path)
            assert status == 401 and "Design" not in text and "alice" not in text, path
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        for path in ("/api/v1/rooms", "/metrics"):
            status, text, _ = await get(anonymous, base + path)
            assert status == 401 and "Design" not in text, path


async def test_the_link_goes_to_a_direct_room_only_and_works_once(site: Harness) -> None:
    before = len(site.hs.sent)
    browser = await sign_in(site, ALICE)
    sent_in_design = [c["body"] for room, c in site.hs.sent[before:] if room == ROOM]
    assert not any("login?t=" in body for body in sent_in_design)  # never in a shared room
    status, text, _ = await get(browser, site.web_url + "/")
    assert status == 200 and "Design" in text
    link = link_sent_to(site, ALICE)
    async with aiohttp.ClientSession() as other:
        async with other.post(link.split("?")[0], data={"t": URL(link).query["t"]}, allow_redirects=False) as reuse:
            assert reuse.status == 400  # used already
        forged = URL(link).query["t"][:-3] + "abc"
        async with other.post(link.split("?")[0], data={"t": forged}, allow_redirects=False) as fake:
            assert fake.status == 400
    await browser.close()


async def test_secrets_go_only_to_a_private_room_the_bot_made_while_only_the_two_are_in_it(site: Harness) -> None:
    pair = "!pair:fake.test"  # a public room that happens to hold just the admin and the bot
    site.hs.create_room(pair, ADMIN, name="Pair")
    site.hs.state(pair, "m.room.join_rules", {"join_rule": "public"}, sender=ADMIN)
    await site.join_bot(pair, ADMIN)
    before = len(site.hs.sent)
    await site.command(pair, ADMIN, "!dashboard")
    assert not any("login?t=" in c.get("body", "") for room, c in site.hs.sent[before:] if room == pair)
    [(made, request)] = [(room, body) for room, body in site.hs.created if ADMIN in body.get("invite", [])]
    assert request["preset"] == "private_chat" and request["is_direct"] is True
    await site.deliver(*[e for e in site.hs.stream if e["room_id"] == made])  # the bot's join syncs it

    await site.command(pair, ADMIN, "!dashboard")  # the same room again, not a new one each time
    assert [room for room, body in site.hs.created if ADMIN in body.get("invite", [])] == [made]
    assert link_sent_to(site, ADMIN) != ""

    await site.deliver(site.hs.member(made, CAROL, "join"))  # someone else is in it now
    [refused] = await site.command(pair, ADMIN, "!dashboard")
    assert refused.startswith("I can't send it: someone else is in our direct chat now")
    assert len([room for room, body in site.hs.created if ADMIN in body.get("invite", [])]) == 1  # not yet
    assert site.bot is not None
    later = time.time() + 3601
    site.bot.direct.clock = lambda: later  # an hour on: a new room, and the bot leaves the old one
    await site.command(pair, ADMIN, "!dashboard")
    rooms = [room for room, body in site.hs.created if ADMIN in body.get("invite", [])]
    assert len(rooms) == 2 and rooms[0] == made
    assert site.hs.rooms[made].membership(BOT) == "leave"
    sent_to_made = [c["body"] for room, c in site.hs.sent if room == made]
    assert sum("login?t=" in body for body in sent_to_made) == 2  # not the third link
    assert any("login?t=" in c["body"] for room, c in site.hs.sent if room == rooms[1])


async def test_who_rejected_the_invite_is_invited_again_into_the_same_room(site: Harness) -> None:
    await site.command(ROOM, ALICE, "!dashboard")
    [made] = [room for room, body in site.hs.created if ALICE in body.get("invite", [])]
    [request] = [body for room, body in site.hs.created if room == made]
    history = [e for e in request["initial_state"] if e["type"] == "m.room.history_visibility"]
    assert history == [
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}}
    ]
    site.hs.member(made, ALICE, "leave")  # she rejects the invite
    for _ in range(3):
        await site.command(ROOM, ALICE, "!dashboard")
    assert [room for room, body in site.hs.created if ALICE in body.get("invite", [])] == [made]  # no new rooms
    assert site.hs.invites == [(made, ALICE)]  # invited again once; then her invite stood
    assert sum("login?t=" in c["body"] for room, c in site.hs.sent if room == made) == 4


async def test_secrets_are_not_logged(site: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await site.command(ROOM, ADMIN, "!dashboard")
    await site.command(ROOM, ADMIN, "!roomstate token create logs")
    link = link_sent_to(site, ADMIN)
    token = re.findall(r"rs_[A-Za-z0-9_-]+", "\n".join(c["body"] for _, c in site.hs.sent))[0]
    assert any("sensitive bytes" in record.getMessage() for record in caplog.records)  # the requests were logged
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert URL(link).query["t"] not in logged and token not in logged


async def test_a_session_sees_exactly_what_chat_shows_checked_on_every_request(site: Harness) -> None:
    browser = await sign_in(site, CAROL, OPS)
    status, text, _ = await get(browser, site.web_url + "/")
    assert status == 200 and "Ops" in text and "Design" not in text
    design = site.web_url + "/room/" + ROOM.replace("!", "%21").replace(":", "%3A")
    ops = site.web_url + "/room/" + OPS.replace("!", "%21").replace(":", "%3A")
    assert (await get(browser, design))[0] == 404  # the same as a room that does not exist
    assert (await get(browser, site.web_url + "/room/%21nothere%3Afake.test"))[0] == 404
    status, text, _ = await get(browser, ops)
    assert status == 200 and "Carol" in text
    await site.deliver(site.hs.member(OPS, CAROL, "leave"))
    assert (await get(browser, ops))[0] == 404  # she left: the next load shows nothing
    status, text, _ = await get(browser, site.web_url + "/")
    assert "Ops" not in text
    await browser.close()


async def test_other_peoples_text_renders_inert(site: Harness) -> None:
    await site.deliver(site.hs.state(ROOM, "m.room.name", {"name": HOSTILE}))
    await site.deliver(site.hs.state(ROOM, "m.room.topic", {"topic": HOSTILE}))
    await site.deliver(site.hs.member(ROOM, BOB, "join", displayname=HOSTILE))
    browser = await sign_in(site, ADMIN)
    for path in ("/", "/room/%21design%3Afake.test", "/user/%40bob%3Afake.test"):
        status, text, _ = await get(browser, site.web_url + path)
        assert status == 200, path
        assert "<script>alert" not in text and "<img" not in text and "\u202e" not in text, path
        assert "&lt;script&gt;" in text, path
        assert not re.search(r"href=\"\s*javascript:", text, re.IGNORECASE), path
    await browser.close()


async def test_signing_out_needs_the_form_and_ends_the_session(site: Harness) -> None:
    browser = await sign_in(site, ALICE)
    _, text, _ = await get(browser, site.web_url + "/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', text)
    assert csrf is not None
    async with browser.post(site.web_url + "/signout", data={"csrf": "wrong"}) as refused:
        assert refused.status == 403
    assert (await get(browser, site.web_url + "/"))[0] == 200
    async with browser.post(site.web_url + "/signout", data={"csrf": csrf.group(1)}) as done:
        assert done.status == 200 and "signed out" in await done.text()
    assert (await get(browser, site.web_url + "/"))[0] == 401
    await browser.close()


async def test_dashboard_signout_in_chat_ends_every_session_of_the_asker(site: Harness) -> None:
    browser = await sign_in(site, ALICE)
    [reply] = await site.command(ROOM, ALICE, "!dashboard signout")
    assert reply == "Signed you out of the web view: ended 1 session."
    assert (await get(browser, site.web_url + "/"))[0] == 401
    [refused] = await site.command(ROOM, ALICE, "!dashboard signout all")
    assert refused.startswith("Sorry, only the bot's admins")
    await browser.close()


async def test_api_tokens_are_made_listed_and_revoked_in_chat(site: Harness) -> None:
    before = len(site.hs.sent)
    await site.command(ROOM, ADMIN, "!roomstate token create ci")
    [sent] = [content["body"] for where, content in site.hs.sent[before:] if where == ROOM]
    assert sent == "I sent you the token in our direct chat."
    direct = [room for room, request in site.hs.created if ADMIN in request.get("invite", [])][-1]
    token = re.findall(r"rs_[A-Za-z0-9_-]+", "\n".join(c["body"] for room, c in site.hs.sent if room == direct))[0]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as tool:
        async with tool.get(site.web_url + "/api/v1/rooms", params={"limit": "1"}, headers=headers) as first:
            page = await first.json()
        assert [r["name"] for r in page["rooms"]] == ["Design"] and page["next_cursor"] == ROOM
        async with tool.get(
            site.web_url + "/api/v1/rooms", params={"cursor": page["next_cursor"]}, headers=headers
        ) as second:
            assert [r["name"] for r in (await second.json())["rooms"]] == ["Ops"]
        async with tool.get(site.web_url + "/metrics", headers=headers) as metrics:
            text = await metrics.text()
            assert metrics.status == 200 and "# TYPE roomstate_events_total counter" in text
            assert re.search(r"^roomstate_rooms 2$", text, re.MULTILINE)
        [listed] = await site.command(ROOM, ADMIN, "!roomstate token list")
        assert listed.startswith("API tokens:") and "“ci”" in listed and token not in listed
        assert (await site.command(ROOM, ALICE, "!roomstate token create mine"))[0].startswith("Sorry")
        [revoked] = await site.command(ROOM, ADMIN, "!roomstate token revoke ci")
        assert revoked == "Revoked the token ci."
        async with tool.get(site.web_url + "/api/v1/rooms", headers=headers) as gone:
            assert gone.status == 401


async def test_metrics_count_what_happened(site: Harness) -> None:
    await site.command(ROOM, ALICE, "!rooms")
    await site.command(ROOM, ALICE, "!rooms")
    await site.command(ROOM, BOB, "!whereis @carol:fake.test")
    await site.command(ROOM, ADMIN, "!resync")
    await site.deliver(site.hs.member(OPS, DAVE, "join"))
    site.update_config(web={"open_metrics": True})
    async with aiohttp.ClientSession() as scraper, scraper.get(site.web_url + "/metrics") as response:
        assert response.status == 200 and response.content_type == "text/plain"
        text = await response.text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert samples['roomstate_commands_total{command="rooms"}'] == "2"
    assert samples['roomstate_commands_total{command="whereis"}'] == "1"
    assert samples["roomstate_rooms"] == "2"
    # Design: Alice, Bob, the admin, the bot; Ops: Bob, Carol, Dave, the bot
    assert samples['roomstate_members{membership="join"}'] == "8"
    assert samples["roomstate_resync_queue_rooms"] == "0"
    assert samples['roomstate_resyncs_total{outcome="ok",reason="join"}'] == "2"  # the bot's two joins
    assert samples['roomstate_resyncs_total{outcome="ok",reason="command"}'] == "1"  # the !resync
    assert len([name for name in samples if name.startswith("roomstate_resyncs_total")]) == 2
    history_rows = site.db.scalar("SELECT COUNT(*) FROM roomstate_history")
    assert history_rows > 0 and samples["roomstate_history_rows"] == str(history_rows)
    assert int(samples['roomstate_homeserver_requests_total{outcome="ok"}']) >= 2
    count = int(samples["roomstate_homeserver_request_seconds_count"])
    assert count >= 2 and samples['roomstate_homeserver_request_seconds_bucket{le="+Inf"}'] == str(count)
    assert "Design" not in text and ROOM not in text  # no room names or IDs in metrics


def test_histogram_buckets_count_every_value_at_or_below_their_bound() -> None:
    histogram = Histogram((0.5, 0.1, 1.0))  # given in any order
    for value in (0.05, 0.1, 0.3, 0.5, 0.7, 2.0, 0.1):
        histogram.observe(value)
    assert histogram.bounds == (0.1, 0.5, 1.0)
    assert histogram.counts == [3, 5, 6] and histogram.total == 7
    assert histogram.sum == pytest.approx(3.75)
    lines = Metrics().render().splitlines()
    assert 'roomstate_database_commit_seconds_bucket{le="+Inf"} 0' in lines


async def test_an_expired_link_or_session_is_refused_with_nothing_in_it(site: Harness) -> None:
    assert site.bot is not None
    auth = site.bot.auth
    real = auth.clock
    browser = await sign_in(site, ALICE)  # a session, then a fresh link never used
    before = len(site.hs.sent)
    await site.command(ROOM, ALICE, "!dashboard")
    assert len(site.hs.sent) > before
    link = link_sent_to(site, ALICE)
    later = real() + site.bot.config.web_link_seconds + 1  # the link's 10 minutes are over
    auth.clock = lambda: later
    form = {"t": URL(link).query["t"]}
    async with (
        aiohttp.ClientSession() as other,
        other.post(link.split("?")[0], data=form, allow_redirects=False) as late,
    ):
        assert late.status == 400 and "Design" not in await late.text()
        assert "roomstate_session" not in late.cookies
    assert (await get(browser, site.web_url + "/"))[0] == 200  # the session (12 h) still works
    much_later = real() + 12 * 3600 + 1
    auth.clock = lambda: much_later
    status, text, _ = await get(browser, site.web_url + "/")
    assert status == 401 and "Design" not in text
    status, text, _ = await get(browser, site.web_url + "/room/%21design%3Afake.test")
    assert status == 401 and "Alice" not in text
    await browser.close()


async def test_forms_from_another_site_or_too_big_are_refused(site: Harness) -> None:
    await site.command(ROOM, ALICE, "!dashboard")
    link = link_sent_to(site, ALICE)
    form, target = {"t": URL(link).query["t"]}, link.split("?")[0]
    async with aiohttp.ClientSession() as other:
        for headers in (
            {"Origin": "https://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": "null"},  # a sibling subdomain
        ):
            async with other.post(target, data=form, headers=headers, allow_redirects=False) as refused:
                assert refused.status == 403 and "roomstate_session" not in refused.cookies, headers
        async with other.post(target, data={**form, "pad": "x" * 10_000}, allow_redirects=False) as big:
            assert big.status == 413
        origin = str(URL(site.web_url).origin())  # the page's own form: works, the link unspent so far
        async with other.post(target, data=form, headers={"Origin": origin}, allow_redirects=False) as done:
            assert done.status == 303 and "roomstate_session" in done.cookies


async def test_signing_out_voids_unused_links_and_a_token_of_an_ex_admin_stays_dead(site: Harness) -> None:
    await site.command(ROOM, ALICE, "!dashboard")
    unused = link_sent_to(site, ALICE)
    await site.command(ROOM, ALICE, "!dashboard signout")
    async with aiohttp.ClientSession() as other:
        async with other.post(unused.split("?")[0], data={"t": URL(unused).query["t"]}, allow_redirects=False) as late:
            assert late.status == 400

        await site.command(ROOM, ADMIN, "!roomstate token create ops")
        token = re.findall(r"rs_[A-Za-z0-9_-]+", "\n".join(c["body"] for _, c in site.hs.sent))[-1]
        headers = {"Authorization": f"Bearer {token}"}
        async with other.get(site.web_url + "/api/v1/rooms/%21nothere%3Afake.test/members", headers=headers) as gone:
            assert gone.status == 404  # a room that does not exist, for an admin too
        site.update_config(admins=[])
        async with other.get(site.web_url + "/api/v1/rooms", headers=headers) as refused:
            assert refused.status == 401
        site.update_config(admins=[ADMIN])  # an admin again: the token stays revoked
        async with other.get(site.web_url + "/api/v1/rooms", headers=headers) as still:
            assert still.status == 401
    [listed] = await site.command(ROOM, ADMIN, "!roomstate token list")
    assert "ops" in listed and "revoked" in listed


async def test_the_rooms_table_sorts_by_any_column_and_filters(site: Harness) -> None:
    await site.setup_room("!zoo:fake.test", ALICE, "Zoo", (BOB, CAROL, DAVE))
    await site.setup_room("!attic:fake.test", ALICE, "attic", (BOB, CAROL, DAVE))
    browser = await sign_in(site, ADMIN)

    async def order(query: str) -> list[str]:
        status, text, _ = await get(browser, site.web_url + "/" + query)
        assert status == 200
        return re.findall(r'<td><a href="[^"]*/room/[^"]*">([^<]*)</a>', text)

    assert await order("") == ["attic", "Design", "Ops", "Zoo"]  # by name, case-insensitively
    assert await order("?sort=name&dir=desc") == ["Zoo", "Ops", "Design", "attic"]
    # members: attic and Zoo 5, Design 4, Ops 3; ties in name order either way
    assert await order("?sort=members&dir=desc") == ["attic", "Zoo", "Design", "Ops"]
    assert await order("?sort=members") == ["Ops", "Design", "attic", "Zoo"]
    assert await order("?q=O") == ["Ops", "Zoo"]
    assert await order("?sort=nonsense") == ["attic", "Design", "Ops", "Zoo"]
    await browser.close()


async def test_ids_with_a_slash_have_pages(site: Harness) -> None:
    slashed_room, slashed_user = "!a/b:fake.test", "@old/style:fake.test"
    await site.setup_room(slashed_room, ALICE, "Slashed", (slashed_user,))
    browser = await sign_in(site, ADMIN)
    status, text, _ = await get(browser, site.web_url + "/room/%21a%2Fb%3Afake.test")
    assert status == 200 and "Slashed" in text
    status, text, _ = await get(browser, site.web_url + "/user/%40old%2Fstyle%3Afake.test")
    assert status == 200 and "Slashed" in text
    assert (await get(browser, site.web_url + "/room/%21a%2Fnothere%3Afake.test"))[0] == 404
    await browser.close()


async def test_members_are_paged_searched_and_filtered(site: Harness) -> None:
    crowd = [f"@guest{i:02d}:fake.test" for i in range(60)]
    await site.setup_room("!crowd:fake.test", ALICE, "Crowd", tuple(crowd))
    site.hs.member("!crowd:fake.test", DAVE, "invite", sender=ALICE)
    await site.deliver(site.hs.member("!crowd:fake.test", DAVE, "invite", sender=ALICE))
    browser = await sign_in(site, ADMIN)
    page = site.web_url + "/room/%21crowd%3Afake.test"

    async def members(query: str) -> tuple[str, list[str]]:
        status, text, _ = await get(browser, page + query)
        assert status == 200
        shown = re.findall(r'<td><a href="[^"]*/user/[^"]*">([^<]*)</a>', text.split("Latest changes")[0])
        return text, shown

    everyone = sorted([ALICE, BOT, DAVE, *crowd])  # 63, by user ID
    text, shown = await members("")
    assert "63 members, by user ID" in text and shown == everyone[:50]
    _, shown = await members("?page=2")
    assert shown == everyone[50:]
    _, past_the_end = await members("?page=99")  # the last page
    assert past_the_end == everyone[50:]
    _, found = await members("?q=GUEST5")
    assert found == [f"@guest5{i}:fake.test" for i in range(10)]
    _, invited = await members("?membership=invite")
    assert invited == [DAVE]
    await browser.close()


async def test_paths_and_methods_no_route_takes_carry_the_security_headers(site: Harness) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for method, path in (("GET", "/nope"), ("GET", "/signout"), ("PUT", "/login"), ("GET", "/room/")):
            async with anonymous.request(method, site.web_url + path, allow_redirects=False) as answer:
                assert answer.status in (404, 405), (method, path)
                assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'"), (method, path)
                assert answer.headers["Cache-Control"] == "no-store" and answer.headers["X-Frame-Options"] == "DENY"
        async with anonymous.get(site.web_url + "/static/style.css") as style:
            assert style.headers["Cache-Control"] == "max-age=3600"  # what a route sets stays
