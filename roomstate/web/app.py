"""The web view's routes, on maubot's plugin web app (``webapp: true``), which serves them under
``<public_url>/_matrix/maubot/plugin/<instance id>/`` and authenticates nothing: every route here
does. Pages need a session (``!dashboard`` sends a sign-in link); the API and metrics a bearer
token; only ``/health`` answers everyone, with "ok" and nothing else.

Every response forbids framing and everything not served by the plugin itself
(Content-Security-Policy), is not cached, and sends no referrer. A session sees exactly what its
user sees in chat (the visibility policy, asked again on every request)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from aiohttp import web
from maubot.handlers import web as routes
from mautrix.types import RoomID, UserID
from yarl import URL

from ..charts import bar_chart, bar_rows, line_chart, line_rows
from ..charts import table as chart_table
from ..config import Config
from ..db import StorageError
from ..metrics import Metrics
from ..models import Member
from ..parsing import is_room_id, is_user_id
from ..queries import RoomPages, RoomQueries
from . import pages
from .auth import Session, WebAuth
from .html import Markup, esc, path, tag
from .style import CSS

COOKIE = "roomstate_session"
ROOMS_PER_PAGE = 50
MEMBERS_PER_PAGE = 50
TRANSITIONS_SHOWN = 30
API_PAGE_LIMIT = 500
MAX_FORM_BYTES = 4096  # a sign-in or sign-out form is a few hundred bytes
# the tab's icon: three rooms, one of them lit (so the browser asks for no /favicon.ico)
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect x="1" y="1" width="6" height="6" fill="#3b6ea5"/><rect x="9" y="1" width="6" height="6" fill="#9ab"/>'
    '<rect x="1" y="9" width="14" height="6" fill="#9ab"/></svg>'
)
BUCKET_NAMES = {3_600: "hour", 6 * 3_600: "6 hours", 86_400: "day"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=Callable[..., Awaitable[web.StreamResponse]])


def _get(route: str) -> Callable[[M], M]:
    """maubot's ``web.get``, typed for methods (maubot declares it for plain functions)."""
    return cast("Callable[[M], M]", routes.get(route))


