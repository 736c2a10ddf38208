"""The changelog protocol: how a partition's state is written, fenced and restored.

Partition ``p`` of the changelog topic holds everything needed to rebuild the
state of input partition ``p``: one record per profile update, keyed by the
customer, and records of three kinds marked by the ``rs.kind`` header:

* ``marker``: written by a worker taking partition ``p`` over, before it
  restores anything; its value names the worker;
* ``position``: written after the outputs of the batches before it are
  acknowledged; its value maps each source topic to the next offset of
  partition ``p`` to process;
* ``counts``: written after a batch's profile records, for every partition
  whose experiment counts the batch changed; its value is the partition's
  total counts of the running experiment after the batch (``T_p``);
* profile records (no ``rs.kind``): the customer's profile, or a tombstone
  (``None``) when the customer was forgotten. When the batch changed the
  experiment's counts through this customer, the record carries that change
  in its ``rs.fx`` header (:func:`models.effect.encode_delta`).

Every record carries the generation it was computed under (header ``rs.gen``,
8 bytes big-endian): the consumer group generation in which the writer was
assigned the partition, above the operator's epoch (see :func:`generation`).
Kafka assigns a partition to one member per generation, and generations only
grow, so a higher generation is always the later owner.

Restoring is a fold over the partition in log order (:class:`Restore`):
a marker raises the current generation; a record whose generation is below
the current one was written by an owner that had already lost the partition
(a paused or partitioned worker that resumed) and is ignored. Everything a
previous owner wrote before the new owner's marker is kept. The counts
follow the same fold: a counts record sets them, a profile record adds its
``rs.fx`` change. Why that is exact is argued in docs/RELIABILITY.md.

Records without headers (Faust's table changelog format: JSON-encoded key)
are read as profiles of generation -1, so such a changelog is restored once
and then superseded by the first owner under this protocol.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import msgspec

from models.effect import Delta, EffectCounts, decode_delta, encode_delta

KIND = "rs.kind"
GEN = "rs.gen"
EFFECT = "rs.fx"
MARKER = b"marker"
POSITION = b"position"
COUNTS = b"counts"
# Keys of the protocol's own records start with a NUL byte, which no customer's key can hold
# (the contract refuses control characters in ids; pseudonyms are hex).
MARKER_KEY = b"\x00marker"
POSITION_KEY = b"\x00position"
COUNTS_KEY = b"\x00counts"
_GEN = struct.Struct(">q")
_json = msgspec.json.Encoder()
_positions = msgspec.json.Decoder(dict[str, int])
# Changes held back before they are added (see Restore._pending): bounds the fold's memory.
_MAX_PENDING = 10_000


class _CountsValue(msgspec.Struct, array_like=True, gc=False):
    experiment: str
    counts: bytes  # EffectCounts.to_bytes()


_counts_encoder = msgspec.msgpack.Encoder()
_counts_decoder = msgspec.msgpack.Decoder(_CountsValue)


def generation(group_generation: int, epoch: int = 0) -> int:
    """The generation records are tagged with: ``epoch`` above the group's generation.

    ``epoch`` (``RECOSTREAM_GENERATION_EPOCH``) exists for one case: a consumer
    group deleted by the broker (no member and no commit for
    ``offsets.retention.minutes``) restarts its generations at 0, below what
    the changelog already holds; raising the epoch puts the new ones above.

    >>> generation(3), generation(3, epoch=1) > generation(10**6)
    (3, True)
    """
    return epoch << 32 | group_generation


def group_generation(metadata: bytes) -> int:
    """The generation inside librdkafka's serialised consumer group metadata.

    ``Consumer.consumer_group_metadata()`` returns librdkafka's
    ``rd_kafka_consumer_group_metadata_write`` bytes: the magic ``CGMDv2:``
    then the generation id as a native int32. Pinned by a test, so a library
    that changes the layout fails the suite instead of the fencing.

    >>> group_generation(b"CGMDv2:" + struct.pack("=i", 7) + b"g\\x00m\\x00\\x01")
    7
    """
    if not metadata.startswith(b"CGMDv2:") or len(metadata) < 11:
        raise ValueError(f"unknown consumer group metadata layout {metadata[:12]!r}")
    return struct.unpack_from("=i", metadata, 7)[0]


def gen_header(gen: int) -> tuple[str, bytes]:
    return (GEN, _GEN.pack(gen))


def marker_record(gen: int, worker: str) -> tuple[bytes, bytes, list]:
    """``(key, value, headers)`` of a takeover marker."""
    return MARKER_KEY, _json.encode({"worker": worker, "gen": gen}), [(KIND, MARKER), gen_header(gen)]


def position_record(gen: int, positions: dict[str, int]) -> tuple[bytes, bytes, list]:
    """``(key, value, headers)`` of a position record: ``{topic: next offset}``."""
    return POSITION_KEY, _json.encode(positions), [(KIND, POSITION), gen_header(gen)]


def effect_header(experiment: str, delta: Delta) -> tuple[str, bytes]:
    """The ``rs.fx`` header of a profile record: what its batch added to ``experiment``'s counts."""
    return (EFFECT, encode_delta(experiment, delta))


