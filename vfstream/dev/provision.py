"""Creates the AWS resources the pipeline expects, idempotently (moto locally)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from botocore.exceptions import ClientError

from vfstream.aws import aws_client
from vfstream.settings import Settings


async def provision_aws(settings: Settings) -> None:
    async with aws_client(settings, "sqs") as sqs:
        queue_arn = await provision_queue(sqs, settings)
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


def dead_letter_queue(queue: str) -> str:
    """The name of a notification queue's dead-letter queue."""
    return f"{queue}-dlq"


async def provision_queue(sqs: Any, settings: Settings) -> str:
    """The notification queue with its dead-letter queue and redrive policy: a message
    received ``notification_max_receive_count`` times (a poison message: the listener
    retries transient faults in place, without receiving the message again) goes to
    ``<queue>-dlq``, kept 14 days. Returns the queue's ARN."""
    dlq_url = (
        await sqs.create_queue(
            QueueName=dead_letter_queue(settings.notification_queue),
            Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)},
        )
    )["QueueUrl"]
    dlq_arn = await _queue_arn(sqs, dlq_url)
    queue_url = (await sqs.create_queue(QueueName=settings.notification_queue))["QueueUrl"]
    redrive = {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": str(settings.notification_max_receive_count),
    }
    await sqs.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"RedrivePolicy": json.dumps(redrive)}
    )
    return await _queue_arn(sqs, queue_url)


async def _queue_arn(sqs: Any, url: str) -> str:
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def describe(settings: Settings) -> str:
    return json.dumps(
        {
            "bucket": settings.scoring_bucket,
            "queue": settings.notification_queue,
            "deadLetterQueue": dead_letter_queue(settings.notification_queue),
            "table": settings.demand_table,
            "streams": [
                settings.scores_stream,
                settings.campaign_data_stream,
                settings.bridge_stream,
            ],
        }
    )
