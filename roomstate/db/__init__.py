"""Storage layer: the plugin's tables, on DBAPI connections taken from maubot's SQLAlchemy engine."""

from .store import RoomStore
from .threads import Intercept, JobFuture, StorageError

__all__ = ["Intercept", "JobFuture", "RoomStore", "StorageError"]
