"""Safe HTML: every string written by someone else (room names, topics, display names, reasons)
renders inert: invisible and direction characters removed (``text.visible``), then escaped. Links
only ever point at the web view's own routes, built here from validated IDs; nothing another user
wrote becomes a link, whatever its scheme."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

from ..text import visible


class Markup(str):
    """HTML that is safe as it is (built here)."""


def esc(value: object, limit: int = 200) -> Markup:
    """Someone else's text (or a number), escaped; at most ``limit`` characters."""
    if isinstance(value, Markup):
        return value
    text = visible(str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return Markup(html.escape(text, quote=True))


def join(parts: Iterable[str]) -> Markup:
    return Markup("".join(part if isinstance(part, Markup) else esc(part) for part in parts))


def tag(element: str, /, *children: object, **attributes: object) -> Markup:
    """An element; attribute values are escaped (``class_`` for ``class``), children too unless
    they are Markup."""
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value, 2000)}"'
        for key, value in attributes.items()
        if value is not None and value is not False
    )
    inner = "".join(child if isinstance(child, Markup) else esc(child, 2000) for child in children if child is not None)
    if element in _VOID:
        return Markup(f"<{element}{attrs}>")
    return Markup(f"<{element}{attrs}>{inner}</{element}>")


_VOID = frozenset({"input", "meta", "link", "br"})


def path(base: str, *segments: str, query: Mapping[str, object] | None = None) -> str:
    """A URL of the web view: its base, then each segment percent-encoded (IDs hold "!", ":",
    "@" and "#"), then the query. The base alone ends in "/" (the rooms page): maubot's manager
    mounts a plugin's web app at ``…/plugin/<instance>/`` and has nothing without the slash."""
    url = base.rstrip("/") + ("".join("/" + quote(segment, safe="") for segment in segments) or "/")
    items = {key: str(value) for key, value in (query or {}).items() if value not in (None, "")}
    return url + ("?" + urlencode(items) if items else "")
