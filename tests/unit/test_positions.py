"""The durability rule: a position is recorded only after every sink is drained (no broker needed)."""

from __future__ import annotations

from streams.checkpointing.positions import PositionCheckpoint
from streams.state.changelog import POSITION_KEY, Restore
from streams.state.store import PartitionState, ProfileStore


class Journal:
    """Sinks and the changelog's producer in one ordered journal of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sink(self, name: str):
        journal = self

        class Sink:
            def flush(self) -> None:
                journal.calls.append(("flush", name))

            def produce(self, topic, key, value, partition=None, headers=None) -> None:
                journal.calls.append(("produce", name, topic, partition, key, value, headers))

        return Sink()


def _checkpoint():
    journal = Journal()
    store = ProfileStore()
    store.adopt(0, PartitionState(gen=3, positions={"click": 10}, committed={"click": 4}))
    store.adopt(1, PartitionState(gen=3, positions={"click": 7}, committed={"click": 7}))
    kafka, other = journal.sink("kafka"), journal.sink("other")
    return PositionCheckpoint(store, kafka, "changelog", sinks=[kafka, other]), journal, store


def test_every_sink_is_drained_before_a_position_is_recorded_and_only_moved_partitions_are():
    positions, journal, store = _checkpoint()
    assert positions.commit() == 1
    assert [c[:2] for c in journal.calls] == [("flush", "kafka"), ("flush", "other"), ("produce", "kafka")]
    _, _, topic, partition, key, value, headers = journal.calls[-1]
    assert (topic, partition, key) == ("changelog", 0, POSITION_KEY)
    restore = Restore()
    restore.apply(key, value, headers)
    assert restore.positions == {"click": 10} and store.partitions[0].committed == {"click": 10}
    assert [(tp.topic, tp.partition, tp.offset) for tp in positions.offsets()] == [("click", 0, 10), ("click", 1, 7)]

    journal.calls.clear()
    assert positions.commit() == 0  # nothing moved: the sinks are drained all the same
    assert journal.calls == [("flush", "kafka"), ("flush", "other")]


def test_a_revocation_waits_for_its_position_records_too():
    positions, journal, _ = _checkpoint()
    assert positions.commit([0, 5], acknowledged=True) == 1  # 5 is not owned: nothing to record
    assert [c[:2] for c in journal.calls] == [("flush", "kafka"), ("flush", "other"), ("produce", "kafka"),
                                               ("flush", "kafka")]
