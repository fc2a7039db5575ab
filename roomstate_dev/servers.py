"""Real servers for the end-to-end suite and the demo: Synapse, maubot standalone, maubot manager.

Every process is started by PID and stopped by PID; logs stay in the run's directory and are
attached to the error when a server does not come up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
SERVER_NAME = "localhost"
AS_TOKEN = "e2e-appservice-token"
AS_USER_PREFIX = "load-"


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 60,
) -> Any:
    """A tiny JSON-over-HTTP client (no dependencies, usable outside asyncio)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        raise RuntimeError(f"{method} {url} -> {error.code}: {detail}") from None
    return json.loads(payload) if payload else None


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """A child process in its own process group, stopped by PID."""

    def __init__(self, name: str, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.args, self.cwd, self.log, self.env = name, args, cwd, log, env
        self.proc: subprocess.Popen | None = None
        self.pid_record: Path | None = None  # a file the PID is appended to once started

    def start(self) -> None:
        log_file = open(self.log, "ab")  # noqa: SIM115 - open for the life of the process
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )
        log_file.close()
        if self.pid_record is not None:
            with open(self.pid_record, "a") as record:
                record.write(f"{self.proc.pid}\n")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if not self.running():
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, an OOM kill, a power cut of the process)."""
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_until(self, check, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise ServerFailed(f"{self.name} exited while waiting for {what}; log:\n{tail(self.log)}")
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise ServerFailed(f"{self.name}: no {what} after {timeout:.0f}s; log:\n{tail(self.log)}")


def synapse_python() -> str:
    """The Python that has matrix-synapse: $SYNAPSE_PYTHON, or this one."""
    return os.environ.get("SYNAPSE_PYTHON") or sys.executable


class Synapse:
    """A Synapse homeserver on 127.0.0.1 with SQLite, shared-secret registration, no throttling."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = secrets.token_hex(16)
        self.log = self.dir / "synapse.log"
        self.process = Process(
            "synapse",
            [synapse_python(), "-m", "synapse.app.homeserver", "-c", str(self.dir / "homeserver.yaml")],
            self.dir,
            self.dir / "synapse.stdout.log",
        )

    def write_config(self) -> None:
        unlimited = {"per_second": 10000, "burst_count": 100000}
        config = {
            "server_name": SERVER_NAME,
            "pid_file": str(self.dir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(self.dir / "homeserver.db")}},
            "log_config": str(self.dir / "log.yaml"),
            "media_store_path": str(self.dir / "media"),
            "signing_key_path": str(self.dir / "signing.key"),
            "registration_shared_secret": self.secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "bcrypt_rounds": 4,
            "enable_registration": False,
            "presence": {"enabled": False},
            "app_service_config_files": [str(self.dir / "appservice.yaml")],
            "rc_message": unlimited,
            "rc_registration": unlimited,
            "rc_registration_token_validity": unlimited,
            "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
            "rc_admin_redaction": unlimited,
            "rc_joins": {"local": unlimited, "remote": unlimited},
            "rc_joins_per_room": unlimited,
            "rc_invites": {"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
            "rc_3pid_validation": unlimited,
            "rc_room_creation": unlimited,
            "rc_presence": {"per_user": unlimited},
        }
        appservice = {
            "id": "roomstate-e2e-load",
            "url": None,
            "as_token": AS_TOKEN,
            "hs_token": secrets.token_hex(16),
            "sender_localpart": "e2e-appservice",
            "rate_limited": False,
            "namespaces": {"users": [{"exclusive": True, "regex": f"@{AS_USER_PREFIX}.*:{SERVER_NAME}"}]},
        }
        log_config = {
            "version": 1,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(self.log), "formatter": "f"}},
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        for name, data in (("homeserver.yaml", config), ("appservice.yaml", appservice), ("log.yaml", log_config)):
            (self.dir / name).write_text(json.dumps(data, indent=1))  # JSON is valid YAML
        if not (self.dir / "signing.key").exists():
            subprocess.run(
                [
                    synapse_python(),
                    "-m",
                    "synapse.app.homeserver",
                    "-c",
                    str(self.dir / "homeserver.yaml"),
                    "--generate-keys",
                ],
                check=True,
                cwd=self.dir,
                capture_output=True,
            )

    def start(self, timeout: float = 120) -> None:
        if not (self.dir / "homeserver.yaml").exists():
            self.write_config()
        self.process.start()
        self.process.wait_until(
            lambda: http("GET", f"{self.url}/_matrix/client/versions", timeout=2), "HTTP answer", timeout
        )

    def stop(self) -> None:
        self.process.stop()

    def logs(self) -> str:
        return f"--- synapse.log ---\n{tail(self.log)}\n--- stdout ---\n{tail(self.process.log)}"

    def requests_by(self, user_id: str, pattern: str) -> list[str]:
        """The requests ``user_id`` made whose "METHOD path" matches ``pattern`` (a regular
        expression), from Synapse's access log, oldest first."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        found = re.findall(r"\{" + re.escape(user_id) + r'\} Processed request:.*? "([A-Z]+ [^ ]+) HTTP', text)
        return [request for request in found if re.search(pattern, request)]

    # ---- accounts ---------------------------------------------------------------------------

    def register(self, localpart: str, admin: bool = False, password: str | None = None) -> tuple[str, str]:
        """Create an account with the shared-secret admin API; returns (user_id, access_token)."""
        password = password or secrets.token_hex(8)
        url = f"{self.url}/_synapse/admin/v1/register"
        nonce = http("GET", url)["nonce"]
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"])
        )
        result = http(
            "POST",
            url,
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return result["user_id"], result["access_token"]

    def register_load_user(self, index: int) -> str:
        """A cheap account in the appservice namespace (no password hashing, no rate limits)."""
        localpart = f"{AS_USER_PREFIX}{index}"
        try:
            http(
                "POST",
                f"{self.url}/_matrix/client/v3/register",
                {"type": "m.login.application_service", "username": localpart},
                token=AS_TOKEN,
            )
        except RuntimeError as error:
            if "M_USER_IN_USE" not in str(error):
                raise
        return f"@{localpart}:{SERVER_NAME}"

    def call_as_load_user(self, user_id: str, method: str, path: str, body: Any = None) -> Any:
        """A client-server request made as a load user (``path`` after ``/_matrix/client/v3``)."""
        joiner = "&" if "?" in path else "?"
        return http(method, f"{self.url}/_matrix/client/v3{path}{joiner}user_id={quote(user_id)}", body, token=AS_TOKEN)

    def join_as_load_user(self, user_id: str, room_id: str) -> None:
        http("POST", f"{self.url}/_matrix/client/v3/join/{quote(room_id)}?user_id={quote(user_id)}", {}, token=AS_TOKEN)
