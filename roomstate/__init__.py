"""roomstate: a maubot plugin that keeps a durable picture of the bot's rooms and their members."""

from .bot import RoomStateBot

__all__ = ["RoomStateBot"]
