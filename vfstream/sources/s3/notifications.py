"""S3 ``ObjectCreated`` notifications delivered through SQS start ingestion inside the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

import orjson

from vfstream.errors import InputRejected
from vfstream.retry import Backoff
from vfstream.settings import Settings

log = logging.getLogger(__name__)

# An SQS endpoint that fails keeps being polled, at most every 30 s.
POLL_BACKOFF = Backoff(1.0, 30.0)


class NotificationError(InputRejected):
    """An SQS message that is not an S3 event notification."""


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str


def parse_s3_notification(body: str | bytes) -> list[ObjectCreated]:
    """The objects an S3 event notification announces; the initial ``s3:TestEvent`` is none.

    Keys arrive URL-encoded (spaces as ``+``), as on AWS.
    """
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise NotificationError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise NotificationError("not a JSON object")
    if message.get("Event") == "s3:TestEvent":
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise NotificationError("no Records list in the notification")
    created: list[ObjectCreated] = []
    for record in records:
        try:
            if not str(record.get("eventName", "")).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            bucket, key = s3["bucket"]["name"], s3["object"]["key"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise NotificationError(f"malformed S3 record: {exc!r}") from exc
        # A null or empty name would fail in ingestion on every redelivery, never settling.
        if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
            raise NotificationError(
                f"malformed S3 record: bucket {bucket!r} and key {key!r} must be non-empty strings"
            )
        created.append(ObjectCreated(bucket=bucket, key=unquote_plus(key)))
    return created


class FileSummary(Protocol):
    """What an ingestion of one file reports: scoring and fanlist summaries alike."""

    def as_dict(self) -> dict[str, Any]: ...


Ingest = Callable[[str, str], Awaitable[FileSummary]]


def route_by_key_prefix(routes: Mapping[str, Ingest], default: Ingest) -> Ingest:
    """One ingest callable for the listener: the first route whose prefix starts the key
    handles the file, any other key goes to ``default``. One bucket, one queue, many kinds."""

    async def ingest(bucket: str, key: str) -> FileSummary:
        for prefix, route in routes.items():
            if key.startswith(prefix):
                return await route(bucket, key)
        return await default(bucket, key)

    return ingest


# Between polls the listener also fences the transactions of dead ingests (an ingest killed
# mid-file stalls every worker until then), so polls are kept short.
POLL_WAIT_SECONDS = 3


class NotificationListener:
    """Long-polls the queue; a message is deleted once every file it names is settled.

    Settled means ingested, skipped as a duplicate, or rejected as a bad file (retrying a
    bad file cannot help). Anything else (broker down, S3 error) leaves the message for
    redelivery after the visibility timeout.
    """

    def __init__(self, settings: Settings, ingest: Ingest, sqs: Any) -> None:
        self.settings = settings
        self._ingest = ingest
        self._sqs = sqs
        self._queue_url: str | None = None
        self.summaries: list[FileSummary] = []

    async def _fence(self) -> None:
        from vfstream.sources.s3.inflight import fence_dead_ingests

        try:
            await fence_dead_ingests(self.settings)
        except Exception:
            log.warning("checking for dead ingests failed; next poll tries again", exc_info=True)

    async def queue_url(self) -> str:
        if self._queue_url is None:
            answer = await self._sqs.get_queue_url(QueueName=self.settings.notification_queue)
            self._queue_url = answer["QueueUrl"]
        return self._queue_url

    async def poll_once(self, wait_seconds: int = 5) -> int:
        url = await self.queue_url()
        answer = await self._sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        )
        handled = 0
        for message in answer.get("Messages", []):
            if await self._handle(message):
                await self._sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1
        return handled

    async def _handle(self, message: dict[str, Any]) -> bool:
        try:
            objects = parse_s3_notification(message.get("Body", ""))
        except NotificationError as exc:
            log.error("dropping SQS message %s: %s", message.get("MessageId"), exc)
            return True
        for obj in objects:
            try:
                summary = await self._ingest(obj.bucket, obj.key)
            except Exception:
                log.exception("ingesting s3://%s/%s failed; will retry", obj.bucket, obj.key)
                return False
            self.summaries.append(summary)
            log.info("ingest summary %s", orjson.dumps(summary.as_dict()).decode())
        return True

    async def run(self, stopping: Callable[[], bool]) -> None:
        failures = 0
        while not stopping():
            try:
                await self._fence()
                await self.poll_once(wait_seconds=POLL_WAIT_SECONDS)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                seconds = POLL_BACKOFF.seconds(failures)
                log.exception(
                    "polling %s failed; retrying in %.1fs",
                    self.settings.notification_queue,
                    seconds,
                )
                await asyncio.sleep(seconds)


async def listen_for_files(settings: Settings, stopping: Callable[[], bool]) -> None:
    """Ingest every file the queue announces until ``stopping``: fanlist keys to the fanlist
    ingestor, every other key to the scoring ingestor. Restarts after a failure."""
    from vfstream.aws import aws_client
    from vfstream.domain.fanlist import FANLIST_PREFIX
    from vfstream.sources.s3.fanlist_direct import FanlistIngestor
    from vfstream.sources.s3.ingestor import ScoringFileIngestor

    ingest = route_by_key_prefix(
        {FANLIST_PREFIX: FanlistIngestor(settings).ingest},
        default=ScoringFileIngestor(settings).ingest,
    )
    while not stopping():
        try:
            async with aws_client(settings, "sqs") as sqs:
                await NotificationListener(settings, ingest, sqs).run(stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notification listener failed; restarting in 5s")
            await asyncio.sleep(5)


def run_listener(settings: Settings) -> int:
    """``vfstream listen``: the notification listener alone (one Deployment replica on
    Kubernetes, beside workers that do not listen). Stops on SIGINT or SIGTERM."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        listening = asyncio.create_task(listen_for_files(settings, stop.is_set))
        await stop.wait()
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening

    asyncio.run(main())
    return 0