def counts_record(gen: int, experiment: str, counts: EffectCounts) -> tuple[bytes, bytes, list]:
    """``(key, value, headers)`` of a counts record: the partition's counts of ``experiment`` after a batch."""
    return COUNTS_KEY, _counts_encoder.encode(_CountsValue(experiment, counts.to_bytes())), [(KIND, COUNTS),
                                                                                              gen_header(gen)]


@dataclass
class Restore:
    """The state of one partition, folded from its changelog records in log order.

    ``experiment`` names the experiment whose counts are restored
    (:attr:`effect`); counts and changes of another experiment are left out
    (``None``: every one is added, for tools that only check the protocol).

    Examples
    --------
    >>> from models.effect import Increment
    >>> r = Restore(experiment="e1")
    >>> one = (Increment("ranker", 1, "impressions", 1),)
    >>> r.apply(b"u1", b"v1", [gen_header(0), effect_header("e1", one)])  # the previous owner, generation 0
    >>> r.apply(*marker_record(1, "worker-b"))          # worker b takes over in generation 1
    >>> r.apply(b"u1", b"stale", [gen_header(0), effect_header("e1", one)])  # the previous owner, after it lost p
    >>> r.apply(b"u2", b"v2", [gen_header(1), effect_header("e1", one)])
    >>> r.apply(*position_record(1, {"click": 9}))
    >>> r.profiles, r.positions, r.gen, r.stale, r.effect.total("ranker").impressions
    ({'u1': b'v1', 'u2': b'v2'}, {'click': 9}, 1, 1, 2)
    """

    gen: int = -1
    profiles: dict[str, bytes] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    markers: int = 0
    stale: int = 0
    records: int = 0
    experiment: str | None = None
    # The last counts record taken and the rs.fx changes after it, turned into counts only when
    # the counts are read: a partition's log holds a counts record after nearly every batch, so
    # the fold decodes few of the changes it passes.
    _counts: _CountsValue | None = field(default=None, repr=False)
    _pending: list[bytes] = field(default_factory=list, repr=False)
    _effect: EffectCounts | None = field(default=None, repr=False)

    @property
    def effect(self) -> EffectCounts:
        """The partition's counts of :attr:`experiment`: the last counts record's, plus every change after it."""
        if self._effect is None or self._pending or self._counts is not None:
            base = self._effect or EffectCounts()
            if self._counts is not None:
                base = EffectCounts.from_bytes(self._counts.counts)
                self._counts = None
            for raw in self._pending:
                experiment, delta = decode_delta(raw)
                if self._mine(experiment):
                    base.apply(delta)
            self._pending.clear()
            self._effect = base
        return self._effect

    def _mine(self, experiment: str) -> bool:
        return self.experiment is None or experiment == self.experiment

    def apply(self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> None:
        self.records += 1
        kind, gen, fx = None, None, None
        for name, raw in headers or ():
            if name == GEN:
                gen = _GEN.unpack(raw)[0]
            elif name == KIND:
                kind = raw
            elif name == EFFECT:
                fx = raw
        if gen is None:  # a record of Faust's table, before this protocol
            if self.markers or key is None:
                self.stale += 1
                return
            user = msgspec.json.decode(key)
            self._put(user, value)
            return
        if kind == MARKER:
            self.markers += 1
            if gen > self.gen:
                self.gen = gen
            return
        if gen < self.gen:
            self.stale += 1
            return
        if kind == POSITION:
            self.positions = dict(_positions.decode(value))
            return
        if kind == COUNTS:
            counts = _counts_decoder.decode(value)
            if self._mine(counts.experiment):  # the partition's total: what came before is in it
                self._counts, self._effect = counts, None
                self._pending.clear()
            return
        self._put(key.decode("utf-8", "surrogateescape"), value)
        if fx is not None:
            self._pending.append(fx)
            if len(self._pending) >= _MAX_PENDING:
                self.effect  # noqa: B018 -- folds the held changes in

    def _put(self, user: str, value: bytes | None) -> None:
        if value is None:
            self.profiles.pop(user, None)
        else:
            self.profiles[user] = value


def fold(records: Iterable[tuple[bytes | None, bytes | None, Sequence | None]]) -> Restore:
    """Fold ``(key, value, headers)`` records, in log order, into a :class:`Restore`."""
    restore = Restore()
    for key, value, headers in records:
        restore.apply(key, value, headers)
    return restore
