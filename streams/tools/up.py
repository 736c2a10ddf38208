"""`recostream up`: the whole system on one machine, started and stopped by one command."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
import redis
from rich.console import Console

from models.effect import experiment_report, render_report
from streams.contract import format_rfc3339
from streams.kafka.produce import make_producer, publish_catalogue, publish_events
from streams.kafka.topics import ensure_topics
from streams.settings import Settings, masked_url, settings_env
from streams.sinks.redis import RedisKeys
from streams.tools.closed_loop import CLOSED_LOOP_EXPERIMENT, ClosedLoopShop, RedisLists
from streams.tools.embedded import EmbeddedStack, die_with_parent, free_port, port_is_free, start_broker, start_redis
from streams.tools.experiment import read_counts
from streams.tools.generator import ShopperSimulator

WORKER_STOP_TIMEOUT_S = 20.0
# What another process needs to join the stack `up` started (not its ports or worker id).
STACK_SETTINGS = frozenset(f"RECOSTREAM_{name.upper()}" for name in (
    "kafka_bootstrap_servers", "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username",
    "kafka_sasl_password", "kafka_ssl_cafile", "redis_url", "redis_prefix", "app_id", "partitions",
    "topic_browse", "topic_click", "topic_purchase", "topic_items", "topic_recommendations",
    "topic_dead_letter", "topic_control", "topic_impressions", "pseudonymize_key", "experiment", "experiment_file",
    "attribution_click_window_s", "attribution_purchase_window_s"))


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `recostream worker` child: ours, plus the resolved services."""
    env = dict(os.environ)
    env.update(settings_env(settings))
    env.update(extra)
    return env


def spawn_worker(settings: Settings, log_path: Path, loglevel: str = "info",
                 command: tuple[str, ...] = ("streams.cli", "worker")) -> subprocess.Popen:
    """A ``recostream worker`` child in its own process group; it gets SIGTERM if its parent dies.

    ``command``: what ``python -m`` runs; the bench passes its free-models worker.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", *command, "--loglevel", loglevel],
                                env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)


def stop_process(proc: subprocess.Popen, timeout: float = WORKER_STOP_TIMEOUT_S) -> int:
    """SIGTERM, wait, then SIGKILL the whole process group: nothing is left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):  # stragglers in its group
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def write_env_file(run_dir: Path, values: dict[str, str]) -> Path:
    """``run_dir/env``: ``export`` lines for the running stack, readable by its owner only (0600).

    ``source run/up-<pid>/env`` points ``recostream produce``, ``forget``, a
    second ``worker`` or any Kafka/Redis client at the stack.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# the stack `recostream up` started; source it: . " + str(path) + "\n")
        for name, value in values.items():
            out.write(f"export {name}={shlex.quote(value)}\n")
    os.chmod(path, 0o600)
    return path


def count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


class PortTaken(RuntimeError):
    """A configured port is in use by another process."""


def choose_metrics_port(requested: int | None) -> int:
    """``requested`` if free (0: metrics off); ``None``: any free port. Raises :class:`PortTaken`."""
    if requested is None:
        return free_port()
    if requested and not port_is_free(requested):
        raise PortTaken(f"metrics port {requested} is in use by another process: free it, pick another "
                        "with --metrics-port (RECOSTREAM_METRICS_PORT), or leave it unset for a free port")
    return requested


@contextlib.contextmanager
def stop_signals_interrupt():
    """SIGTERM and SIGHUP (what ``timeout``, systemd and a closed terminal send) stop ``up`` like Ctrl-C."""
    seen: list[int] = []

    def interrupt(signum, frame):
        if not seen:  # once: a second signal must not cut the clean-up short
            seen.append(signum)
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_up(settings: Settings, *, duration: float, rate: float, users: int, n_items: int,
           as_json: bool = False, run_dir: Path | None = None, closed_loop: bool = False) -> dict:
    with stop_signals_interrupt():
        try:
            return _run_up(settings, duration=duration, rate=rate, users=users, n_items=n_items,
                           as_json=as_json, run_dir=run_dir, closed_loop=closed_loop)
        except KeyboardInterrupt:  # a signal before the main loop: everything started is stopped already
            return {"error": "interrupted while starting"}


def with_closed_loop_experiment(settings: Settings) -> Settings:
    """``settings`` running :data:`CLOSED_LOOP_EXPERIMENT`, unless they configure an experiment of their own."""
    if settings.experiment or settings.experiment_file:
        return settings
    return settings.replace(experiment=json.dumps(CLOSED_LOOP_EXPERIMENT))


def _start_services(settings: Settings, stack: EmbeddedStack, run_dir: Path, say) -> Settings:
    """The embedded broker and Redis unless the settings name running ones; the settings that reach them."""
    if not settings.kafka_bootstrap_servers:
        stack.broker = start_broker(run_dir)
        stack.servers.append(stack.broker)
        settings = settings.replace(kafka_bootstrap_servers=stack.bootstrap_servers)
        say(f"[green]broker[/]  tansu (embedded) on {settings.kafka_bootstrap_servers}")
    else:
        say(f"[green]broker[/]  using {settings.kafka_bootstrap_servers}")
    if not settings.redis_url:
        # A password of this run only: another local user cannot read the customers' data.
        password = secrets.token_urlsafe(24)
        stack.redis = start_redis(run_dir, password=password)
        stack.servers.append(stack.redis)
        settings = settings.replace(redis_url=f"redis://:{password}@127.0.0.1:{stack.redis.port}/0")
        say(f"[green]redis[/]   redis-server (embedded) at {masked_url(settings.redis_url)}")
    else:
        say(f"[green]redis[/]   using {masked_url(settings.redis_url)}")
    return settings


def _start_generator(settings: Settings, sim: ShopperSimulator, rate: float, stop: threading.Event,
                     produced: list[int]) -> threading.Thread:
    """The catalogue, then the shoppers' records at ``rate`` in a thread, stamped with the wall clock."""
    producer = make_producer(settings)
    publish_catalogue(producer, settings, sim.catalogue())
    def generate() -> None:
        produced[0] = publish_events(producer, settings, sim.events(10**12), rate=rate, live_ts=True,
                              should_stop=stop.is_set,
                              on_progress=lambda k: produced.__setitem__(0, produced[0] + k))

    gen = threading.Thread(target=generate, name="generator", daemon=True)
    gen.start()
    return gen


