"""Faust's aiokafka consumer with a cheaper, safer hand-off of each fetched message.

Faust 0.15 hands every fetched message to the streams with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: two
futures and a task per message (the largest single item of a bare Faust
loop's profile, docs/BENCHMARKS.md), and, when a rebalance suspends the flow
in the middle, the delivery is abandoned while the message is still marked
as read, one of the ways a message was skipped around a rebalance
(``streams/offset_guard.py``).

Here the hand-off is a plain ``await callback(message)`` and the flow is
checked between messages: a message is either delivered whole or not read
(so a suspended flow re-reads it from the committed offset after the
rebalance). Everything else is Faust's loop, unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust import Schema
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode import Service


class ShortFetchWaitThread(AIOKafkaConsumerThread):
    """Faust's consumer thread with ``fetch_max_wait_ms`` from the settings instead of a fixed 1,500.

    Why: on a broker that holds a fetch for its whole wait even when data
    arrives (tansu does), the wait is added to every event's latency.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = getattr(self.app, "settings_", None)
        if settings is not None:
            # aiokafka reads this when it starts its fetcher, after construction.
            consumer._fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        return consumer


class HandOffConsumer(AIOKafkaConsumer):
    async def mark_processed(self, tp: Any, start: int, end: int) -> None:
        """Offsets ``[start, end)`` of ``tp`` were processed outside the stream: let commits pass them.

        Faust commits a partition only up to its first offset never acked,
        and refuses outright when the lowest acked offset is more than one
        above the committed one. Messages its streams dropped (read from the
        broker by the worker instead: ``streams/offset_guard.py``) are never
        acked, so without this the partition's commits would stop for good
        (measured: a worker started while a burst arrived kept its committed
        offsets at their start values). Call it once the range is processed;
        it counts as acked only up to the highest offset the stream acks.
        """
        if end > start:
            await self._add_gap(tp, start, end - 1)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ShortFetchWaitThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by every worker
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        suspended = self.suspend_flow.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(Any, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        if suspended():
                            # A rebalance is under way: neither deliver nor mark
                            # as read; the partition is re-read from its
                            # committed offset afterwards.
                            break
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await callback(message)
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


def skip_empty_producer_buffer(buffer: Any) -> None:
    """Make Faust's per-message "wait until the producer buffer ebbs" free when it is empty.

    Faust's conductor awaits ``ProducerBuffer.wait_until_ebb`` before every
    message it delivers; its size check reads the app's settings each time
    (~6 % of a bare loop). The worker's outputs bypass Faust's producer
    (``streams/kafka_sink.py``), so the buffer is almost always empty: check
    that first, and fall back to Faust's own wait otherwise.
    """
    pending = buffer.pending
    wait_until_ebb = buffer.wait_until_ebb

    async def wait_until_ebb_if_pending() -> None:
        if not pending.empty():
            await wait_until_ebb()

    buffer.wait_until_ebb = wait_until_ebb_if_pending


class RawBytesSchema(Schema):
    """A topic schema that hands each message's key and value over as the raw bytes.

    The worker decodes and validates events itself (so a bad message can be
    dead-lettered with its bytes); Faust's own path for ``raw`` still went
    through its codec registry twice per message (~10 % of a no-op loop).
    """

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                default_propagate: bool = False) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode
