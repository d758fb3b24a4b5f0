"""Putting test files into the local S3."""

from __future__ import annotations

from botocore.exceptions import ClientError

from vfstream.aws import aws_client
from vfstream.settings import Settings


async def put_object(settings: Settings, key: str, body: bytes) -> None:
    async with aws_client(settings, "s3") as s3:
        await s3.put_object(Bucket=settings.scoring_bucket, Key=key, Body=body)


def client_error(code: str, status: int = 400, operation: str = "GetRecords") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )
