from vfstream.sources.s3.fanlist_direct import FanlistSummary
from vfstream.sources.s3.ingestor import IngestSummary

FILE_FIELDS = {"bucket", "key", "etag", "campaignId", "status", "error", "seconds"}


def test_both_ingestors_report_the_file_the_same_way_and_add_their_counts() -> None:
    scoring = IngestSummary(bucket="b", key="k", seconds=1.23456, rows_in=3, valid=2, invalid=1)
    fanlist = FanlistSummary(bucket="b", key="f", correlation="c-1")

    assert set(scoring.as_dict()) >= FILE_FIELDS and set(fanlist.as_dict()) >= FILE_FIELDS
    assert scoring.as_dict()["seconds"] == 1.235
    assert (scoring.as_dict()["in"], scoring.as_dict()["valid"]) == (3, 2)
    assert fanlist.as_dict()["correlation"] == "c-1" and "input" in fanlist.as_dict()
    assert scoring.runId != IngestSummary(bucket="b", key="k").runId
