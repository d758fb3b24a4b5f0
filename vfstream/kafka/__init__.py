"""Kafka connections: the one place clients are made (``clients``), the security settings
every connection uses (``security``), what the cluster must grant vfstream (``acls``), why
a connection or a request was refused (``access``), and reading topics as a downstream
consumer would (``reads``)."""

from vfstream.kafka.clients import (
    admin,
    connection_kwargs,
    consumer,
    faust_credentials,
    producer,
)
from vfstream.kafka.security import security_kwargs

__all__ = [
    "admin",
    "connection_kwargs",
    "consumer",
    "faust_credentials",
    "producer",
    "security_kwargs",
]
