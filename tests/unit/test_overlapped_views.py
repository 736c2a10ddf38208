"""The worker's Redis writes run beside the loop: in order, one in flight, durable at flush, errors raised."""

from __future__ import annotations

import threading

import pytest

from streams.sinks.overlapped import OverlappedViews


class GatedViews:
    """Stands in for the Redis sink: each write blocks until the test opens its gate, and is journalled."""

    restarted = False

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.started: dict[str, threading.Event] = {}
        self.fail: set[str] = set()

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())

    def begun(self, name: str) -> threading.Event:
        return self.started.setdefault(name, threading.Event())

    def write(self, parts, model, effects=None, on_durable=None) -> int:
        name = model["name"]
        self.begun(name).set()
        assert self.gate(name).wait(10)
        if name in self.fail:
            raise RuntimeError(f"Redis refused {name}")
        self.journal.append(name)
        if on_durable is not None:
            on_durable()
        return 0

    def raise_fence(self, partition: int, gen: int) -> int:
        self.journal.append(f"fence {partition} {gen}")
        return gen

    def delete_user(self, user_id: str) -> None:
        self.journal.append(f"delete {user_id}")


def test_a_write_returns_at_once_and_is_durable_when_flush_returns():
    inner = GatedViews()
    views = OverlappedViews(inner)
    durable = []
    views.write([], {"name": "b1"}, on_durable=lambda: durable.append("b1"))  # returns while Redis is busy
    assert inner.begun("b1").wait(10) and inner.journal == [] and durable == []
    inner.gate("b1").set()
    views.flush()
    assert inner.journal == ["b1"] and durable == ["b1"]


def test_one_write_in_flight_and_writes_land_in_order():
    inner = GatedViews()
    views = OverlappedViews(inner)
    views.write([], {"name": "b1"})
    second = threading.Thread(target=views.write, args=([], {"name": "b2"}))
    second.start()
    second.join(0.2)
    assert second.is_alive() and not inner.begun("b2").is_set()  # the loop waits for the previous write
    inner.gate("b1").set()
    second.join(10)
    inner.gate("b2").set()
    views.flush()
    assert inner.journal == ["b1", "b2"]


def test_fences_and_deletions_follow_every_earlier_write():
    inner = GatedViews()
    views = OverlappedViews(inner)
    views.write([], {"name": "b1"})
    inner.gate("b1").set()
    assert views.raise_fence(3, 7) == 7
    views.write([], {"name": "b2"})
    inner.gate("b2").set()
    views.delete_user("c1")
    assert inner.journal == ["b1", "fence 3 7", "b2", "delete c1"]


def test_a_failed_write_is_raised_on_the_loop_thread_by_the_next_write_or_flush():
    inner = GatedViews()
    views = OverlappedViews(inner)
    inner.fail.add("b1")
    inner.gate("b1").set()
    views.write([], {"name": "b1"})
    with pytest.raises(RuntimeError, match="refused b1"):
        views.write([], {"name": "b2"})
    assert not inner.begun("b2").is_set()  # nothing after a failed write is started
    inner.fail.add("b3")
    inner.gate("b3").set()
    views.write([], {"name": "b3"})
    with pytest.raises(RuntimeError, match="refused b3"):
        views.flush()
