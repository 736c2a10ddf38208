"""Pseudonymisation of customer ids and the forget command's wire format."""

from __future__ import annotations

import hashlib
import hmac

import msgspec


def pseudonym(user_id: str, key: str) -> str:
    """Keyed, stable pseudonym of a user id (HMAC-SHA256, 32 hex chars); identity if no key.

    The shop computes the same value to read a customer's recommendations;
    without the key, ids cannot be reversed or linked to other data sets.

    >>> pseudonym("alice", "")
    'alice'
    >>> pseudonym("alice", "s3cret") == pseudonym("alice", "s3cret") != pseudonym("bob", "s3cret")
    True
    >>> len(pseudonym("alice", "s3cret"))
    32
    """
    if not key:
        return user_id
    return hmac.new(key.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:32]


class ControlCommand(msgspec.Struct, frozen=True):
    """A message on the control topic, keyed by ``user_id`` (already pseudonymised)."""

    action: str  # "forget"
    user_id: str
    requested_at: float = 0.0


ACTIONS = ("forget",)
decode_command = msgspec.json.Decoder(ControlCommand).decode
encode_command = msgspec.json.Encoder().encode
