"""``faust_default_eps``: a no-op Faust agent over the bench's events, with Faust's defaults.

The agent loops ``stream.take_events`` and does nothing else, in a child
process (``python -m streams.tools.bench.faust_reference``) with its own
consumer group. The child is told what to do through ``RECOSTREAM_BENCH_REF``
(JSON) and writes its result to a file; the bench waits for that file.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import click

from streams.settings import Settings

SPEC_ENV = "RECOSTREAM_BENCH_REF"


def faust_default_eps(settings: Settings, expect: int, run_dir: Path, *, timeout: float = 600.0,
                      on_progress: Callable[[int], None] | None = None) -> dict:
    """Run the no-op agent until it has taken ``expect`` events: ``{"events", "seconds", "eps"}``.

    The rate counts the events after the first delivered batch over the time
    from that batch to the last event, so the group join is not counted.
    """
    from streams.tools.up import stop_process, worker_env

    tag = uuid.uuid4().hex[:6]
    out, progress_file, log_path = (run_dir / f"faust-default-{tag}{ext}" for ext in (".json", ".progress", ".log"))
    s = settings.replace(app_id=f"{settings.app_id}-ref-default-{tag}", data_dir=str(run_dir / f"ref-{tag}"))
    env = worker_env(s, **{SPEC_ENV: json.dumps({"expect": expect, "out": str(out), "progress": str(progress_file)})})
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", __name__], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        seen = 0
        while not out.exists():
            if proc.poll() is not None:
                raise click.ClickException(f"Faust reference exited with {proc.returncode}; "
                                           f"log {log_path}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"Faust reference did not finish in {timeout:.0f}s; log {log_path}")
            if on_progress:
                with contextlib.suppress(OSError, ValueError):
                    n = int(progress_file.read_text() or 0)
                    if n > seen:
                        on_progress(n - seen)
                        seen = n
            time.sleep(0.1)
        result = json.loads(out.read_text())
        if on_progress and result["events"] > seen:
            on_progress(result["events"] - seen)
        return result
    finally:
        stop_process(proc, timeout=10)


def _child(spec: dict) -> None:
    """The child process: a Faust worker with one no-op agent; writes its result once it has ``expect`` events."""
    import faust
    from faust.worker import Worker

    settings = Settings.from_env()
    expect = int(spec["expect"])
    # Faust's defaults, except what is needed to run here at all: where to
    # connect, reading the pre-produced topics from the beginning, no web
    # server (port clashes), and the session timeout that makes the group
    # join take seconds instead of ~30 s on tansu (not a throughput setting).
    app = faust.App(settings.app_id,
                    broker=[f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap_servers.split(",")],
                    store="memory://", web_enabled=False, autodiscover=False,
                    consumer_auto_offset_reset="earliest", datadir=settings.data_dir,
                    broker_session_timeout=settings.kafka_session_timeout_s,
                    broker_heartbeat_interval=settings.kafka_heartbeat_interval_s)
    topic = app.topic(*settings.input_topics, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    state = {"n": 0, "first_n": 0, "t_first": None, "t_last": None, "written": False}
    progress, out = Path(spec["progress"]), Path(spec["out"])

    @app.agent(topic, name="bare")
    async def bare(stream):
        async for batch in stream.take_events(settings.batch_max_events, within=settings.batch_max_wait_s):
            now = time.perf_counter()
            state["n"] += len(batch)
            if state["t_first"] is None:
                state["t_first"], state["first_n"] = now, len(batch)
            state["t_last"] = now
            if state["n"] % 10_000 < len(batch):
                progress.write_text(str(state["n"]))
            if state["n"] >= expect and not state["written"]:
                state["written"] = True
                span = state["t_last"] - state["t_first"]
                result = {"events": state["n"], "seconds": span,
                          "eps": (state["n"] - state["first_n"]) / span if span > 0 else None}
                tmp = out.with_name(out.name + ".tmp")
                tmp.write_text(json.dumps(result))
                tmp.rename(out)  # the bench never reads a half-written file

    parent = os.getppid()

    @app.timer(1.0)
    async def orphaned() -> None:  # the bench died without stopping us: do not linger
        if os.getppid() != parent:
            os._exit(1)

    Worker(app, loglevel="info", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    _spec = os.environ.get(SPEC_ENV)
    if not _spec:
        sys.exit("streams.tools.bench.faust_reference is run by `recostream bench`")
    _child(json.loads(_spec))
