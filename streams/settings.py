"""One frozen, validated settings object, read from the environment.

Every setting is an environment variable with the prefix ``RECOSTREAM_`` and a
documented default (12-factor). Two well-known names are also accepted
without the prefix because every Kafka/Redis deployment already sets them:
``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL``.

Values are validated once, at start-up, so a typo fails loudly with the name of
the variable instead of surfacing later as a strange runtime error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field, fields
from typing import Any, Collection, Mapping

from models.effect import Experiment, ExperimentError, default_experiment
from models.events import EVENT_TYPES

PREFIX = "RECOSTREAM_"
ALIASES = {"kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS", "redis_url": "REDIS_URL"}


class SettingsError(ValueError):
    """A configuration value is missing or invalid."""


def _doc(default: Any, help: str, **checks: Any) -> Any:
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Each field maps to ``RECOSTREAM_<FIELD_UPPER>``."""

    # --- services (empty: `recostream up` starts the embedded ones) ---
    kafka_bootstrap_servers: str = _doc("", "Kafka bootstrap servers, host:port[,host:port]. Empty: embedded broker (up only).")
    redis_url: str = _doc("", "Redis URL, e.g. redis://:password@host:6379/0 or rediss:// for TLS. Empty: embedded Redis (up only).")
    kafka_security_protocol: str = _doc("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    kafka_sasl_mechanism: str = _doc("PLAIN", "SASL mechanism when SASL is used: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    kafka_sasl_username: str = _doc("", "SASL username.")
    kafka_sasl_password: str = _doc("", "SASL password.")
    kafka_ssl_cafile: str = _doc("", "CA bundle for Kafka TLS.")

    # --- topics ---
    topic_browse: str = _doc("browse", "Input topic for browse events (set all three to one name for a single mixed topic).")
    topic_click: str = _doc("click", "Input topic for click events.")
    topic_purchase: str = _doc("purchase", "Input topic for purchase events.")
    topic_items: str = _doc("items", "Compacted catalogue topic keyed by item_id.")
    topic_recommendations: str = _doc("recommendations", "Output topic of top-N recommendations, keyed by user_id.")
    topic_dead_letter: str = _doc("dead-letter", "Invalid messages with original bytes, source position and reason.")
    topic_control: str = _doc("control", "Operator commands keyed by user_id (e.g. forget a customer); partitioned like the inputs.")
    topic_impressions: str = _doc("impressions", "What the shop displayed (rec_id, items shown), keyed by user_id; partitioned like the inputs.")
    partitions: int = _doc(4, "Partitions of the input topics (upper bound on useful workers).", min=1, max=1024)
    replication_factor: int = _doc(1, "Replication factor for topics the app creates.", min=1, max=16)

    # --- worker ---
    app_id: str = _doc("recostream", "Consumer group id; names the changelog topic and the models' checkpoint keys.")
    metrics_port: int = _doc(9464, "Prometheus metrics port of the worker (one per worker).", min=0, max=65535)
    data_dir: str = _doc("run/worker", "Directory for the worker runtime's local files.")
    worker_id: str = _doc("", "Stable id of this worker (names its model checkpoint). Default: hostname:metrics_port.")
    commit_interval_s: float = _doc(1.0, "Seconds between position records (the worker's commits): a crash "
                                    "replays at most this much input.", min=0.01, max=3600.0)
    generation_epoch: int = _doc(0, "Added above the consumer group's generation on every changelog record; raise it "
                                 "only after the broker deleted the consumer group (docs/RELIABILITY.md).",
                                 min=0, max=2**20)
    checkpoint_interval_s: float = _doc(300.0, "Seconds between model checkpoints (0 = only at shutdown and after a forget).", min=0.0, max=86400.0)
    item_updates_heartbeat_s: float = _doc(10.0, "A worker with no item-side update to publish for this long publishes "
                                           "a heartbeat, so its peers can tell idle from stuck.", min=0.1, max=3600.0)
    item_updates_retention_s: float = _doc(86400.0, "Retention of the item-updates topic: a worker restored from a "
                                           "checkpoint older than this misses item-side updates (keep it well above "
                                           "the checkpoint interval).", min=60.0, max=365 * 86400.0)
    item_update_max_bytes: int = _doc(524288, "Largest item-updates record: a batch's update is split into records "
                                      "of at most this size.", min=4096, max=16_000_000)
    warm_customers: int = _doc(100_000, "Customers whose own model state stays in memory between batches (the least "
                               "recently served beyond it are held only in their profiles, and taken back when "
                               "they return).", min=1, max=100_000_000)
    batch_max_events: int = _doc(1000, "Upper bound of one micro-batch.", min=1, max=100_000)
    batch_max_wait_s: float = _doc(0.01, "Max seconds a micro-batch waits to fill.", min=0.001, max=10.0)
    shutdown_timeout_s: float = _doc(30.0, "After SIGTERM/SIGINT, seconds before a worker that has not stopped "
                                     "exits anyway (events not committed are replayed).", min=1.0, max=3600.0)
    # tansu (and slow-joining brokers in general) hold a JoinGroup for about
    # half the session timeout, so Kafka's 45 s default would delay every first
    # assignment by tens of seconds; 6 s keeps liveness detection sane.
    kafka_session_timeout_s: float = _doc(6.0, "Consumer group session timeout (also bounds join time on tansu).", min=1.0, max=300.0)
    kafka_heartbeat_interval_s: float = _doc(1.0, "Consumer heartbeat interval.", min=0.1, max=60.0)
    # Apache Kafka answers a fetch as soon as data exists, but tansu holds
    # every fetch for the whole wait (docs/BENCHMARKS.md), so this wait bounds
    # how long an event sits in the broker before a worker sees it. On Kafka a
    # short wait costs only extra idle fetch requests.
    kafka_fetch_max_wait_ms: int = _doc(50, "Longest time the broker may hold a consumer fetch (bounds freshness on tansu).",
                                        min=1, max=10_000)

    # --- recommendations ---
    top_n: int = _doc(20, "Recommendations per user.", min=1, max=1000)
    exclude: str = _doc("purchased", "Items excluded from a user's recommendations.", choices=("purchased", "interacted", "none"))
    redis_prefix: str = _doc("rs", "Prefix of every Redis key the app writes.")
    recs_ttl_s: int = _doc(7 * 86400, "TTL of recommendation and profile keys in Redis (0 = none).", min=0)
    n_segments: int = _doc(6, "Number of customer segments (River KMeans clusters).", min=1, max=64)
    seed: int = _doc(42, "Seed for every stochastic model component.")
    ranker: str = _doc("", "The product ranker's parameters other than its defaults, as a JSON object, e.g. "
                       '{"popularity_half_life": 200000, "covisit_half_life": 20000000}: half-lives count events, '
                       "scale them with the shop's traffic. Models keep the parameters they started with "
                       "(docs/RELIABILITY.md).")

    # --- privacy ---
    pseudonymize_key: str = _doc("", "If set, user ids are replaced at ingestion by HMAC-SHA256(key, user_id): nothing downstream sees raw ids.")

    # --- input limits (bad input goes to the dead-letter topic) ---
    max_message_bytes: int = _doc(65536, "Largest accepted event message.", min=256, max=10_000_000)
    max_id_length: int = _doc(128, "Longest accepted id (event, user, item, session, order).", min=8, max=4096)
    min_event_ts: float = _doc(631152000.0, "Earliest accepted event time, epoch seconds (default 1990-01-01).", min=0)
    max_future_skew_s: float = _doc(86400.0, "How far in the future an event time may be.", min=0)
    dedupe_window: int = _doc(512, "Event ids remembered per user to drop duplicates.", min=0, max=100_000)
    max_impression_items: int = _doc(100, "Most items one impression may list.", min=1, max=10_000)

    # --- experiment (docs/EXPERIMENTS.md) ---
    experiment: str = _doc("", "The experiment as JSON text (variants, shares, holdout). Empty: RECOSTREAM_EXPERIMENT_FILE, "
                           "else one variant `ranker` with every customer.")
    experiment_file: str = _doc("", "Path of a JSON file holding the experiment (instead of RECOSTREAM_EXPERIMENT).")
    attribution_click_window_s: float = _doc(1800.0, "How long after an impression a click of an item it showed is "
                                             "credited to it (last touch).", min=1.0, max=90 * 86400.0)
    attribution_purchase_window_s: float = _doc(86400.0, "How long after an impression a purchase of an item it showed "
                                                "is credited to it (last touch).", min=1.0, max=90 * 86400.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "min" in meta and value < meta["min"]:
                raise SettingsError(f"{env_name(f.name)}={value!r} must be >= {meta['min']}")
            if "max" in meta and value > meta["max"]:
                raise SettingsError(f"{env_name(f.name)}={value!r} must be <= {meta['max']}")
            if "choices" in meta and value not in meta["choices"]:
                raise SettingsError(f"{env_name(f.name)}={value!r} must be one of {', '.join(meta['choices'])}")
        inputs = {self.topic_browse, self.topic_click, self.topic_purchase}
        if len(inputs) == 2:
            raise SettingsError("input topics must be three distinct topics, or one topic for every type "
                                f"(type then comes from the payload), got {sorted(inputs)}")
        topics = [*inputs, self.topic_items, self.topic_recommendations, self.topic_dead_letter, self.topic_control,
                  self.topic_impressions]
        if len(set(topics)) != len(topics) or not all(topics):
            raise SettingsError(f"topic names must be distinct and non-empty, got {topics}")
        # Parsed once, here, so that settings that do not add up stop the worker at start.
        try:
            overrides = ranker_overrides(self.ranker) if self.ranker else {}
        except ValueError as exc:
            raise SettingsError(f"RECOSTREAM_RANKER: {exc}") from None
        object.__setattr__(self, "_ranker_overrides", overrides)
        object.__setattr__(self, "_experiment", _load_experiment(self.experiment, self.experiment_file, self.seed,
                                                                 overrides))

    @property
    def ranker_overrides(self) -> dict[str, Any]:
        """The product ranker's parameters of RECOSTREAM_RANKER (:func:`ranker_overrides`); empty: the defaults."""
        return dict(self._ranker_overrides)  # type: ignore[attr-defined]

    @property
    def experiment_config(self) -> Experiment:
        """The validated experiment (:class:`models.effect.Experiment`); the default one when none is set."""
        return self._experiment  # type: ignore[attr-defined]

    # ------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``) plus explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None and f.name in ALIASES:
                raw = environ.get(ALIASES[f.name])
            if raw is None:
                continue
            values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def changelog_topic(self) -> str:
        """The profiles' changelog: one partition per input partition (streams/state/changelog.py)."""
        return f"{self.app_id}-profiles-changelog"

    @property
    def item_updates_topic(self) -> str:
        """The item-updates log: one partition, every worker's item-side learning in one order (streams/sharing)."""
        return f"{self.app_id}-item-updates"

    @property
    def effective_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}:{self.metrics_port}"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def input_topics(self) -> dict[str, str | None]:
        """Map topic name -> event type; ``None`` for one mixed topic (type in the payload).

        One mixed topic keeps each customer's events in order across types
        (Kafka orders within a partition, not across topics), which the
        sequence-aware ranker can use; three topics are the simpler contract.
        """
        topics = {self.topic_for(t): t for t in EVENT_TYPES}
        return {self.topic_browse: None} if len(topics) == 1 else topics

    def topic_for(self, event_type: str) -> str:
        return getattr(self, f"topic_{event_type}")

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) connection config, security included."""
        conf = {"bootstrap.servers": self.kafka_bootstrap_servers, "security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            conf.update({"sasl.mechanism": self.kafka_sasl_mechanism,
                         "sasl.username": self.kafka_sasl_username,
                         "sasl.password": self.kafka_sasl_password})
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = self.kafka_ssl_cafile
        return conf

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict with secrets masked (safe to log)."""
        out = dataclasses.asdict(self)
        for k in ("kafka_sasl_password", "pseudonymize_key"):
            if out[k]:
                out[k] = "***"
        out["redis_url"] = masked_url(out["redis_url"])
        return out


