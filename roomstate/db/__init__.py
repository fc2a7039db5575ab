"""Storage layer: the plugin's tables, on DBAPI connections taken from maubot's SQLAlchemy engine."""

from .store import RoomStore, Settled
from .threads import StorageError, when_settled

__all__ = ["RoomStore", "Settled", "StorageError", "when_settled"]
