"""The profiles of the partitions this worker owns, in memory, as the changelog restores them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

from models.effect import Counts, Delta, EffectCounts
from models.profile import Profile, decode_profile


@dataclass
class PartitionState:
    """One owned partition: its generation, its customers' encoded profiles and its positions.

    ``positions`` are the next offsets to process per source topic (advanced
    after each batch); ``committed`` are those last written to the changelog
    in a position record. ``effect`` is the partition's total counts of the
    running experiment (``T_p``), as restored and then advanced by each batch.
    """

    gen: int
    profiles: dict[str, bytes] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)
    effect: EffectCounts = field(default_factory=EffectCounts)


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
        # Per arm, the experiment's counts summed over days and owned partitions (for the metrics):
        # kept up to date by count(), recomputed after the owned partitions change.
        self._by_arm: dict[str, Counts] | None = None

    def adopt(self, partition: int, state: PartitionState) -> None:
        self.partitions[partition] = state
        self._by_arm = None

    def release(self, partition: int) -> None:
        self.partitions.pop(partition, None)
        self._by_arm = None

    def count(self, partition: int, delta: Delta) -> None:
        """Add a batch's change of the experiment's counts to ``partition``'s total.

        >>> from models.effect import Increment
        >>> store = ProfileStore()
        >>> store.adopt(0, PartitionState(gen=1)); store.adopt(1, PartitionState(gen=1))
        >>> store.count(0, (Increment("ranker", 1, "clicks", 2),)); store.count(1, (Increment("ranker", 2, "clicks", 1),))
        >>> store.partitions[0].effect.total("ranker").clicks, store.by_arm()["ranker"].clicks
        (2, 3)
        """
        self.partitions[partition].effect.apply(delta)
        by_arm = self._by_arm
        if by_arm is not None:
            for inc in delta:
                counts = by_arm.get(inc.arm)
                if counts is None:
                    counts = by_arm[inc.arm] = Counts()
                setattr(counts, inc.counter, getattr(counts, inc.counter) + inc.amount)

    def by_arm(self) -> dict[str, Counts]:
        """The owned partitions' counts per arm, summed over days (do not mutate)."""
        if self._by_arm is None:
            total = self.effect_totals()
            self._by_arm = {arm: total.total(arm) for arm in total.arms()}
        return self._by_arm

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

    def effect_totals(self) -> EffectCounts:
        """The experiment's counts summed over the owned partitions."""
        total = EffectCounts()
        for state in list(self.partitions.values()):
            total = total.merge(state.effect)
        return total

    def __getitem__(self, user: str) -> Profile:
        raw = self.raw(user)
        if raw is None:
            raise KeyError(user)
        return decode_profile(raw)

    def get(self, user: str, default: Profile | None = None) -> Profile | None:
        # (Mapping.get would go through __getitem__ and a KeyError for every new customer)
        raw = self.raw(user)
        return default if raw is None else decode_profile(raw)

    def __iter__(self) -> Iterator[str]:
        for state in list(self.partitions.values()):
            yield from list(state.profiles)

    def __len__(self) -> int:
        return sum(len(state.profiles) for state in self.partitions.values())
