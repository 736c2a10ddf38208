"""What a consumer fetch costs the embedded broker as a partition accumulates record batches.

Starts its own embedded tansu (``streams.tools.embedded.start_broker``, memory
storage), then, for a growing number of small record batches in topic ``t``
(one partition), measures at the tail of ``t`` and of an empty topic ``u``:

* ``ping_pong``: produce one record, wait until a consumer (fetch wait
  50 ms, as the worker's) receives it, repeat for ``--seconds``; latency
  p50 and the broker's CPU over the loop (share of one core);
* ``produce_only``: produce-and-acknowledge round trips, no consumer.

Seen on the 2-core machine of docs/BENCHMARKS.md: the cost of a
fetch that returns data grows with the number of record batches already in
the partition (tansu 0.6's memory engine), while produce cost and idle fetches
do not; a topic's batch count only grows (no retention, no DeleteRecords).

    .venv/bin/python benchmarks/tansu_fetch_cost.py [--steps 3] [--batches-per-step 30000] [--seconds 3]

Prints one JSON object per step (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.tools.embedded import start_broker


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def ping_pong(bootstrap: str, producer: Producer, topic: str, broker_pid: int, seconds: float) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{topic}-{time.time()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, high)])
    latencies: list[float] = []
    cpu0, t0 = cpu_seconds(broker_pid), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sent = time.perf_counter()
        producer.produce(topic, b"x" * 100)
        producer.flush()
        msg = consumer.poll(1.0)
        while msg is None or msg.error():
            msg = consumer.poll(1.0)
        latencies.append(time.perf_counter() - sent)
    cpu = (cpu_seconds(broker_pid) - cpu0) / (time.perf_counter() - t0)
    consumer.close()
    latencies.sort()
    return {"batches_in_partition": high, "round_trips": len(latencies),
            "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1), "broker_cpu_cores": round(cpu, 2)}


def produce_only(producer: Producer, topic: str, broker_pid: int, n: int = 1000) -> dict:
    cpu0, t0 = cpu_seconds(broker_pid), time.perf_counter()
    for _ in range(n):
        producer.produce(topic, b"x" * 100)
        producer.flush()
    return {"round_trip_us": round(1e6 * (time.perf_counter() - t0) / n),
            "broker_cpu_us_per_request": round(1e6 * (cpu_seconds(broker_pid) - cpu0) / n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="growth steps after the empty measurement")
    parser.add_argument("--batches-per-step", type=int, default=30_000, help="record batches added per step")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each ping-pong loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        broker = start_broker(Path(log_dir))
        bootstrap = f"127.0.0.1:{broker.port}"
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            for future in admin.create_topics([NewTopic("t", 1, 1), NewTopic("u", 1, 1)]).values():
                future.result()
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
            for step in range(args.steps + 1):
                if step:
                    print(f"adding {args.batches_per_step} record batches to t ...", file=sys.stderr, flush=True)
                    for i in range(args.batches_per_step):
                        producer.produce("t", b"x" * 100)
                        producer.flush()  # one record, one batch
                        if (i + 1) % 5000 == 0:
                            print(f"  {i + 1}", file=sys.stderr, flush=True)
                pid = broker.proc.pid
                print(json.dumps({"step": step, "tail_of_t": ping_pong(bootstrap, producer, "t", pid, args.seconds),
                                  "tail_of_empty_u": ping_pong(bootstrap, producer, "u", pid, args.seconds),
                                  "produce_only_t": produce_only(producer, "t", pid)}), flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
