"""The profiles of the partitions this worker owns, in memory, as the changelog restores them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

from models.profile import Profile, decode_profile


@dataclass
class PartitionState:
    """One owned partition: its generation, its customers' encoded profiles and its positions.

    ``positions`` are the next offsets to process per source topic (advanced
    after each batch); ``committed`` are those last written to the changelog
    in a position record.
    """

    gen: int
    profiles: dict[str, bytes] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)


class ProfileStore(Mapping[str, Profile]):
    """Every owned partition's state; as a mapping, the decoded profile of each customer.

    A customer's events all come from one partition number (input topics are
    keyed by ``user_id``), so a customer lives in exactly one partition.

    >>> from models.profile import encode_profile, new_profile
    >>> store = ProfileStore()
    >>> store.adopt(0, PartitionState(gen=3))
    >>> store.put("u1", encode_profile(new_profile("u1")), 0)
    >>> store["u1"].user_id, len(store), store.get("u2")
    ('u1', 1, None)
    >>> store.release(0); len(store)
    0
    """

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionState] = {}

    def adopt(self, partition: int, state: PartitionState) -> None:
        self.partitions[partition] = state

    def release(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def raw(self, user: str) -> bytes | None:
        for state in self.partitions.values():
            raw = state.profiles.get(user)
            if raw is not None:
                return raw
        return None

    def put(self, user: str, raw: bytes, partition: int) -> None:
        self.partitions[partition].profiles[user] = raw

    def delete(self, user: str) -> None:
        for state in self.partitions.values():
            state.profiles.pop(user, None)

    def __getitem__(self, user: str) -> Profile:
        raw = self.raw(user)
        if raw is None:
            raise KeyError(user)
        return decode_profile(raw)

    def __iter__(self) -> Iterator[str]:
        for state in list(self.partitions.values()):
            yield from list(state.profiles)

    def __len__(self) -> int:
        return sum(len(state.profiles) for state in self.partitions.values())
