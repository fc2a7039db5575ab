"""A local demo: Synapse + maubot standalone running roomstate, and users to log in with.

    scripts/demo.sh [--port 8008] [--users 2] [--dir .demo]   (sets up the virtualenvs, then runs this)

Prints the homeserver URL and the credentials, then runs until Ctrl-C; stops everything it started
(and, at start, whatever a demo that was killed left running).
More users: `--users 5`, or register them while it runs with Synapse's own tool:
    .venvs/synapse/bin/register_new_matrix_user -c .demo/synapse/homeserver.yaml http://127.0.0.1:8008
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from .bots import StandaloneBot
from .client import MatrixUser, eventually
from .servers import ROOT, ServerFailed, Synapse


def port_is_free(port: int) -> bool:
    """Whether nothing listens on the port (connections of a server just stopped, still in
    TIME_WAIT, do not count: the servers bind with SO_REUSEADDR too)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def step(text: str) -> None:
    print(f"== {text}", flush=True)


PIDS = "servers.pids"  # the process groups a demo started, for the next start if it was killed


def stop_leftovers(directory: Path, patience: float = 15) -> list[int]:
    """Stop the servers a demo in ``directory`` started and never stopped (it was killed, e.g. with
    SIGKILL: the servers run in sessions of their own and outlive it). Each process group in its
    PID file whose leader still runs with a file in ``directory`` in its command line gets SIGTERM, then
    SIGKILL after ``patience`` seconds; a PID reused by another program is left alone. Returns the
    PIDs stopped."""
    record = directory / PIDS
    try:
        pids = [int(word) for word in record.read_text().split()]
    except (OSError, ValueError):
        return []
    stopped = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone
        if f"{directory}{os.sep}" not in command:  # (not a sibling directory with the same prefix)
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
        stopped.append(pid)
    deadline = time.monotonic() + patience
    for pid in stopped:
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    record.unlink(missing_ok=True)
    return stopped


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # (a zombie has exited; its parent has not collected it yet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / ".demo", help="where the servers keep their files")
    parser.add_argument("--port", type=int, default=8008, help="homeserver port on 127.0.0.1 (default 8008)")
    parser.add_argument(
        "--web-port", type=int, default=29316, help="the bot's web view on 127.0.0.1 (default 29316, maubot's)"
    )
    parser.add_argument("--users", type=int, default=2, help="how many people to register (default 2)")
    parser.add_argument("--password", default="roomstate-demo", help="their password")
    args = parser.parse_args()
    args.dir = args.dir.resolve()  # as the servers' command lines name it
    stopped = stop_leftovers(args.dir)
    if stopped:
        step(f"stopped the servers a killed demo had left running (PIDs {', '.join(map(str, stopped))})")
    if not port_is_free(args.port):
        sys.exit(
            f"Port {args.port} on 127.0.0.1 is in use (another homeserver or demo?). "
            f"Pick another: scripts/demo.sh --port {args.port + 1}"
        )
    if not port_is_free(args.web_port):
        sys.exit(f"Port {args.web_port} on 127.0.0.1 is in use. Pick another: scripts/demo.sh --web-port 29317")

    shutil.rmtree(args.dir, ignore_errors=True)
    synapse = Synapse(args.dir / "synapse", port=args.port)
    synapse.process.pid_record = args.dir / PIDS
    bot = None
    try:
        step(f"starting Synapse on http://127.0.0.1:{args.port} (first start: ~20 s)")
        synapse.start()
        names = ["demo", "friend"] + [f"user{n}" for n in range(3, args.users + 1)]
        people = []
        for index, name in enumerate(names[: max(1, args.users)]):
            user_id, token = synapse.register(name, admin=index == 0, password=args.password)
            people.append(MatrixUser(synapse.url, user_id, token))
        step(f"registered {', '.join(p.user_id for p in people)}")
        bot_id, bot_token = synapse.register("roomstate")
        step("starting maubot standalone with roomstate")
        demo = people[0]
        bot = StandaloneBot(
            args.dir / "bot",
            synapse.url,
            bot_id,
            bot_token,
            plugin_config={"admins": [demo.user_id]},
            web_port=args.web_port,
        )
        bot.process.pid_record = args.dir / PIDS
        bot.start(wait_for_first_sync=False)
        step("creating a room with everyone and the bot")
        room = demo.create_room(
            "roomstate demo",
            invite=[p.user_id for p in people[1:]] + [bot_id],
            topic="Try !rooms, !whereis @friend:localhost, !resync",
        )
        for person in people[1:]:
            person.join(room)
        eventually(lambda: bot_id in demo.call("GET", f"{demo.room(room)}/joined_members")["joined"], what="bot joined")
        first_reply = demo.ask(room, bot_id, "!rooms")
        others = "\n".join(f"  Also there:  {p.user_id}   password: {args.password}" for p in people[1:])
        print(
            f"""
roomstate demo is running.

  Homeserver:  {synapse.url}   (server name: localhost)
  Log in as:   {demo.user_id}   password: {args.password}   (a bot admin)
{others}
  Bot:         {bot_id}, already in the room "roomstate demo" ({room})
  Web view:    {bot.web_url}/   (send !dashboard to the bot: it sends you a sign-in link)

Log in with any Matrix client (e.g. Element: "Other homeserver", {synapse.url}) and try
`!rooms`, `!whereis @friend:localhost`, `!resync`, `!resync all`, `!dashboard`; invite {bot_id} to new rooms.
More people: scripts/demo.sh --users 5, or while it runs:
  .venvs/synapse/bin/register_new_matrix_user -c {synapse.dir / "homeserver.yaml"} {synapse.url}
The bot just answered `!rooms` with:

{first_reply}

Logs: {synapse.log}  and  {bot.log}
Press Ctrl-C to stop.""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while synapse.process.running() and bot.process.running():
            time.sleep(1)
        print("a server exited; see the logs above", flush=True)
    except ServerFailed as error:
        print(f"could not start the demo: {str(error).splitlines()[0]}\n(logs in {args.dir})", flush=True)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        if bot is not None:
            bot.stop()
        synapse.stop()
        (args.dir / PIDS).unlink(missing_ok=True)
        print("stopped: maubot and Synapse are down", flush=True)


if __name__ == "__main__":
    main()
