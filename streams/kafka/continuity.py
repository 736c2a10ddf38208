"""Whether a consumed message continues its partition's position: the loop never moves a position past
an offset it has not handled unless the broker confirms that nothing is there.

The worker's positions (recorded in the changelog, ``streams/state/``) are
its truth: a partition's position is the offset of the next message the loop
must handle. The client can deliver something else:

* an **older** message (below the position): a fetch made before the
  partition was assigned again at its position (the batch API can return
  messages of an earlier assignment, librdkafka's documented known issue).
  It was handled already: it is dropped;
* a **newer** message (past the position): offsets were skipped. That is
  legitimate where no record is there (a transaction's commit marker, a
  compacted or aborted record), and a loss where one is. Seen on the
  embedded broker under load: in the fault test with oversized messages
  arriving from a second producer (``tests/integration/test_faults.py``),
  about one run in twenty ended with an 800 KB or 5 MB message never
  dead-lettered while every valid event around it was counted, and a
  logged run showed the cause, a partition's next message delivered one
  offset past the worker's position.

A gap is therefore read again: the loop seeks the partition back to its
position (:data:`Check.REREAD`), and only when ``confirm_after`` reads in a
row come back with the same gap is it stepped over (:data:`Check.STEP_OVER`,
logged and counted): no record exists there. Reading again costs the
partition a fetch round trip per read, paid at each transaction marker when
shops produce in transactions.

Examples
--------
>>> c = Continuity(confirm_after=2)
>>> c.check(("click", 0), offset=5, position=5)
<Check.NEXT: 'next'>
>>> c.check(("click", 0), offset=3, position=6)
<Check.STALE: 'stale'>
>>> [c.check(("click", 0), offset=8, position=6) for _ in range(3)]  # read again twice, then stepped over
[<Check.REREAD: 'reread'>, <Check.REREAD: 'reread'>, <Check.STEP_OVER: 'step_over'>]
>>> c.check(("click", 0), offset=8, position=6)  # a new gap at the same position is read again
<Check.REREAD: 'reread'>
>>> c.check(("click", 0), offset=6, position=6)  # the record came back: the gap is forgotten
<Check.NEXT: 'next'>
"""

from __future__ import annotations

import enum

Key = tuple[str, int]  # (topic, partition)


class Check(enum.Enum):
    """What the loop does with a consumed message, given its partition's position."""

    NEXT = "next"  # the message at the position (or the partition has none yet): handle it
    STALE = "stale"  # below the position: handled already, drop it
    REREAD = "reread"  # past the position: seek back to the position, drop the rest of the partition's batch
    STEP_OVER = "step_over"  # past the position, confirmed by reading again: no record there; handle it


class Continuity:
    """The gaps being confirmed, per partition (see the module doc)."""

    def __init__(self, confirm_after: int = 2) -> None:
        self.confirm_after = confirm_after
        self._rereads: dict[Key, tuple[int, int]] = {}  # key -> (position read again from, times)

    def check(self, key: Key, offset: int, position: int | None) -> Check:
        """What to do with the message at ``offset`` of ``key`` whose position is ``position``. Reads again
        are counted per position (a gap at another position starts from none) until the gap is
        stepped over or :meth:`forget` is called."""
        if position is None or offset == position:
            self._rereads.pop(key, None)
            return Check.NEXT
        if offset < position:
            return Check.STALE
        at, times = self._rereads.get(key, (position, 0))
        if at != position:
            times = 0
        if times < self.confirm_after:
            self._rereads[key] = (position, times + 1)
            return Check.REREAD
        del self._rereads[key]
        return Check.STEP_OVER

    def forget(self) -> None:
        """Drop every gap being confirmed (the assignment changed)."""
        self._rereads.clear()