def _run_up(settings: Settings, *, duration: float, rate: float, users: int, n_items: int,
            as_json: bool = False, run_dir: Path | None = None, closed_loop: bool = False) -> dict:
    console = Console(stderr=True, soft_wrap=True)  # URLs and paths never wrapped mid-line
    say = console.print
    run_dir = run_dir or Path("run") / f"up-{os.getpid()}"
    started = time.monotonic()
    wall_start = time.time()
    stack = EmbeddedStack()
    worker: subprocess.Popen | None = None
    stop = threading.Event()
    produced = [0]
    summary: dict = {}
    try:
        settings = _start_services(settings, stack, run_dir, say)
        if closed_loop:
            settings = with_closed_loop_experiment(settings)
            say(f"[green]experiment[/] {settings.experiment_config.name}: "
                + ", ".join(f"{arm} {share:.0%}" for arm, share in settings.experiment_config.shares.items()))
        env_file = write_env_file(run_dir, {k: v for k, v in settings_env(settings).items() if k in STACK_SETTINGS})
        summary["env_file"] = str(env_file)
        say(f"[green]env[/]     {env_file} (source it to point produce, forget or a client at this stack)")
        settings = settings.replace(data_dir=str(run_dir / "worker"))
        created = ensure_topics(settings)
        say(f"[green]topics[/]  {', '.join(created) or 'already present'}")
        worker = spawn_worker(settings, run_dir / "worker.log")
        say(f"[green]worker[/]  pid {worker.pid}, log {run_dir / 'worker.log'}"
            + (f", metrics http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port else ""))

        r = redis.Redis.from_url(settings.redis_url)
        keys = RedisKeys(settings.redis_prefix)
        if closed_loop:
            sim = ClosedLoopShop(n_users=users, n_items=n_items, seed=settings.seed, lists=RedisLists(r, keys))
        else:
            sim = ShopperSimulator(n_users=users, n_items=n_items, seed=settings.seed)
        gen = _start_generator(settings, sim, rate, stop, produced)
        say(f"[green]generator[/] {users} shoppers, {n_items} items, {rate:g} events/s"
            + (", shown their recommendations (closed loop)" if closed_loop else ""))
        first_rec_s, error = _watch(worker, r, keys, sim, produced, started, duration, say)
        if error:
            summary["error"] = f"{error}; see {run_dir / 'worker.log'}"
        say("stopping …")
        stop.set()
        gen.join(10)
        summary.update(_summary(r, keys, sim, settings, produced[0], first_rec_s, time.monotonic() - started))
        if closed_loop:
            summary["closed_loop"] = dict(sim.stats)
            summary["experiment"] = settled_report(settings, r, worker)
        summary["started_at"] = _iso(wall_start)
        if not as_json:
            _print_summary(console, summary)
        return summary
    finally:
        stop.set()
        if worker is not None:
            code = stop_process(worker)
            summary["worker_exit_code"] = code
        stack.stop()


def _watch(worker: subprocess.Popen, r: redis.Redis, keys: RedisKeys, sim: ShopperSimulator, produced: list[int],
           started: float, duration: float, say) -> tuple[float | None, str | None]:
    """Status lines until ``duration`` ends, Ctrl-C or the worker exits: (first list after s, error)."""
    first_rec_s = None
    next_status = time.monotonic() + 5
    with contextlib.suppress(KeyboardInterrupt):
        while not duration or time.monotonic() - started < duration:
            if worker.poll() is not None:
                return first_rec_s, f"worker exited with code {worker.returncode}"
            if first_rec_s is None and next(r.scan_iter(match=keys.recs("*"), count=1000), None):
                first_rec_s = time.monotonic() - started
                say(f"[bold green]first recommendations in Redis after {first_rec_s:.1f} s[/]")
            if time.monotonic() >= next_status:
                next_status += 5
                shown = (f"  impressions {sim.stats['impressions']:>6}" if isinstance(sim, ClosedLoopShop) else "")
                say(f"[dim]{time.monotonic() - started:5.0f}s  produced {produced[0]:>7}  "
                    f"users with recommendations {count_keys(r, keys.recs('*')):>5}{shown}[/]")
            time.sleep(0.2)
    return first_rec_s, None


def settled_report(settings: Settings, client: redis.Redis, worker: subprocess.Popen | None,
                   timeout_s: float = 20.0) -> dict:
    """The experiment's report (as ``recostream experiment report --json``) once the worker's counts in
    Redis stopped changing: it drains what the generator produced last."""
    counts, partitions = read_counts(settings, client)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (worker is None or worker.poll() is None):
        time.sleep(1.0)
        latest, partitions = read_counts(settings, client)
        if latest == counts:
            break
        counts = latest
    report = experiment_report(settings.experiment_config, counts)
    report["partitions"] = partitions
    return report


def _summary(r: redis.Redis, keys: RedisKeys, sim: ShopperSimulator, settings: Settings, produced: int,
             first_rec_s: float | None, elapsed: float) -> dict:
    category = {it["item_id"]: it["category"] for it in sim.items}
    users_with_recs = count_keys(r, keys.recs("*"))
    sample = None
    best = -1
    for key in r.scan_iter(match=keys.profile("*"), count=1000):
        prof = msgspec.json.decode(r.get(key) or b"{}")
        n = sum(prof.get("counts", {}).values())
        if n > best:
            best, sample = n, prof
    sample_view = None
    if sample:
        user = sample["user_id"]
        rec = msgspec.json.decode(r.get(keys.recs(user)) or b'{"items": []}')
        cats = Counter(category.get(i["item_id"], "?") for i in rec["items"][:10])
        sample_view = {
            "user_id": user,
            "hidden_preferences": sim.preferences.get(user),
            "events": best,
            "segment": sample.get("segment"),
            "top_categories": sample.get("top_categories"),
            "recommended": [{"item_id": i["item_id"], "category": category.get(i["item_id"], "?"),
                             "score": round(i["score"], 3)} for i in rec["items"][:10]],
            "recommended_categories": dict(cats.most_common()),
            "redis_key": keys.recs(user),
        }
    model = {k.decode(): v.decode() for k, v in r.hgetall(keys.model).items()}
    model["updated_at_iso"] = _iso(model.get("updated_at"))
    return {
        "seconds": round(elapsed, 1),
        "events_produced": produced,
        "users_with_recommendations": users_with_recs,
        "time_to_first_recommendation_s": None if first_rec_s is None else round(first_rec_s, 2),
        "model": model,
        "sample_user": sample_view,
        "redis_keys": {"recommendations": keys.recs("{user_id}"), "profile": keys.profile("{user_id}"),
                       "model": keys.model},
        "metrics_url": f"http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port else None,
    }


def _iso(epoch: float | str | None) -> str | None:
    if epoch in (None, ""):
        return None
    return format_rfc3339(float(epoch))


def _print_summary(console: Console, s: dict) -> None:
    console.rule("recostream up: summary")
    model = s.get("model") or {}
    rows = [
        ("ran", f"{s['seconds']} s, {s['events_produced']} events produced"),
        ("recommendations", f"{s['users_with_recommendations']} customers, the first after "
                            f"{s['time_to_first_recommendation_s']} s"),
        ("model", f"{model.get('version', '?')} interactions learned, {model.get('users', '?')} customers, "
                  f"{model.get('items', '?')} items, last update {model.get('updated_at_iso', '?')}"),
        ("Redis keys", ", ".join(f"{k}: {v}" for k, v in s["redis_keys"].items())),
    ]
    u = s.get("sample_user")
    if u:
        rows += [
            ("sample customer", f"{u['user_id']}: {u['events']} events, hidden tastes {u['hidden_preferences']}, "
                                f"segment {u['segment']} (one of the behaviour clusters a customer is assigned to "
                                "from RFM and category features)"),
            ("  top 5", ", ".join(f"{r['item_id']} ({r['category']}, {r['score']})" for r in u["recommended"][:5])),
            ("  top 10 by category", ", ".join(f"{k} {v}" for k, v in u["recommended_categories"].items())),
        ]
    if s.get("env_file"):
        rows.append(("next time", f"while `up` runs, `. {s['env_file']}` points produce, forget, a second worker "
                                  "or redis-cli -u \"$RECOSTREAM_REDIS_URL\" at the stack"))
    loop = s.get("closed_loop")
    if loop:
        rows.append(("closed loop", f"{loop.get('sessions', 0)} sessions, {loop.get('impressions', 0)} impressions, "
                                    f"{loop.get('shown_clicks', 0)} clicks and {loop.get('shown_purchases', 0)} "
                                    "purchases of shown items"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        console.print(f"{key:<{width}}  {value}")
    if s.get("experiment"):
        console.rule("experiment (as `recostream experiment report` prints it)")
        console.print(render_report(s["experiment"]), markup=False, highlight=False)
    if s.get("error"):
        console.print(f"[red]{s['error']}[/]")
