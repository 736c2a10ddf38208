"""The ``recostream bench`` command: options, progress on stderr, the report on stdout."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from streams.settings import Settings, SettingsError
from streams.tools.bench.profiling import py_spy_command


@click.command("bench")
@click.option("--events", "n_events", default=200_000, show_default=True, type=click.IntRange(min=100),
              help="Events pre-produced and processed for the throughput measurement.")
@click.option("--rate", default=2000.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Offered load (events/s) of the freshness phase.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1, max=64),
              help="Worker processes (each its own `recostream worker`).")
@click.option("--users", default=50_000, show_default=True, type=click.IntRange(min=1), help="Simulated shoppers.")
@click.option("--items", "n_items", default=20_000, show_default=True, type=click.IntRange(min=16),
              help="Catalogue size.")
@click.option("--freshness-seconds", default=30.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Length of the freshness phase (0 skips it).")
@click.option("--references/--no-references", default=True, show_default=True,
              help="Measure the raw-consumer and no-op Faust references over the same events.")
@click.option("--seed", default=7, show_default=True, help="Simulator seed.")
@click.option("--py-spy", "py_spy_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Record each worker with py-spy during the throughput and freshness phases "
                   "(collapsed stacks per phase and worker in this directory).")
@click.option("--free-models", is_flag=True,
              help="Run the workers with near-free models (nothing learned, one list and one segment for "
                   "everyone; everything else unchanged): throughput_eps becomes the upper bound for any "
                   "model code. Not the product.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
def bench(n_events: int, rate: float, workers: int, users: int, n_items: int, freshness_seconds: float,
          references: bool, seed: int, py_spy_dir: Path | None, free_models: bool, as_json: bool) -> None:
    """Benchmark the real worker: throughput, Faust references, freshness, memory.

    Starts the embedded broker and Redis (or uses RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS /
    RECOSTREAM_REDIS_URL), pre-produces --events generated shop events, measures
    a raw aiokafka consumer and a no-op Faust agent (product settings and Faust
    defaults) over them and the broker's own freshness (a plain consumer at
    --rate), then --workers real workers processing them (throughput_eps),
    then freshness (produce -> recommendations readable in Redis) at --rate
    events/s for --freshness-seconds. Progress goes to stderr;
    --json prints one JSON object with every number to stdout.
    """
    from rich.console import Console

    from streams.tools.bench.report import print_report
    from streams.tools.bench.run import run_bench

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if py_spy_dir is not None and py_spy_command() is None:
        raise click.UsageError("--py-spy needs the py-spy command, an optional tool: pip install py-spy")
    err = Console(stderr=True)
    # SIGTERM unwinds like Ctrl-C, so the servers and workers started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_bench(settings, n_events=n_events, rate=rate, workers=workers, users=users, items=n_items,
                       freshness_seconds=freshness_seconds, references=references, seed=seed,
                       py_spy_dir=py_spy_dir, free_models=free_models, say=lambda m: err.print(m, highlight=False))
    if as_json:
        click.echo(json.dumps(result))
        return
    print_report(err if not sys.stdout.isatty() else Console(), result)
