"""Kafka client configuration for the clients that are not librdkafka's, derived from the one source.

Every Kafka client of the worker is a confluent-kafka (librdkafka) client
configured by :meth:`streams.settings.Settings.kafka_client_config`. A tool
that measures another client (the bench's aiokafka reference) takes its
security arguments from here, translated from that same config, so a new
security setting is added in one place.
"""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import Settings


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security arguments, translated from :meth:`Settings.kafka_client_config`.

    >>> aiokafka_security(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
    ...                            kafka_sasl_password="p"))
    {'security_protocol': 'SASL_PLAINTEXT', 'sasl_mechanism': 'PLAIN', 'sasl_plain_username': 'u', 'sasl_plain_password': 'p'}
    """
    conf = settings.kafka_client_config()
    proto = conf["security.protocol"]
    out: dict[str, Any] = {"security_protocol": proto}
    if proto.endswith("SSL"):
        out["ssl_context"] = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
    if proto.startswith("SASL"):
        out.update(sasl_mechanism=conf["sasl.mechanism"], sasl_plain_username=conf["sasl.username"],
                   sasl_plain_password=conf["sasl.password"])
    return out
