"""The few SQLAlchemy calls whose spelling differs between 1.3 and 1.4/2.x."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

SQLALCHEMY_VERSION = tuple(int(part) for part in sa.__version__.split(".")[:2])


def select(*columns: Any) -> Any:
    """``select(a, b)`` on 1.4+, ``select([a, b])`` on 1.3."""
    if SQLALCHEMY_VERSION >= (1, 4):
        return sa.select(*columns)
    return sa.select(list(columns))
