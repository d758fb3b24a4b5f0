"""Web routing finds a key's owner by hashing it with the table's changelog serializer; that
must give the same bytes the ingestor hashes to pick the key's source partition."""

from vfstream.app import build_app
from vfstream.settings import Settings


def test_fan_and_campaign_tables_hash_raw_key_bytes() -> None:
    stream = build_app(Settings(listen_for_notifications=False))
    for table, key in ((stream.fan_states, "c1:u1"), (stream.campaign_counts, "c1")):
        serialized, _ = table.changelog_topic.prepare_key(key, None)
        assert serialized == key.encode()


def test_table_partitions_match_their_source_topics() -> None:
    settings = Settings(topic_partitions=4, listen_for_notifications=False)
    stream = build_app(settings)
    assert stream.fan_states.partitions == stream.score_topic.partitions == 4
    assert stream.campaign_counts.partitions == stream.partials_topic.partitions == 4
