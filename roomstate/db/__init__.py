"""Storage layer: SQLAlchemy Core on the engine maubot gives the plugin."""
from .store import RoomStore

__all__ = ["RoomStore"]
