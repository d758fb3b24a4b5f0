"""What Faust decides, as ``stream.layout`` answers it for ops, sinks and web. Each answer
is checked against Faust itself, so an upgrade that changes a convention fails here rather
than in an operator's command."""

from __future__ import annotations

from pathlib import Path

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from vfstream.domain.mirror import MirroredTable
from vfstream.settings import Settings
from vfstream.stream.assembly import build_app
from vfstream.stream.layout import Table, changelog_topic, local_table_stores, member_url


def test_each_tables_changelog_is_named_as_faust_names_it(tmp_path: Path) -> None:
    settings = Settings(app_id="vf-test", data_dir=tmp_path, listen_for_notifications=False)
    stream = build_app(settings)
    tables = {
        Table.FAN_STATE: stream.fan_states,
        Table.CAMPAIGN_COUNTS: stream.campaign_counts,
        Table.COUNT_WINDOWS: stream.count_windows.table,
        Table.REPORT_BOOKS: stream.report_books,
    }

    assert set(tables) == set(Table)
    for name, table in tables.items():
        assert changelog_topic(settings, name) == table.changelog_topic.get_topic_name()


def test_the_mirrored_tables_are_tables_of_the_worker() -> None:
    assert {table.value for table in MirroredTable} <= {table.value for table in Table}


def test_a_tables_local_stores_are_found_where_faust_keeps_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, listen_for_notifications=False)
    tabledir = Path(build_app(settings).app.conf.tabledir)
    tabledir.mkdir(parents=True)
    for name in ("fan-state-0.db", "fan-state-5.db", "slack-reports-0.db", "campaign-counts-1.db"):
        (tabledir / name).mkdir()

    found = local_table_stores(settings, [Table.FAN_STATE, Table.CAMPAIGN_COUNTS])

    assert [path.name for path in found] == [
        "campaign-counts-1.db",
        "fan-state-0.db",
        "fan-state-5.db",
    ]
    assert all(path.parent == tabledir for path in found)


def test_no_store_is_found_before_any_worker_ran(tmp_path: Path) -> None:
    assert local_table_stores(Settings(data_dir=tmp_path / "never"), list(Table)) == []


def test_a_workers_url_is_read_from_the_metadata_faust_puts_in_the_group() -> None:
    user_data = ClientMetadata(
        assignment=ClientAssignment(actives={}, standbys={}),
        url="http://worker-1:6066",
        changelog_distribution={},
    ).dumps()
    metadata = ConsumerProtocolMemberMetadata(4, ["vf-score-records"], user_data).encode()

    assert member_url(metadata) == "http://worker-1:6066"


def test_a_member_that_is_not_a_faust_worker_has_no_url() -> None:
    plain = ConsumerProtocolMemberMetadata(0, ["t"], b"").encode()

    assert member_url(plain) is None
    assert member_url(b"\x00garbage") is None