#: HybridRanker parameters that other settings or options set: the serving rule, sharing, the seed.
_SET_ELSEWHERE = frozenset({"exclude", "share_items", "seed"})


def _ranker_parameters(reserved: Collection[str]) -> list[str]:
    """The names of :class:`HybridRanker`'s parameters but ``reserved``, in signature order."""
    import inspect

    from models.ranking.hybrid import HybridRanker  # numpy and the models: only when a ranker is configured

    return [name for name in inspect.signature(HybridRanker).parameters if name not in reserved]


def _try_ranker(params: Mapping[str, Any]) -> None:
    """Build one :class:`HybridRanker` with ``params``; ``ValueError`` with the ranker's reason if it refuses."""
    from models.ranking.hybrid import HybridRanker

    try:
        HybridRanker(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the ranker refuses them ({exc})") from None


def ranker_overrides(text: str) -> dict[str, Any]:
    """The :class:`HybridRanker` parameters of ``text``, a JSON object, checked against the ranker's
    signature and tried on one (``ValueError`` otherwise). The serving rule, sharing and the seed
    are set elsewhere (RECOSTREAM_EXCLUDE, RECOSTREAM_SEED; replay's options).

    >>> ranker_overrides('{"popularity_half_life": 20000, "covisit_half_life": null}')
    {'popularity_half_life': 20000, 'covisit_half_life': None}
    >>> ranker_overrides('{"exclude": "none"}')
    Traceback (most recent call last):
    ...
    ValueError: not a parameter to set here: exclude (the serving rule, sharing and the seed have settings of their own)
    """
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(overrides, dict):
        raise ValueError("must be a JSON object of HybridRanker parameters")
    unknown = sorted(set(overrides) - set(_ranker_parameters(_SET_ELSEWHERE)))
    if unknown:
        raise ValueError(f"not a parameter to set here: {', '.join(unknown)} (the serving rule, sharing and the seed "
                         "have settings of their own)")
    _try_ranker(overrides)
    return overrides


def _load_experiment(text: str, path: str, seed: int, base: Mapping[str, Any] | None = None) -> Experiment:
    """The experiment of RECOSTREAM_EXPERIMENT or RECOSTREAM_EXPERIMENT_FILE, or the default one.

    Errors name the variable and then the setting inside the experiment
    (``RECOSTREAM_EXPERIMENT: experiment.variants[1].share: ...``). A
    variant's ranker overrides are checked against :class:`HybridRanker`'s
    parameters and tried on one (on top of ``base``, the product ranker's overrides), so a value it
    refuses stops the worker here rather than when it first serves that variant.
    """
    if text and path:
        raise SettingsError("set RECOSTREAM_EXPERIMENT or RECOSTREAM_EXPERIMENT_FILE, not both")
    if not text and not path:
        return default_experiment()
    # `exclude` is the engine's serving rule, the same for every arm so that arms compare on equal terms.
    known = _ranker_parameters({"exclude"})
    var = "RECOSTREAM_EXPERIMENT" if text else f"RECOSTREAM_EXPERIMENT_FILE ({path})"
    try:
        experiment = Experiment.from_json(text, known) if text else Experiment.from_file(path, known)
    except ExperimentError as exc:
        raise SettingsError(f"{var}: {exc}") from None
    for i, v in enumerate(experiment.variants):
        if v.overrides:
            try:
                _try_ranker({"seed": seed, **(base or {}), **v.overrides_dict})
            except ValueError as exc:
                raise SettingsError(f"{var}: experiment.variants[{i}].overrides: {exc}") from None
    return experiment


def masked_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***``.

    The credentials end at the *last* ``@``: a password may hold an ``@``
    that its owner did not percent-encode, and a host never does.

    >>> masked_url("redis://:s3cret@127.0.0.1:6379/0"), masked_url("redis://127.0.0.1:6379/0")
    ('redis://***@127.0.0.1:6379/0', 'redis://127.0.0.1:6379/0')
    >>> masked_url("rediss://user:p@ss@w0rd@redis.internal:6380/1"), masked_url("user:p@ss@host:6379")
    ('rediss://***@redis.internal:6380/1', '***@host:6379')
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{env_name(f.name)}={raw!r} is not a valid {kind.__name__}") from None


def describe() -> list[tuple[str, str, str]]:
    """(env var, default, help) for every setting: used by the docs and `--help`."""
    return [(env_name(f.name), repr(f.default), f.metadata["help"]) for f in fields(Settings)]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces ``settings`` in a child process."""
    return {env_name(f.name): str(getattr(settings, f.name)) for f in fields(Settings)}
