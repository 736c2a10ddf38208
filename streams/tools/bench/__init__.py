"""``recostream bench``: throughput, references and freshness of the real worker, in one run.

One run, against the embedded stack (tansu + redis-server on loopback) or the
services named by ``RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS`` / ``RECOSTREAM_REDIS_URL``:

1. :mod:`.events`: ``--events`` generated shop events, stamped with the wall
   clock and pre-produced with the catalogue to topics of this run;
2. :mod:`.references` and :mod:`.faust_reference`: consumers that do no work,
   over the same events (raw aiokafka, the worker's own loop, a no-op Faust
   agent), and the broker's own freshness at the offered load;
3. :mod:`.throughput`: ``--workers`` real worker processes (:mod:`.workers`)
   process the events, timed on their own Prometheus metrics;
4. :mod:`.freshness`: the workers stay up while events are produced at
   ``--rate``; produce call -> the shopper's recommendations written to Redis.

:mod:`.run` puts the phases together, :mod:`.report` shapes the result,
:mod:`.command` is the click command. :mod:`.free_models` is the near-free
engine of ``--free-models`` (an upper bound for any model code), never on a
real worker's path. Method and current numbers: docs/BENCHMARKS.md.
"""
