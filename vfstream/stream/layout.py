"""What Faust decides that the rest of vfstream needs to know, answered here so that no
module outside ``vfstream.stream`` knows Faust's conventions (issue #22):

- what a table's changelog is called (``changelog_topic``): the relays read the
  changelogs, the operator's commands read and delete them;
- where a table's local files are (``local_table_stores``): ``replay --rebuild`` wipes them;
- which worker a group member is (``member_url``): ``vfstream status`` names the workers;
- which worker owns a table's partition (``owner_url``, ``worker_urls``, ``own_url``): the
  web views proxy a key to its owner and gather the console from every worker.

The names of the worker's tables are here too (``Table``); the app declares its tables with
them, so a name is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from vfstream.settings import Settings


class Table(StrEnum):
    """The worker's tables, by the names Faust keeps them under."""

    FAN_STATE = "fan-state"
    CAMPAIGN_COUNTS = "campaign-counts"
    COUNT_WINDOWS = "campaign-count-windows"
    REPORT_BOOKS = "slack-reports"


def changelog_topic(settings: Settings, table: str) -> str:
    """The changelog Faust keeps for one of the worker's tables."""
    return f"{settings.app_id}-{table}-changelog"


def local_table_stores(settings: Settings, tables: Iterable[str]) -> list[Path]:
    """This machine's stores of ``tables``: Faust keeps one RocksDB a table partition,
    ``<data_dir>/v<app version, 1>/tables/<table>-<partition>.db``."""
    root = settings.data_dir / "v1" / "tables"
    if not root.exists():
        return []
    prefixes = tuple(f"{table}-" for table in tables)
    return [path for path in sorted(root.iterdir()) if path.name.startswith(prefixes)]


def member_url(metadata: bytes) -> str | None:
    """The web URL a worker announces in its consumer-group metadata (Faust's assignor puts
    it in the user data); None for a member that is not a Faust worker."""
    try:
        user_data = ConsumerProtocolMemberMetadata.decode(metadata).user_data
        url: str | None = orjson.loads(user_data).get("url")
    except Exception:  # another client in the group: no URL
        return None
    return url


def own_url(app: Any) -> str:
    """This worker's web URL, as the other workers know it."""
    return str(app.conf.canonical_url).rstrip("/")


def worker_urls(app: Any) -> set[str]:
    """The web URL of every worker of the group, this one included, as the latest
    assignment knows them."""
    return {str(host).rstrip("/") for host in app.router.tables_metadata()}


def owner_url(app: Any, table: Any, partition: int) -> str | None:
    """The web URL of the worker the assignment gave ``partition`` of ``table``; None when
    no worker has it (starting, rebalancing). Raises while there is no assignment yet."""
    topic = table.changelog_topic.get_topic_name()
    for host, topics in app.router.table_metadata(table.name).items():
        if partition in topics.get(topic, ()):
            return str(host).rstrip("/")
    return None
