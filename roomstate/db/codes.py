"""Small integer codes for memberships, as history and checkpoints store them."""

from __future__ import annotations

from ..models import BAN, INVITE, JOIN, KNOCK, LEAVE

CODES = {LEAVE: 0, JOIN: 1, INVITE: 2, BAN: 3, KNOCK: 4}
MEMBERSHIP_OF = {code: name for name, code in CODES.items()}
