"""Signing in to the web view as a person does: ask the bot in a shared room, read the link in the
direct room it made, and wait for pages to load in the browser."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from roomstate_dev.client import MatrixUser, eventually

if TYPE_CHECKING:
    from roomstate_dev.browser import WebDriver


def sign_in_link(user: MatrixUser, bot_user_id: str, asked_in: str) -> str:
    """Ask the bot for a link in a shared room; read it in the direct room the bot made."""
    reply = user.ask(asked_in, bot_user_id, "!dashboard")
    assert reply == "I sent you a sign-in link in our direct chat (it works once).", reply
    assert "login?t=" not in reply

    def invited() -> list[str]:
        return list(user.call("GET", "/sync?timeout=0").get("rooms", {}).get("invite", {}))

    [direct] = eventually(invited, what="an invite to a direct room")
    user.join(direct)
    events = user.call("GET", f"{user.room(direct)}/messages?dir=b&limit=20")["chunk"]
    bodies = [e["content"].get("body", "") for e in events if e["sender"] == bot_user_id]
    links = [link for body in bodies for link in re.findall(r"http://\S+/login\?t=\S+", body)]
    assert links, bodies
    return links[0]


def heading(driver: WebDriver) -> str:
    """The page's h1, or "" while a new page is still loading (the old one's is gone)."""
    try:
        return str(driver.find_element(By.TAG_NAME, "h1").text)
    except WebDriverException:
        return ""


def main_text(driver: WebDriver) -> str:
    """The page's main text, or "" while a new page is still loading."""
    try:
        return str(driver.find_element(By.TAG_NAME, "main").text)
    except WebDriverException:
        return ""
