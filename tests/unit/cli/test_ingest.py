"""``vfstream ingest`` and ``vfstream fanlist`` take any S3 key from the command line."""

from __future__ import annotations

import pytest

from vfstream.cli.ingest import parse_s3_url


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [
        ("s3://b/scrubbed/x.csv", "b", "scrubbed/x.csv"),
        # Characters a URL parser reads as fragment, query or escape stay in the key.
        (
            "s3://vf/scrubbed/registrants.x.Tour#1?x=y.20261020T120000Z.cleaned.prepared.merged.csv",
            "vf",
            "scrubbed/registrants.x.Tour#1?x=y.20261020T120000Z.cleaned.prepared.merged.csv",
        ),
        ("s3://b/a%20b/c d.csv", "b", "a%20b/c d.csv"),
    ],
)
def test_the_key_is_taken_verbatim(url: str, bucket: str, key: str) -> None:
    assert parse_s3_url(url) == (bucket, key)


@pytest.mark.parametrize("url", ["s3://", "s3://bucket", "s3://bucket/", "http://b/k", "b/k"])
def test_a_url_without_bucket_and_key_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="expected s3://"):
        parse_s3_url(url)