def _post(route: str) -> Callable[[M], M]:
    return cast("Callable[[M], M]", routes.post(route))


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> web.Response:
    """maubot's web app middleware: every answer carries the security headers, also the 404 and
    405 aiohttp gives for paths and methods no route takes (without a body of ours)."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = web.Response(status=error.status, text=f"{error.status} {error.reason}", content_type="text/plain")
    _secured(response)
    return response


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(number, low), high)


class WebView:
    """The routes (maubot's ``register_handler_class`` picks them up) and what they need."""

    def __init__(
        self, queries: RoomQueries, auth: WebAuth, config: Config, metrics: Metrics, base_url: str, gauges: Any
    ) -> None:
        self.queries = queries
        self.rooms_view = RoomPages(queries)
        self.auth = auth
        self.config = config
        self.metrics = metrics
        self.base = str(base_url).rstrip("/")
        self.gauges = gauges  # async () -> gauges for /metrics
        self.secure = self.base.startswith("https://")
        self.cookie_path = URL(self.base).path or "/"  # the cookie goes to this instance's pages only
        self.origin = str(URL(self.base).origin())

    # ---- plumbing -------------------------------------------------------------------------------

    def _html(self, title: str, body: Markup, session: Session | None, status: int = 200) -> web.Response:
        viewer = None
        if session is not None:
            viewer = pages.Viewer(session.user_id, session.csrf, self.config.is_admin(session.user_id))
        text = pages.layout(self.base, title, body, viewer)
        response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
        return _secured(response)  # type: ignore[return-value]

    def _not_signed_in(self) -> web.Response:
        body = pages.message(
            "Sign in first: send !dashboard to the bot (in a direct chat, or any room you share with it); it sends "
            "you a sign-in link that works once."
        )
        return self._html("Sign in", body, None, status=401)

    def _not_found(self, session: Session) -> web.Response:
        # the same for a room that does not exist and one the viewer may not see: nothing leaks
        return self._html("Not found", pages.message("There is nothing here that you may see."), session, status=404)

    async def _session(self, request: web.Request) -> Session | None:
        return await self.auth.session(request.cookies.get(COOKIE))

    # ---- pages ----------------------------------------------------------------------------------

    @_get("/health")
    async def health(self, request: web.Request) -> web.StreamResponse:
        return _secured(web.Response(text="ok", content_type="text/plain"))

    @_get("/static/style.css")
    async def style(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(text=CSS, content_type="text/css", charset="utf-8")
        response.headers["Cache-Control"] = "max-age=3600"
        return _secured(response)

    @_get("/static/icon.svg")
    async def icon(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(text=ICON, content_type="image/svg+xml", charset="utf-8")
        response.headers["Cache-Control"] = "max-age=86400"
        return _secured(response)

    @_get("/login")
    async def login_page(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("t", "")
        if not await self.auth.link_is_plausible(token):
            return self._html("Sign in", pages.message("This sign-in link is not valid."), None, status=400)
        return self._html("Sign in", pages.sign_in(self.base, token), None)

    def _foreign_form(self, request: web.Request) -> web.Response | None:
        """A refusal for a form post that is too big or comes from another site (login CSRF: a
        page elsewhere signing the visitor in as someone else, or out); None if it may go on."""
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return self._html("Too big", pages.message("That request is too big."), None, status=413)
        # Sec-Fetch-Site: what every current browser says; Origin for older ones ("null" is what a
        # page under Referrer-Policy: no-referrer, like ours, sends from itself)
        fetch_site = request.headers.get("Sec-Fetch-Site", "same-origin")
        origin = request.headers.get("Origin", "null")
        if fetch_site not in ("same-origin", "none") or origin not in ("null", self.origin):
            return self._html("Refused", pages.message("Forms of this page work from this page only."), None, 403)
        return None

    @_post("/login")
    async def login(self, request: web.Request) -> web.StreamResponse:
        refused = self._foreign_form(request)
        if refused is not None:
            return refused
        form = await request.post()
        token = form.get("t")
        used = await self.auth.use_link(token if isinstance(token, str) else None)
        if used is None:
            body = pages.message(
                "This sign-in link was used already, has expired, or is not valid. Ask for a new one with !dashboard."
            )
            return self._html("Sign in", body, None, status=400)
        cookie, _ = used
        response = web.Response(status=303, headers={"Location": path(self.base)})
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self.config.web_session_seconds),
            path=self.cookie_path,
            httponly=True,
            secure=self.secure,
            samesite="Strict",
        )
        return _secured(response)

    @_post("/signout")
    async def signout(self, request: web.Request) -> web.StreamResponse:
        refused = self._foreign_form(request)
        if refused is not None:
            return refused
        session = await self._session(request)
        form = await request.post()
        if session is None or form.get("csrf") != session.csrf:
            return self._html(
                "Sign out", pages.message("That did not work: the form was stale. Reload and try again."), session, 403
            )
        await self.auth.sign_out(session)
        response = self._html("Signed out", pages.message("You are signed out."), None)
        response.del_cookie(COOKIE, path=self.cookie_path)
        return response

    @_get("/")
    async def rooms(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return self._not_signed_in()
        answer = await self.queries.rooms_for(session.user_id)
        if answer.refused:
            return self._html(
                "Rooms", pages.message("Only the bot's admins may see which rooms it is in."), session, 403
            )
        admin = self.config.is_admin(session.user_id)
        q = request.query.get("q", "")[:100]
        sort = request.query.get("sort", "name")
        if sort not in pages.ROOM_COLUMNS and not (admin and sort == "waiting"):
            sort = "name"
        descending = request.query.get("dir") == "desc"
        needle = q.casefold()
        found = [
            room
            for room in answer.rooms
            if not needle or needle in room.display_name.casefold() or needle in (room.canonical_alias or "").casefold()
        ]
        # the answer comes sorted by name; a stable sort by another column keeps rooms of the same
        # value in name order
        if sort == "name":
            if descending:
                found.reverse()
        else:
            key = pages.ROOM_COLUMNS[sort][1] if sort in pages.ROOM_COLUMNS else (lambda r: r.needs_resync)
            found.sort(key=key, reverse=descending)
        page_count = max(1, math.ceil(len(found) / ROOMS_PER_PAGE))
        page = _int(request.query.get("page"), 1, 1, page_count)
        shown = found[(page - 1) * ROOMS_PER_PAGE : page * ROOMS_PER_PAGE]
        body = pages.rooms(
            self.base,
            shown,
            total=len(found),
            admin=admin,
            q=q,
            sort=sort,
            descending=descending,
            page=page,
            pages=page_count,
            limited=answer.only_rooms_of_asker,
        )
        return self._html("Rooms", body, session)

    @_get("/room/{room_id:.+}")  # IDs may hold "/" (maubot decodes the path before routing)
    async def room(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return self._not_signed_in()
        room_id = request.match_info["room_id"]
        if not is_room_id(room_id):
            return self._not_found(session)
        room_id = RoomID(room_id)
        viewer = session.user_id
        # who may see it first: a room one may not see and one that does not exist cost the same
        if not await self.rooms_view.may_see(room_id, viewer):
            return self._not_found(session)
        info = await self.queries.room(room_id)
        if info is None:
            return self._not_found(session)
        period = request.query.get("period", "7d")
        if period not in pages.PERIODS:
            period = "7d"
        end = time.time()
        start = end - pages.PERIODS[period]
        bucket = pages.BUCKETS[period]
        membership = request.query.get("membership", "")
        membership = membership if membership in pages.MEMBERSHIPS else ""
        search = request.query.get("q", "")[:100]
        counts = await self.rooms_view.member_counts(room_id, viewer, start, end, bucket) or []
        waves = await self.rooms_view.joins_and_leaves(room_id, viewer, start, bucket) or []
        page = _int(request.query.get("page"), 1, 1, 10**6)

        async def members_page(page: int) -> tuple[int, list[Member]]:
            found = await self.rooms_view.members(
                room_id,
                viewer,
                membership=membership or None,
                search=search,
                offset=(page - 1) * MEMBERS_PER_PAGE,
                limit=MEMBERS_PER_PAGE,
            )
            return found or (0, [])

        total, shown_members = await members_page(page)
        page_count = max(1, math.ceil(total / MEMBERS_PER_PAGE))
        if page > page_count:  # past the end: the last page
            page = page_count
            total, shown_members = await members_page(page)
        transitions = await self.rooms_view.transitions(room_id, viewer, TRANSITIONS_SHOWN) or []
        title = f"Members of this room, last {period}"
        body = pages.room(
            self.base,
            info,
            period=period,
            counts_chart=Markup(
                line_chart(counts, title=title, start=start, end=end, y_label="members", id_prefix="counts")
            ),
            counts_table=Markup(chart_table(line_rows(counts, start, end), ["Time (UTC)", "Members"], caption=title)),
            waves_chart=Markup(
                bar_chart(
                    waves,
                    title=f"Joins and leaves per {BUCKET_NAMES[bucket]}",
                    start=start,
                    end=end,
                    bucket_seconds=bucket,
                    id_prefix="waves",
                )
            ),
            waves_table=Markup(
                chart_table(bar_rows(waves, bucket), ["From (UTC)", "Joins", "Leaves"], caption="Joins and leaves")
            ),
            members=shown_members,
            members_total=total,
            membership=membership,
            search=search,
            page=page,
            pages=page_count,
            transitions=transitions,
            admin=self.config.is_admin(viewer),
        )
        return self._html(info.display_name, body, session)

    @_get("/user/{user_id:.+}")
    async def user(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        if session is None:
            return self._not_signed_in()
        user_id = request.match_info["user_id"]
        if not is_user_id(user_id):
            return self._not_found(session)
        where = await self.queries.whereis(UserID(user_id), asker=session.user_id, asked_in=RoomID(""))
        history = await self.queries.history_of(UserID(user_id), asker=session.user_id, count=50)
        if where.refused or history.refused:
            return self._html(user_id, pages.message("Only the bot's admins may ask about people here."), session, 403)
        names = {room.room_id: room for room in history.rooms}
        return self._html(user_id, pages.user(self.base, where, history, names), session)

    # ---- the JSON API and metrics ---------------------------------------------------------------

    def _json(self, data: Any, status: int = 200) -> web.Response:
        response = web.Response(
            text=json.dumps(data, ensure_ascii=False), status=status, content_type="application/json"
        )
        return _secured(response)  # type: ignore[return-value]

    async def _api_user(self, request: web.Request) -> UserID | None:
        return await self.auth.token_user(request.headers.get("Authorization"))

    def _unauthorized(self) -> web.Response:
        response = self._json({"error": "a valid API token is needed (Authorization: Bearer rs_…)"}, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="roomstate"'
        return response

    @_get("/api/v1/rooms")
    async def api_rooms(self, request: web.Request) -> web.StreamResponse:
        asker = await self._api_user(request)
        if asker is None:
            return self._unauthorized()
        answer = await self.queries.rooms_for(asker)
        rooms = sorted(answer.rooms, key=lambda r: r.room_id)
        after = request.query.get("cursor", "")
        limit = _int(request.query.get("limit"), 100, 1, API_PAGE_LIMIT)
        rest = [r for r in rooms if r.room_id > after]
        chunk = rest[:limit]
        return self._json(
            {
                "rooms": [_room_json(r) for r in chunk],
                "next_cursor": chunk[-1].room_id if len(rest) > limit else None,
            }
        )

    async def _api_room(self, request: web.Request, asker: UserID) -> RoomID | None:
        """The path's room, if it is a room ID the asker may see and the bot is in."""
        room_id = request.match_info["room_id"]
        if not is_room_id(room_id) or not await self.rooms_view.may_see(RoomID(room_id), asker):
            return None
        return RoomID(room_id) if await self.queries.room(RoomID(room_id)) is not None else None

    @_get("/api/v1/rooms/{room_id:.+}/members")
    async def api_members(self, request: web.Request) -> web.StreamResponse:
        asker = await self._api_user(request)
        if asker is None:
            return self._unauthorized()
        room_id = await self._api_room(request, asker)
        offset = _int(request.query.get("cursor"), 0, 0, 10**9)
        limit = _int(request.query.get("limit"), 100, 1, API_PAGE_LIMIT)
        found = None
        if room_id is not None:
            found = await self.rooms_view.members(
                room_id, asker, membership=None, search="", offset=offset, limit=limit
            )
        if found is None:
            return self._json({"error": "no such room, or not one you may see"}, 404)
        total, members = found
        return self._json(
            {
                "total": total,
                "members": [
                    {"user_id": m.user_id, "membership": m.membership, "displayname": m.displayname} for m in members
                ],
                "next_cursor": str(offset + limit) if offset + limit < total else None,
            }
        )

    @_get("/api/v1/rooms/{room_id:.+}/counts")
    async def api_counts(self, request: web.Request) -> web.StreamResponse:
        asker = await self._api_user(request)
        if asker is None:
            return self._unauthorized()
        room_id = await self._api_room(request, asker)
        period = request.query.get("period", "7d")
        period = period if period in pages.PERIODS else "7d"
        end = time.time()
        start = end - pages.PERIODS[period]
        counts = None
        if room_id is not None:
            counts = await self.rooms_view.member_counts(room_id, asker, start, end, pages.BUCKETS[period])
        if room_id is None or counts is None:
            return self._json({"error": "no such room, or not one you may see"}, 404)
        waves = await self.rooms_view.joins_and_leaves(room_id, asker, start, pages.BUCKETS[period]) or []
        return self._json(
            {
                "period": period,
                "members": [{"at": t, "joined": c} for t, c in counts],
                "joins_and_leaves": [{"from": t, "joins": j, "leaves": ls} for t, j, ls in waves],
            }
        )

    @_get("/api/v1/users/{user_id:.+}")
    async def api_user(self, request: web.Request) -> web.StreamResponse:
        asker = await self._api_user(request)
        if asker is None:
            return self._unauthorized()
        user_id = request.match_info["user_id"]
        if not is_user_id(user_id):
            return self._json({"error": "not a user ID"}, 400)
        where = await self.queries.whereis(UserID(user_id), asker=asker, asked_in=RoomID(""))
        history = await self.queries.history_of(
            UserID(user_id), asker=asker, count=_int(request.query.get("limit"), 50, 1, 50)
        )
        if where.refused or history.refused:
            return self._json({"error": "not allowed"}, 403)
        return self._json(
            {
                "user_id": user_id,
                "rooms": [_room_json(r) for r in where.rooms],
                "history": [
                    {
                        "room_id": e.room_id,
                        "membership": e.membership,
                        "previous": e.previous,
                        "at": e.observed_at,
                        "sender": e.sender,
                        "reason": e.reason,
                        "event_id": e.event_id,
                    }
                    for e in history.entries
                ],
            }
        )

    @_get("/metrics")
    async def metrics_page(self, request: web.Request) -> web.StreamResponse:
        if not self.config.open_metrics and await self._api_user(request) is None:
            return self._unauthorized()
        try:
            gauges = await self.gauges()
        except StorageError:
            gauges = []
        response = web.Response(text=self.metrics.render(gauges), content_type="text/plain")
        response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        return _secured(response)


def _room_json(room: Any) -> dict[str, Any]:
    return {
        "room_id": room.room_id,
        "name": room.name,
        "topic": room.topic,
        "canonical_alias": room.canonical_alias,
        "encrypted": room.encrypted,
        "room_version": room.room_version,
        "replacement_room": room.replacement_room,
        "joined_count": room.joined_count,
        "invited_count": room.invited_count,
    }


__all__ = ["COOKIE", "WebView", "esc", "tag"]
