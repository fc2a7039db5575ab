"""A local demo: Synapse + maubot standalone running roomstate, and a user to log in with.

    scripts/demo.sh            (sets up the virtualenvs, then runs this)

Prints the homeserver URL and credentials, then runs until Ctrl-C; stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import time
from pathlib import Path

from .bots import StandaloneBot
from .client import MatrixUser, eventually
from .servers import ROOT, Synapse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / ".demo", help="where the servers keep their files")
    parser.add_argument("--port", type=int, default=8008, help="homeserver port on 127.0.0.1")
    parser.add_argument("--password", default="roomstate-demo", help="password of @demo:localhost")
    args = parser.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    synapse = Synapse(args.dir / "synapse", port=args.port)
    bot = None
    try:
        print("starting Synapse ...", flush=True)
        synapse.start()
        demo_id, demo_token = synapse.register("demo", admin=True, password=args.password)
        friend_id, friend_token = synapse.register("friend", password=args.password)
        bot_id, bot_token = synapse.register("roomstate")
        print("starting maubot standalone with roomstate ...", flush=True)
        bot = StandaloneBot(args.dir / "bot", synapse.url, bot_id, bot_token, plugin_config={"admins": [demo_id]})
        bot.start()

        demo = MatrixUser(synapse.url, demo_id, demo_token)
        friend = MatrixUser(synapse.url, friend_id, friend_token)
        room = demo.create_room(
            "roomstate demo", invite=[friend_id, bot_id], topic="Try !rooms, !whereis @friend:localhost, !resync"
        )
        friend.join(room)
        eventually(lambda: bot_id in demo.call("GET", f"{demo.room(room)}/joined_members")["joined"], what="bot joined")
        first_reply = demo.ask(room, bot_id, "!rooms")

        print(
            f"""
roomstate demo is running.

  Homeserver:  {synapse.url}   (server name: localhost)
  Log in as:   {demo_id}   password: {args.password}   (a bot admin)
  Also there:  {friend_id}   password: {args.password}
  Bot:         {bot_id}, already in the room "roomstate demo" ({room})

Log in with any Matrix client (e.g. Element: choose "Other homeserver" and enter {synapse.url})
and try `!rooms`, `!whereis {friend_id}`, `!resync`, `!resync all`. Invite {bot_id} to new rooms.
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
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        if bot is not None:
            bot.stop()
        synapse.stop()


if __name__ == "__main__":
    main()
