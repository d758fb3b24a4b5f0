"""Reading a fanlist file's rows (no S3) and routing notifications by key prefix."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from vfstream.domain.fanlist import FANLIST_PREFIX, FanlistKey, FanlistRow
from vfstream.errors import FileRejected
from vfstream.sources.s3.fanlist_direct import FanlistFile, parse_fanlist_rows
from vfstream.sources.s3.notifications import route_by_key_prefix
from vfstream.sources.s3.s3body import open_text

SOURCE = FanlistFile(
    bucket="vf-scoring",
    key="fanlist/scored/c1/1792497600000.csv",
    etag="abc",
    fanlist_key=FanlistKey(
        campaign_id="c1", timestamp="1792497600000", scored_at=datetime(2026, 10, 20, tzinfo=UTC)
    ),
)


def parse(data: bytes) -> Any:
    return parse_fanlist_rows(open_text(io.BytesIO(data), gzipped=False), SOURCE)


def test_rows_are_validated_with_their_line_and_raw_text() -> None:
    data = (
        b"\xef\xbb\xbfmemberId,email,globalUserId,score,extra\r\n"
        b"m1,,g1,0.5,x\r\n"
        b',"Ana@Example.com",,0.7,\r\n'
        b"\r\n"
        b",,,0.9,\r\n"
        b"m2,,,\xff,\r\n"
        b"m3,,,0.1,x,y\r\n"
    )
    parsed = parse(data)
    assert parsed.rows_in == 5
    assert parsed.valid == [
        FanlistRow(memberId="m1", globalUserId="g1", score=0.5),
        FanlistRow(email="ana@example.com", score=0.7),
    ]
    by_line = {rejection.line: rejection for rejection in parsed.rejections}
    assert set(by_line) == {5, 6, 7}
    assert by_line[5].raw == ",,,0.9,"
    assert by_line[5].reasons == [
        "memberId, email: both are missing or empty; one must identify the fan"
    ]
    assert by_line[6].raw == "m2,,,\\xff,"
    assert "row: bytes are not valid UTF-8" in by_line[6].reasons
    assert by_line[7].reasons == ["row: 6 fields but the header has 5"]
    assert {(r.kind, r.campaignId, r.bucket, r.key, r.etag) for r in parsed.rejections} == {
        ("fanlist-row", "c1", SOURCE.bucket, SOURCE.key, "abc")
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"memberId,email\nm1,a@b\n", "lacks required columns: score"),
        (b"globalUserId,score\ng1,0.5\n", "lacks required columns: memberId or email"),
        (b'"memberId,score\nm1,0.5\n', "header row is not valid CSV"),
    ],
)
def test_a_file_without_a_usable_header_fails_whole(data: bytes, message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        parse(data)


def test_the_correlation_names_one_version_of_one_object() -> None:
    again = FanlistFile(SOURCE.bucket, SOURCE.key, SOURCE.etag, SOURCE.fanlist_key)
    changed = FanlistFile(SOURCE.bucket, SOURCE.key, "def", SOURCE.fanlist_key)
    assert SOURCE.correlation == again.correlation != changed.correlation


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, bucket: str, key: str) -> Any:
        self.calls.append((bucket, key))
        return self.name


async def test_fanlist_keys_go_to_the_fanlist_route_and_every_other_key_to_the_default() -> None:
    fanlists, scoring = Recorder("fanlist"), Recorder("scoring")
    ingest = route_by_key_prefix({FANLIST_PREFIX: fanlists}, default=scoring)
    assert await ingest("b", "fanlist/scored/c1/1.csv") == "fanlist"
    assert await ingest("b", "fanlist/typo.csv") == "fanlist"
    assert await ingest("b", "scrubbed/registrants.c1.x.20261020T120000Z.csv") == "scoring"
    assert await ingest("b", "fanlists/scored/c1/1.csv") == "scoring"
    assert fanlists.calls == [("b", "fanlist/scored/c1/1.csv"), ("b", "fanlist/typo.csv")]
    assert len(scoring.calls) == 2
