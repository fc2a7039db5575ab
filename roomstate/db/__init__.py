"""Storage layer: the plugin's tables, on DBAPI connections taken from maubot's SQLAlchemy engine."""

from .store import RoomStore
from .threads import StorageError

__all__ = ["RoomStore", "StorageError"]
