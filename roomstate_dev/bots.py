"""maubot processes running roomstate: standalone mode, and the manager with an uploaded .mbp."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .servers import ROOT, Process, ServerFailed, free_port, http, tail


def maubot_python() -> str:
    """The Python that has maubot (and SQLAlchemy): $MAUBOT_PYTHON, or this one."""
    return os.environ.get("MAUBOT_PYTHON") or sys.executable


def base_plugin_config() -> dict[str, Any]:
    from ruamel.yaml import YAML

    with open(ROOT / "base-config.yaml") as file:
        return json.loads(json.dumps(YAML(typ="safe").load(file)))


def _logging(path: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"normal": {"format": "[%(asctime)s] [%(levelname)s@%(name)s] %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "normal", "filename": str(path)}},
        "loggers": {
            "maubot": {"level": int(os.environ.get("ROOMSTATE_E2E_LOG_LEVEL", "10"))},
            "mau": {"level": "DEBUG"},
            "aiohttp": {"level": "INFO"},
        },
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }


class StandaloneBot:
    """``python -m maubot.standalone`` running this checkout's plugin as ``user_id``."""

    def __init__(
        self,
        workdir: Path,
        homeserver: str,
        user_id: str,
        token: str,
        database: str | None = None,
        plugin_config: dict[str, Any] | None = None,
        web_base_path: str = "/",
        web_port: int | None = None,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.homeserver, self.user_id, self.token = homeserver, user_id, token
        self.db_path = self.dir / "bot.db"
        self.database = database or f"sqlite:///{self.db_path}"  # absolute: sqlite:////...
        self.plugin_config = {**base_plugin_config(), **(plugin_config or {})}
        self.ignore_first_sync = True
        # The plugin web app (``webapp: true`` in maubot.yaml): one port for the life of this
        # object, so that ``web_url`` stays the same across restarts.
        self.web_port = web_port or free_port()
        self.web_base_path = web_base_path
        self.nudge: Callable[[], Any] | None = None
        self.log = self.dir / "maubot.log"
        self.process = Process(
            "maubot-standalone",
            [
                maubot_python(),
                "-m",
                "maubot.standalone",
                "-c",
                str(self.dir / "config.yaml"),
                "-m",
                str(ROOT / "maubot.yaml"),
            ],
            self.dir,
            self.dir / "maubot.stdout.log",
        )

    def write_config(self) -> None:
        config = {
            "user": {
                "credentials": {
                    "id": self.user_id,
                    "homeserver": self.homeserver,
                    "access_token": self.token,
                    "device_id": None,
                },
                "sync": True,
                "appservice": False,
                "hs_token": None,
                "autojoin": True,
                # maubot's example-config.yaml: the first sync after a start is not dispatched
                # (the plugin resyncs the rooms it carries).
                "displayname": "disable",
                "avatar_url": "disable",
                "ignore_initial_sync": True,
                "ignore_first_sync": self.ignore_first_sync,
            },
            # Used only when the plugin's maubot.yaml says ``webapp: true``: maubot then serves the
            # plugin's routes under base_path on this port (see ``web_url``).
            "server": {
                "hostname": "127.0.0.1",
                "port": self.web_port,
                "base_path": self.web_base_path,
                "public_url": f"http://127.0.0.1:{self.web_port}",
            },
            "database": self.database,
            "database_opts": {"min_size": 1, "max_size": 10},
            "plugin_config": self.plugin_config,
            "logging": _logging(self.log),
        }
        (self.dir / "config.yaml").write_text(json.dumps(config, indent=1))

    @property
    def web_url(self) -> str:
        """The plugin web app's public base URL, without a trailing slash: exactly the
        ``webapp_url`` maubot standalone passes to the plugin, under which its ``@web.get("/x")``
        routes answer (``web_url + "/x"``). With standalone's default ``base_path: /`` that is the
        server's root, ``http://127.0.0.1:PORT`` (the manager instead serves an instance under
        ``/_matrix/maubot/plugin/<instance id>/``; ``web_base_path`` can emulate that)."""
        return f"http://127.0.0.1:{self.web_port}/{self.web_base_path.strip('/')}".rstrip("/")

    def startups(self, text: str | None = None) -> int:
        """How many times the plugin has finished its startup sync: a catch-up or, without one, the
        reconciliation of every room."""
        text = self.log_text() if text is None else text
        return text.count("Startup reconciliation:") + text.count("Caught up from the saved sync position")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 120, wait_for_first_sync: bool = True) -> None:
        """Start and wait for the plugin's startup sync (``startups``), and (unless told not to) for the
        first sync, which maubot does not dispatch: an invite during it would never be answered by
        maubot's autojoin. ``nudge`` (if set) makes the first sync's long poll return early."""
        self.write_config()
        text = self.log_text()
        started, first_syncs = self.startups(text), text.count("First sync since the start")
        self.process.start()
        self.process.wait_until(lambda: self.startups() > started, "the plugin's startup sync", timeout)
        if not wait_for_first_sync:
            return
        nudged = [0.0]

        def first_sync_done() -> bool:
            if self.log_text().count("First sync since the start") > first_syncs:
                return True
            if self.nudge is not None and time.monotonic() - nudged[0] > 2:
                nudged[0] = time.monotonic()
                self.nudge()
            return False

        self.process.wait_until(first_sync_done, "the first sync", timeout)

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def restart(self, wait_for_first_sync: bool = True, **plugin_config: Any) -> None:
        self.stop()
        self.plugin_config.update(plugin_config)
        self.start(wait_for_first_sync=wait_for_first_sync)

    def logs(self) -> str:
        return f"--- maubot.log ---\n{tail(self.log, 80)}\n--- stdout ---\n{tail(self.process.log)}"


