"""Tripwires for every private Faust, mode and aiokafka attribute ``vfstream.stream`` uses
(the list is in that package's docstring). Each fails with the reach's name when an
upgrade removes or reshapes it, instead of the pipeline silently losing exactness."""

from __future__ import annotations

import inspect

import pytest
import rocksdict
from aiokafka import AIOKafkaConsumer
from faust.stores.rocksdb import Store
from faust.tables.base import Collection
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.utils.queues import FlowControlEvent

import vfstream.stream as stream_package
from vfstream.stream.app import StreamApp
from vfstream.stream.transport import CommittedReadConsumer, CommittedReadConsumerThread


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_1_the_worker_consumer_factory_and_aiokafkas_isolation_level() -> None:
    assert parameters(AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
    start = inspect.getsource(AIOKafkaConsumer.start)
    assert "isolation_level=self._isolation_level" in start, (
        "aiokafka no longer hands _isolation_level to its fetcher at start"
    )


async def test_1_a_consumer_built_by_aiokafka_has_the_attribute_set_before_start() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    assert consumer._isolation_level == "read_uncommitted"


def test_2_the_private_fetch_has_the_signature_the_gap_recorder_wraps() -> None:
    assert parameters(AIOKafkaConsumerThread._fetch_records) == [
        "self",
        "consumer",
        "active_partitions",
        "timeout",
        "max_records",
    ]
    assert CommittedReadConsumerThread._fetch_records is not AIOKafkaConsumerThread._fetch_records


def test_3_the_thread_hands_out_its_consumer_and_knows_changelog_partitions() -> None:
    assert parameters(AIOKafkaConsumerThread._ensure_consumer) == ["self"]
    assert parameters(Consumer._is_changelog_tp) == ["self", "tp"]


def test_4_the_delegating_consumer_builds_and_keeps_its_thread() -> None:
    source = inspect.getsource(ThreadDelegateConsumer)
    assert "self._thread = self._new_consumer_thread()" in source
    assert "return await self._thread.seek_to_committed()" in source
    assert issubclass(CommittedReadConsumer, ThreadDelegateConsumer)


def test_5_a_table_makes_its_changelog_topic_from_its_serializers() -> None:
    assert parameters(Collection._new_changelog_topic) == [
        "self",
        "retention",
        "compacting",
        "deleting",
    ]
    assert "key_serializer" in inspect.getsource(Collection._new_changelog_topic)


def test_6_the_rocksdb_store_opens_one_database_a_partition() -> None:
    assert parameters(Store._db_for_partition) == ["self", "partition"]


def test_7_the_app_takes_its_flow_control_from_a_cached_property() -> None:
    flow = StreamApp.__dict__["flow_control"]
    assert flow is not None
    assert {"resume", "suspend", "is_active"} <= set(dir(FlowControlEvent))


def test_9_the_rocksdb_store_yields_the_databases_of_its_active_partitions() -> None:
    # The window route reads one campaign's keys from these databases by key prefix.
    assert parameters(Store._dbs_for_actives) == ["self"]
    assert "self.use_rocksdict" in inspect.getsource(Store._visible_items)
    assert "from_key" in (rocksdict.Rdict.items.__doc__ or "")


@pytest.mark.parametrize(
    "name",
    [
        "_create_worker_consumer",
        "_isolation_level",
        "_fetch_records",
        "_ensure_consumer",
        "_is_changelog_tp",
        "_new_consumer_thread",
        "_thread",
        "_new_changelog_topic",
        "_db_for_partition",
        "flow_control",
        "_new_offset",
        "_dbs_for_actives",
    ],
)
def test_every_reach_is_named_in_the_stream_packages_list(name: str) -> None:
    assert name in (stream_package.__doc__ or "")
