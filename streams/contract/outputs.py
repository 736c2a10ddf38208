"""What the workers write: recommendations (Redis and the ``recommendations`` topic) and dead letters."""

from __future__ import annotations

import base64
import hashlib
import time

import msgspec

from streams.contract.reasons import ContractError

_PREVIEW_BYTES = 1024
_MAX_KEY_BYTES = 1024


class ScoredItem(msgspec.Struct, frozen=True, gc=False):
    """One recommended item and its score."""

    item_id: str
    score: float


class Recommendation(msgspec.Struct):
    """Top-N recommendations for one user, written to Redis and the
    ``recommendations`` topic.

    ``rec_id`` names the list (the shop echoes it in its impressions, clicks
    and purchases) and ``variant`` is the experiment arm that ranked it
    (``holdout``: the customer is in the holdout and gets an empty list);
    both are ``None`` only in records written before experiments existed.

    Examples
    --------
    >>> from streams.contract import encode
    >>> rec = Recommendation("u1", [ScoredItem("i9", 0.75)], model_version=3,
    ...                      generated_at=1714564800.0, rec_id="5d0c3e8f", variant="ranker")
    >>> encode(rec)
    b'{"user_id":"u1","items":[{"item_id":"i9","score":0.75}],"model_version":3,"generated_at":1714564800.0,"segment":null,"rec_id":"5d0c3e8f","variant":"ranker"}'
    >>> decode_recommendation(encode(rec)) == rec
    True
    """

    user_id: str
    items: list[ScoredItem]
    model_version: int
    generated_at: float
    segment: int | None = None
    rec_id: str | None = None
    variant: str | None = None


class DeadLetter(msgspec.Struct):
    """A rejected message, as published to the dead-letter topic.

    ``key`` and ``value`` are base64 of the ORIGINAL bytes so the message can
    be replayed byte-for-byte; ``value_utf8`` is a lossy, truncated preview
    for humans only.
    """

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    value_utf8: str | None
    ts: float
    #: Length of the original value in bytes.
    value_size: int = 0
    #: SHA-256 (hex) of the whole original value; with ``truncated``, what identifies it.
    value_sha256: str | None = None
    #: ``value`` holds only the first bytes of the original (see ``dead_letter``).
    truncated: bool = False


_RECO_DECODER = msgspec.json.Decoder(Recommendation)
_DEAD_DECODER = msgspec.json.Decoder(DeadLetter)


def decode_recommendation(raw: bytes) -> Recommendation:
    """Decode a :class:`Recommendation` we produced ourselves (trusted input:
    plain msgspec errors propagate)."""
    return _RECO_DECODER.decode(raw)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Decode a :class:`DeadLetter` record (for replay tooling)."""
    return _DEAD_DECODER.decode(raw)


def dead_letter(
    err: ContractError,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    now: float | None = None,
    max_value_bytes: int = 65536,
) -> DeadLetter:
    """Build the dead-letter record for a rejected message, bounded whatever the message's size.

    ``value`` is kept whole (base64) when it has at most ``max_value_bytes``
    bytes, so it can be replayed byte for byte. A larger value (an
    ``oversized`` message can be as large as the broker accepts) keeps only
    its first ``max_value_bytes`` bytes, with ``value_size`` (the original
    length) and ``value_sha256`` (of the whole value) to identify it: the
    record then always fits the producer's limit (about 4/3 of
    ``max_value_bytes`` plus 2 KiB).

    Examples
    --------
    >>> err = ContractError("not_json", "JSON is malformed")
    >>> dl = dead_letter(err, topic="click", partition=3, offset=42,
    ...                  key=b"u1", value=b"{oops", now=1714564800.0)
    >>> dl.reason, dl.key, dl.value, dl.value_utf8, dl.truncated
    ('not_json', 'dTE=', 'e29vcHM=', '{oops', False)
    >>> big = dead_letter(ContractError("oversized", "too large"), topic="click", partition=0, offset=7,
    ...                   key=b"u1", value=b"x" * 5_000_000, max_value_bytes=1000)
    >>> len(big.value), big.value_size, big.truncated, len(big.value_sha256)
    (1336, 5000000, True, 64)
    """
    if value is not None and not isinstance(value, bytes):
        value = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    if key is not None and not isinstance(key, bytes):
        key = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else bytes(key)
    size = 0 if value is None else len(value)
    truncated = size > max_value_bytes or (key is not None and len(key) > _MAX_KEY_BYTES)
    return DeadLetter(
        reason=err.reason,
        detail=err.detail,
        topic=topic,
        partition=partition,
        offset=offset,
        key=None if key is None else base64.b64encode(key[:_MAX_KEY_BYTES]).decode("ascii"),
        value=None if value is None else base64.b64encode(value[:max_value_bytes]).decode("ascii"),
        # backslashreplace keeps undecodable bytes visible as \xNN instead of
        # hiding them behind U+FFFD, which is what a human debugging needs.
        value_utf8=None
        if value is None
        else value[:_PREVIEW_BYTES].decode("utf-8", "backslashreplace"),
        ts=time.time() if now is None else now,
        value_size=size,
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        truncated=truncated,
    )