class ManagerBot:
    """``python -m maubot`` (manager mode) on loopback, driven through its management API."""

    API = "/_matrix/maubot/v1"

    def __init__(self, workdir: Path, homeserver: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.homeserver = homeserver
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_hex(16)
        self.log = self.dir / "maubot.log"
        self.token: str | None = None
        self.process = Process(
            "maubot-manager",
            [maubot_python(), "-m", "maubot", "-c", str(self.dir / "config.yaml")],
            self.dir,
            self.dir / "maubot.stdout.log",
        )

    def write_config(self) -> None:
        for sub in ("plugins", "trash", "dbs"):
            (self.dir / sub).mkdir(exist_ok=True)
        config = {
            "database": f"sqlite:{self.dir / 'maubot.db'}",
            "crypto_database": "default",
            "plugin_directories": {
                "upload": str(self.dir / "plugins"),
                "load": [str(self.dir / "plugins")],
                "trash": str(self.dir / "trash"),
            },
            "plugin_databases": {"sqlite": str(self.dir / "dbs"), "postgres": None},
            "server": {
                "hostname": "127.0.0.1",
                "port": self.port,
                "public_url": self.url,
                "ui_base_path": "/_matrix/maubot",
                "plugin_base_path": "/_matrix/maubot/plugin/",
                "override_resource_path": False,
                "unshared_secret": self.secret,
            },
            "homeservers": {"local": {"url": self.homeserver, "secret": None}},
            "admins": {"root": ""},
            "api_features": {
                k: True
                for k in (
                    "login",
                    "plugin",
                    "plugin_upload",
                    "instance",
                    "instance_database",
                    "client",
                    "client_proxy",
                    "client_auth",
                    "dev_open",
                    "log",
                )
            },
            "logging": _logging(self.log),
        }
        (self.dir / "config.yaml").write_text(json.dumps(config, indent=1))

    def start(self, timeout: float = 120) -> None:
        self.write_config()
        self.process.start()
        self.process.wait_until(self._login, "management API login", timeout)

    def _login(self) -> bool:
        self.token = http(
            "POST", f"{self.url}{self.API}/auth/login", {"secret": self.secret, "user": "root"}, timeout=2
        )["token"]
        return True

    def stop(self) -> None:
        self.process.stop()

    def api(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None, content_type: str = "application/json"
    ) -> Any:
        return http(method, f"{self.url}{self.API}{path}", body, token=self.token, raw=raw, content_type=content_type)

    def install(self, mbp: Path, user_id: str, access_token: str, instance_id: str = "roomstate") -> dict[str, Any]:
        """What an admin does in the web UI: upload the plugin, add the bot's client, create an
        instance. Returns the instance once maubot reports it started."""
        plugin = self.api("POST", "/plugins/upload", raw=mbp.read_bytes(), content_type="application/zip")
        self.api(
            "PUT",
            f"/client/{quote(user_id)}",
            {
                "homeserver": self.homeserver,
                "access_token": access_token,
                "autojoin": True,
                "enabled": True,
                "started": True,
                "sync": True,
            },
        )
        self.api(
            "PUT",
            f"/instance/{instance_id}",
            {
                "primary_user": user_id,
                "type": plugin["id"],
                "enabled": True,
                "started": True,
            },
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            instance = self.api("GET", f"/instance/{instance_id}")
            if instance.get("started"):
                return instance
            time.sleep(0.5)
        raise ServerFailed(f"instance {instance_id} did not start; log:\n{tail(self.log)}")


def build_mbp(out_dir: Path) -> Path:
    result = subprocess.run(["bash", str(ROOT / "build.sh"), str(out_dir)], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1])
