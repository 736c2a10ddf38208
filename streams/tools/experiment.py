"""``recostream experiment report``: the running experiment's report, from the counts the workers keep in Redis.

Each worker keeps, per partition it owns, the experiment's counts restored
from the changelog and advanced by every batch, and writes them to
``{prefix}:effect:{app}:{partition}`` (``streams/sinks/redis.py``; why they
are exact: docs/RELIABILITY.md). This command reads every partition's key,
adds them up (:meth:`models.effect.EffectCounts.merge`) and prints
:func:`models.effect.experiment_report` for the configured experiment
(``RECOSTREAM_EXPERIMENT`` / ``RECOSTREAM_EXPERIMENT_FILE``, the settings the
workers run with) as JSON or as a table.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from models.effect import EffectCounts, experiment_report, render_report
from streams.settings import Settings, SettingsError
from streams.sinks.redis import RedisKeys

_GLOB = re.compile(r"([*?\[\]\\])")


def effect_keys_pattern(settings: Settings) -> str:
    """The ``SCAN`` pattern of every partition's counts key (glob characters of the names escaped).

    >>> effect_keys_pattern(Settings(redis_prefix="rs", app_id="shop[1]"))
    'rs:effect:shop\\\\[1\\\\]:*'
    """
    prefix = _GLOB.sub(r"\\\1", settings.redis_prefix)
    app = _GLOB.sub(r"\\\1", settings.app_id)
    return f"{RedisKeys(prefix).effect(app, 0)[:-1]}*"


def read_counts(settings: Settings, client: Any) -> tuple[EffectCounts, list[int]]:
    """Every partition's counts in Redis, merged, and the partitions found (sorted)."""
    total, partitions = EffectCounts(), []
    base = RedisKeys(settings.redis_prefix).effect(settings.app_id, 0)[:-1]
    keys = sorted(client.scan_iter(match=effect_keys_pattern(settings), count=1000))
    for key, raw in zip(keys, client.mget(keys) if keys else []):
        suffix = key.decode()[len(base):]
        if raw is None or not suffix.isdigit():
            continue  # expired meanwhile, or another app whose id extends ours with ':'
        total = total.merge(EffectCounts.from_bytes(raw))
        partitions.append(int(suffix))
    return total, sorted(partitions)


@click.group()
def experiment() -> None:
    """The running experiment: which variant sells more (docs/EXPERIMENTS.md).

    Reads the counts the workers keep in Redis (RECOSTREAM_REDIS_URL,
    RECOSTREAM_REDIS_PREFIX, RECOSTREAM_APP_ID) for the experiment of
    RECOSTREAM_EXPERIMENT or RECOSTREAM_EXPERIMENT_FILE (the default one
    when neither is set), as the workers are configured.
    """


@experiment.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def report(as_json: bool) -> None:
    """Print the experiment's report: per arm, exposure, CTR, conversion, revenue; lifts and p-values.

    Every partition's counts are read from Redis and added up. The JSON has
    the keys experiment, control, days, variants, comparisons, vs_holdout,
    srm_p_value, srm_alarm, method, and partitions (those found in Redis).
    p-values are fixed-horizon: read them once, at the sample size planned
    before the start.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if not settings.redis_url:
        raise click.UsageError("set RECOSTREAM_REDIS_URL (or REDIS_URL): the counts are read from Redis")
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        counts, partitions = read_counts(settings, client)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise click.ClickException(f"cannot read the counts from Redis ({exc}); check RECOSTREAM_REDIS_URL") from None
    finally:
        client.close()
    result = experiment_report(settings.experiment_config, counts)
    result["partitions"] = partitions
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(render_report(result))
        click.echo(f"partitions counted: {', '.join(map(str, partitions)) or 'none'}")
