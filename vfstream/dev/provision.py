"""Creates the AWS resources the pipeline expects, idempotently (moto locally)."""

from __future__ import annotations

import contextlib
import json

from botocore.exceptions import ClientError

from vfstream.aws import aws_client
from vfstream.settings import Settings


async def provision_aws(settings: Settings) -> None:
    async with aws_client(settings, "sqs") as sqs:
        queue_url = (await sqs.create_queue(QueueName=settings.notification_queue))["QueueUrl"]
        attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        queue_arn = attrs["Attributes"]["QueueArn"]
    async with aws_client(settings, "s3") as s3:
        with contextlib.suppress(ClientError):
            await s3.create_bucket(Bucket=settings.scoring_bucket)
        await s3.put_bucket_notification_configuration(
            Bucket=settings.scoring_bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "Id": "vfstream-scoring-files",
                        "QueueArn": queue_arn,
                        "Events": ["s3:ObjectCreated:*"],
                    }
                ]
            },
        )
    async with aws_client(settings, "dynamodb") as dynamo:
        try:
            await dynamo.create_table(
                TableName=settings.demand_table,
                KeySchema=[
                    {"AttributeName": "PK", "KeyType": "HASH"},
                    {"AttributeName": "SK", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "PK", "AttributeType": "S"},
                    {"AttributeName": "SK", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
    async with aws_client(settings, "kinesis") as kinesis:
        for stream in (
            settings.scores_stream,
            settings.campaign_data_stream,
            settings.bridge_stream,
        ):
            try:
                await kinesis.create_stream(StreamName=stream, ShardCount=2)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceInUseException":
                    raise


def describe(settings: Settings) -> str:
    return json.dumps(
        {
            "bucket": settings.scoring_bucket,
            "queue": settings.notification_queue,
            "table": settings.demand_table,
            "streams": [
                settings.scores_stream,
                settings.campaign_data_stream,
                settings.bridge_stream,
            ],
        }
    )
