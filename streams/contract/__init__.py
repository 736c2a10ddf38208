"""The recostream wire contract, declared once.

Every message that enters or leaves the stream workers is described here:

* input topics ``browse``, ``click`` and ``purchase`` (keyed by ``user_id``,
  JSON values) are decoded with :func:`decode_event` into :class:`Event`
  (:mod:`streams.contract.events`);
* the compacted ``items`` topic (keyed by ``item_id``) is decoded with
  :func:`decode_item` into :class:`CatalogItem` (:mod:`streams.contract.items`);
* the ``impressions`` topic (keyed by ``user_id``: what the shop displayed)
  is decoded with :func:`decode_impression` into :class:`Impression`
  (:mod:`streams.contract.impressions`);
* rejected messages become :class:`DeadLetter` records, and workers publish
  :class:`Recommendation` payloads to Redis and to the ``recommendations``
  topic (:mod:`streams.contract.outputs`);
* event times are parsed and formatted by :mod:`streams.contract.timestamps`,
  for the wire and for the CSV tools alike.

Every failure is a :class:`ContractError` whose ``reason`` is one of
:data:`REASONS` (:mod:`streams.contract.reasons`) -- a small, bounded set
that is safe to use as a Prometheus label -- and whose ``detail`` is meant for
humans reading the dead-letter topic. The bounds come from :class:`Limits`
(:mod:`streams.contract.limits`); bytes become structs and structs bytes in
:mod:`streams.contract.encoding`.

Examples
--------
>>> ev = decode_event(
...     b'{"event_id": "e1", "user_id": "u1", "item_id": "i1",'
...     b' "ts": "2024-05-01T12:00:00Z"}',
...     "browse",
... )
>>> ev.type, ev.ts
('browse', 1714564800.0)
>>> event_payload(ev)
b'{"event_id":"e1","user_id":"u1","item_id":"i1","ts":1714564800000,"type":"browse","quantity":1}'
>>> try:
...     decode_event(b'{"event_id": "e1"}', "click")
... except ContractError as err:
...     print(err)
missing_field: field `user_id` is required
"""

from __future__ import annotations

from models.events import EVENT_TYPES
from streams.contract.encoding import encode
from streams.contract.events import Event, decode_event, event_payload
from streams.contract.impressions import Impression, decode_impression, impression_payload
from streams.contract.items import CatalogItem, decode_item
from streams.contract.limits import DEFAULT_LIMITS, Limits
from streams.contract.outputs import (
    DeadLetter,
    Recommendation,
    ScoredItem,
    dead_letter,
    decode_dead_letter,
    decode_recommendation,
)
from streams.contract.reasons import REASONS, ContractError
from streams.contract.timestamps import epoch_ms, format_rfc3339, parse_timestamp

__all__ = [
    "EVENT_TYPES",
    "REASONS",
    "Limits",
    "DEFAULT_LIMITS",
    "ContractError",
    "Event",
    "Impression",
    "CatalogItem",
    "ScoredItem",
    "Recommendation",
    "DeadLetter",
    "decode_event",
    "decode_impression",
    "impression_payload",
    "decode_item",
    "decode_recommendation",
    "decode_dead_letter",
    "encode",
    "event_payload",
    "dead_letter",
    "parse_timestamp",
    "epoch_ms",
    "format_rfc3339",
]
