"""The ``recostream`` command line: up, worker, produce, forget, replay, convert, bench, settings."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from streams.settings import Settings, SettingsError, describe

# Tools are imported when their command runs: a worker's process loads none of them.
TOOLS = {
    "replay": "streams.tools.replay:replay",
    "convert": "streams.tools.convert:convert_command",
    "bench": "streams.tools.bench.command:bench",
    "bench-engine": "streams.tools.bench_engine:bench_engine",
    "experiment": "streams.tools.experiment:experiment",
}


class _Commands(click.Group):
    """The CLI's commands, the tools among them loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *TOOLS])

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        if name in TOOLS:
            module, attr = TOOLS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


def _settings(**overrides) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _reach_kafka(settings: Settings) -> None:
    from streams.kafka.topics import KafkaUnreachable, check_kafka

    try:
        check_kafka(settings)
    except KafkaUnreachable as exc:
        raise click.ClickException(str(exc)) from None


def _env_help() -> str:
    return "\n".join(f"  {name} (default {default}): {help}" for name, default, help in describe())


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="recostream")
def cli() -> None:
    """recostream: shop events in Kafka -> fresh personal recommendations in Redis.

    Configuration comes from RECOSTREAM_* environment variables; `recostream
    settings` lists them with their defaults.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the effective settings as JSON (secrets masked).")
def settings(as_json: bool) -> None:
    """List every setting: environment variable, default and meaning (validates the current ones)."""
    current = _settings()  # a bad value fails here, naming the variable
    if as_json:
        click.echo(json.dumps(current.redacted(), indent=2))
        return
    click.echo(_env_help())
    defaults = Settings().redacted()
    changed = {k: v for k, v in current.redacted().items() if v != defaults[k]}
    if changed:
        click.echo("\ncurrent values that differ from the defaults (secrets masked):")
        for name, value in changed.items():
            click.echo(f"  RECOSTREAM_{name.upper()}={value}")


@cli.command()
@click.option("--loglevel", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
def worker(loglevel: str) -> None:
    """Run one worker against the configured Kafka and Redis.

    This is what docker-compose runs, once per replica. It needs
    RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS) and
    RECOSTREAM_REDIS_URL (or REDIS_URL). SIGTERM finishes the current batch,
    records positions, checkpoints the models and exits. A Redis that refuses
    the credentials, or topics with different partition counts, stop it at
    start with a message.
    """
    from streams.worker import run_worker  # Faust import is slow

    s = _settings()
    if not s.kafka_bootstrap_servers or not s.redis_url:
        raise click.UsageError("set RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS and RECOSTREAM_REDIS_URL "
                               "(or use `recostream up`, which starts an embedded stack)")
    from streams.kafka.topics import KafkaUnreachable, TopicLayoutError
    from streams.sinks.redis import RedisAccessDenied

    try:
        run_worker(s, loglevel=loglevel)
    except (RedisAccessDenied, TopicLayoutError, KafkaUnreachable) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--events", "n_events", default=10_000, show_default=True, help="Generated events to publish.")
@click.option("--rate", default=0.0, show_default=True, help="Events per second (0 = as fast as possible).")
@click.option("--users", default=200, show_default=True, help="Simulated shoppers.")
@click.option("--items", "n_items", default=500, show_default=True, help="Catalogue size.")
@click.option("--seed", default=7, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publish this CSV (timestamp,user_id,item_id,event_type[,price]) instead of generated events.")
@click.option("--live-ts/--keep-ts", default=True, show_default=True,
              help="Stamp generated events with the wall clock (live) or keep simulated times.")
@click.option("--create-topics/--no-create-topics", default=True, show_default=True)
def produce(n_events: int, rate: float, users: int, n_items: int, seed: int, csv_path: Path | None,
            live_ts: bool, create_topics: bool) -> None:
    """Publish the catalogue and shop events (generated, or from a CSV file) to Kafka."""
    from streams.tools.producing import produce_csv, produce_generated

    s = _settings()
    if not s.kafka_bootstrap_servers:
        raise click.UsageError("set RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS)")
    _reach_kafka(s)
    if create_topics:
        from streams.kafka.topics import ensure_topics

        ensure_topics(s)
    if csv_path:
        summary = produce_csv(s, csv_path, rate=rate or None)
    else:
        summary = produce_generated(s, n_events=n_events, rate=rate or None, users=users, items=n_items,
                                    seed=seed, live_ts=live_ts)
    click.echo(json.dumps(summary))


@cli.command()
@click.argument("user_id")
@click.option("--wait", "wait_s", default=30.0, show_default=True,
              help="Seconds to wait until the customer's Redis keys are gone (0 = don't wait; needs REDIS_URL).")
def forget(user_id: str, wait_s: float) -> None:
    """Erase a customer: profile, dedupe state, model factors, Redis keys.

    Publishes a `forget` command on the control topic, keyed by the (pseudonymised,
    if RECOSTREAM_PSEUDONYMIZE_KEY is set) user id, so the worker owning the
    customer executes it; then waits until Redis no longer holds the customer.
    Prints one JSON object.
    """
    import time

    from streams.kafka.produce import make_producer
    from streams.privacy import ControlCommand, encode_command, pseudonym

    s = _settings()
    if not s.kafka_bootstrap_servers:
        raise click.UsageError("set RECOSTREAM_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS)")
    if wait_s and not s.redis_url:
        raise click.UsageError("--wait needs RECOSTREAM_REDIS_URL (or REDIS_URL) to check that the customer's "
                               "keys are gone; set it, or pass --wait 0 to only publish the command")
    _reach_kafka(s)
    uid = pseudonym(user_id, s.pseudonymize_key)
    producer = make_producer(s)
    producer.produce(s.topic_control, key=uid.encode(),
                     value=encode_command(ControlCommand(action="forget", user_id=uid, requested_at=time.time())))
    if producer.flush(30):
        raise click.ClickException("the forget command could not be delivered to Kafka")
    result = {"user_id": uid, "published": True, "erased_from_redis": None}
    if wait_s:
        import redis

        from streams.sinks.redis import RedisKeys

        keys, client = RedisKeys(s.redis_prefix), redis.Redis.from_url(s.redis_url)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and client.exists(keys.recs(uid), keys.profile(uid)):
            time.sleep(0.2)
        result["erased_from_redis"] = not client.exists(keys.recs(uid), keys.profile(uid))
    click.echo(json.dumps(result))
    if result["erased_from_redis"] is False:
        sys.exit(1)


@cli.command()
@click.option("--duration", default=0.0, show_default=True, help="Stop after this many seconds (0 = until Ctrl-C).")
@click.option("--rate", default=200.0, show_default=True, help="Generated events per second.")
@click.option("--users", default=300, show_default=True, help="Simulated shoppers.")
@click.option("--items", "n_items", default=1000, show_default=True, help="Catalogue size.")
@click.option("--metrics-port", type=int, default=None,
              help="Worker metrics port (0 = off). Default: RECOSTREAM_METRICS_PORT if set, else a free port.")
@click.option("--closed-loop", is_flag=True,
              help="Shoppers are shown their recommendations (impressions, clicks and purchases of shown items) "
                   "while the worker runs an experiment, the ranker against popularity with a 10% holdout "
                   "(unless RECOSTREAM_EXPERIMENT(_FILE) sets one); the summary ends with the experiment's report.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as one JSON object.")
def up(duration: float, rate: float, users: int, n_items: int, metrics_port: int | None, closed_loop: bool,
       as_json: bool) -> None:
    """Run the whole system: broker, Redis, topics, a worker and a shopper generator.

    Starts the embedded tansu broker and redis-server on loopback unless
    KAFKA_BOOTSTRAP_SERVERS / REDIS_URL point at running services, and writes
    run/up-<pid>/env for other commands to source. Ctrl-C, SIGTERM, SIGHUP or
    the end of --duration stop everything it started; its children also stop
    if `up` itself is killed.

    With --closed-loop each simulated shopper, at the start of a session,
    reads its list from Redis, sends an impression of its top 5 and clicks
    and buys shown items by its hidden tastes and the position; the summary
    (JSON key `experiment`) is `recostream experiment report` at the end of
    the run (docs/EXPERIMENTS.md).
    """
    import os

    from streams.tools.up import PortTaken, choose_metrics_port, run_up

    if metrics_port is None and os.environ.get("RECOSTREAM_METRICS_PORT"):
        metrics_port = _settings().metrics_port
    try:
        port = choose_metrics_port(metrics_port)
    except PortTaken as exc:
        raise click.ClickException(str(exc)) from None
    summary = run_up(_settings(metrics_port=port), duration=duration, rate=rate, users=users,
                     n_items=n_items, as_json=as_json, closed_loop=closed_loop)
    if as_json:
        click.echo(json.dumps(summary))
    if summary.get("error"):
        sys.exit(1)




def main() -> None:
    cli()


if __name__ == "__main__":
    main()
