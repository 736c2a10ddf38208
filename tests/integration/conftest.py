"""Fixtures: a real embedded broker (tansu) and a real Redis, started once per session.

Integration tests never mock Kafka or Redis. Each test gets its own topics,
consumer group and Redis key prefix, so tests share the servers but not state.
"""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path
from typing import Callable

import pytest
import redis

from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from streams.tools.embedded import embedded_stack, free_port
from tests.helpers import WorkerHandle

_counter = itertools.count()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with embedded_stack(tmp_path_factory.mktemp("stack")) as st:
        yield st


@pytest.fixture
def settings(stack, tmp_path) -> Settings:
    tag = f"t{os.getpid()}x{next(_counter)}{uuid.uuid4().hex[:4]}"
    s = Settings.from_env(
        {},
        kafka_bootstrap_servers=stack.bootstrap_servers,
        redis_url=stack.redis_url,
        app_id=f"app-{tag}",
        topic_browse=f"{tag}.browse", topic_click=f"{tag}.click", topic_purchase=f"{tag}.purchase",
        topic_items=f"{tag}.items", topic_recommendations=f"{tag}.recommendations",
        topic_dead_letter=f"{tag}.dead-letter", topic_control=f"{tag}.control",
        topic_impressions=f"{tag}.impressions",
        redis_prefix=tag, partitions=2,
        metrics_port=free_port(), data_dir=str(tmp_path / "worker"),
    )
    ensure_topics(s)
    return s


@pytest.fixture
def redis_client(stack) -> redis.Redis:
    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture
def start_worker(tmp_path) -> Callable[[Settings], WorkerHandle]:
    handles: list[WorkerHandle] = []

    def start(s: Settings) -> WorkerHandle:
        h = WorkerHandle(s, tmp_path / f"worker{len(handles)}.log")
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()


def pytest_collection_modifyitems(items):
    # Every test here talks to the real servers: marked so `-m "not integration"` gives the unit run.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
