"""S3 ``ObjectCreated`` notifications delivered through SQS start ingestion inside the worker."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

import orjson

from vfstream.errors import InputRejected
from vfstream.retry import Backoff
from vfstream.settings import Settings
from vfstream.sources.s3.faults import is_transient
from vfstream.sources.s3.inflight import InflightFencer, fence_dead_ingests

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

    @property
    def settled(self) -> bool:
        """Done, or refused for a reason in the file: the notification may go."""
        ...

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
# Messages held at once (received, not yet deleted): one receive's worth.
MAX_HELD = 10
# A file that failed for a transient reason (a service away, a fanlist not yet all stored)
# is tried again in place after this backoff, its message kept invisible meanwhile.
RETRY_BACKOFF = Backoff(2.0, 60.0)
# The queue's visibility timeout when its attributes cannot be read (SQS's default).
DEFAULT_VISIBILITY_SECONDS = 30
# A held message's visibility is renewed this often, as a fraction of the queue's timeout.
EXTEND_FRACTION = 1 / 3


class Outcome(enum.Enum):
    DONE = "done"  # every file settled: delete the message
    LATER = "later"  # a transient fault: keep the message, try again in place
    GIVE_UP = "give-up"  # an unknown error: let the message return (redrive counts it)


@dataclass
class _Held:
    """A received message the listener keeps invisible until it is done with it."""

    message: dict[str, Any]
    due: float
    files_done: int = 0
    tries: int = 0

    @property
    def receipt(self) -> str:
        return str(self.message["ReceiptHandle"])


class NotificationListener:
    """Long-polls the queue; a message is deleted once every file it names is settled.

    Settled means ingested, skipped as a duplicate, or refused for a reason inside the file
    (retrying a bad file cannot help). While the listener holds a message (working on it,
    or waiting to retry it) its visibility is renewed every third of the queue's visibility
    timeout, so no other worker receives it and fences the ingest, however long the file
    takes. A transient fault (a service away, a fanlist with items not yet stored) keeps the
    message and tries the file again in place after a backoff: it never burns one of the
    receives the queue's redrive policy counts. An unknown error (a bug) lets the message
    return; one that always fails so ends in the dead-letter queue (README "Ingestion").
    """

    def __init__(
        self, settings: Settings, ingest: Ingest, sqs: Any, fencer: InflightFencer | None = None
    ) -> None:
        self.settings = settings
        self._ingest = ingest
        self._sqs = sqs
        self._fencer = fencer
        self._queue_url: str | None = None
        self._visibility: int | None = None
        self._held: dict[str, _Held] = {}

    async def _fence(self) -> None:
        try:
            if self._fencer is not None:
                await self._fencer.fence()
            else:
                await fence_dead_ingests(self.settings)
        except Exception:
            log.warning("checking for dead ingests failed; next poll tries again", exc_info=True)

    async def queue_url(self) -> str:
        if self._queue_url is None:
            answer = await self._sqs.get_queue_url(QueueName=self.settings.notification_queue)
            self._queue_url = answer["QueueUrl"]
        return self._queue_url

    async def visibility_timeout(self) -> int:
        """The queue's visibility timeout, read once."""
        if self._visibility is None:
            try:
                answer = await self._sqs.get_queue_attributes(
                    QueueUrl=await self.queue_url(), AttributeNames=["VisibilityTimeout"]
                )
                self._visibility = int(answer["Attributes"]["VisibilityTimeout"])
            except Exception:
                log.warning(
                    "could not read the visibility timeout of %s; taking %ds",
                    self.settings.notification_queue,
                    DEFAULT_VISIBILITY_SECONDS,
                    exc_info=True,
                )
                return DEFAULT_VISIBILITY_SECONDS
        return self._visibility

    @property
    def held(self) -> int:
        """Messages received and not yet let go."""
        return len(self._held)

    async def poll_once(self, wait_seconds: int = 5) -> int:
        """Receive what there is room for, then work on every held message that is due;
        returns how many messages were deleted."""
        url = await self.queue_url()
        now = time.monotonic()
        next_due = min((held.due for held in self._held.values()), default=None)
        wait = wait_seconds if next_due is None else max(0, min(wait_seconds, int(next_due - now)))
        room = MAX_HELD - len(self._held)
        if room > 0:
            answer = await self._sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=min(10, room), WaitTimeSeconds=wait
            )
            for message in answer.get("Messages", []):
                known = self._held.get(message["MessageId"])
                if known is not None:  # received again (a renewal failed): the newest handle
                    known.message = message
                else:
                    self._held[message["MessageId"]] = _Held(message, due=time.monotonic())
        elif next_due is not None and next_due > now:
            await asyncio.sleep(min(wait_seconds, next_due - now))
        deleted = 0
        for message_id, held in list(self._held.items()):
            if held.due > time.monotonic():
                continue
            outcome = await self._work(held)
            if outcome is Outcome.LATER:
                held.tries += 1
                held.due = time.monotonic() + RETRY_BACKOFF.seconds(held.tries)
                continue
            if outcome is Outcome.DONE:
                # Held until SQS took the delete: should it fail, the next poll deletes it
                # again without doing its files again.
                await self._sqs.delete_message(QueueUrl=url, ReceiptHandle=held.receipt)
                deleted += 1
            self._held.pop(message_id, None)
        return deleted

    async def _work(self, held: _Held) -> Outcome:
        message = held.message
        try:
            objects = parse_s3_notification(message.get("Body", ""))
        except NotificationError as exc:
            log.error("dropping SQS message %s: %s", message.get("MessageId"), exc)
            return Outcome.DONE
        for obj in objects[held.files_done :]:  # the files done in an earlier try stay done
            try:
                summary = await self._ingest(obj.bucket, obj.key)
            except Exception as exc:
                if is_transient(exc):
                    log.warning(
                        "ingesting s3://%s/%s failed for a reason outside the file (%s: %s); "
                        "its notification is kept and the file tried again in place",
                        obj.bucket,
                        obj.key,
                        type(exc).__name__,
                        exc,
                    )
                    return Outcome.LATER
                log.exception(
                    "ingesting s3://%s/%s failed; its notification returns to the queue "
                    "(after %d receives it goes to the dead-letter queue)",
                    obj.bucket,
                    obj.key,
                    self.settings.notification_max_receive_count,
                )
                return Outcome.GIVE_UP
            log.info("ingest summary %s", orjson.dumps(summary.as_dict()).decode())
            if not summary.settled:
                log.warning(
                    "s3://%s/%s is not done yet (%s); its notification is kept and the rest "
                    "tried again in place",
                    obj.bucket,
                    obj.key,
                    summary.as_dict().get("status"),
                )
                return Outcome.LATER
            held.files_done += 1
        return Outcome.DONE

    async def extend_visibility(self, seconds: int) -> None:
        """Renew the visibility of every held message (ChangeMessageVisibilityBatch)."""
        held = list(self._held.values())
        if not held:
            return
        url = await self.queue_url()
        for start in range(0, len(held), 10):
            group = held[start : start + 10]
            entries = [
                {"Id": str(index), "ReceiptHandle": h.receipt, "VisibilityTimeout": seconds}
                for index, h in enumerate(group)
            ]
            try:
                answer = await self._sqs.change_message_visibility_batch(
                    QueueUrl=url, Entries=entries
                )
            except Exception as exc:
                log.warning("renewing the visibility of %d message(s) failed: %s", len(group), exc)
                continue
            for failure in answer.get("Failed", []):
                h = group[int(failure["Id"])]
                if h.message["MessageId"] in self._held:
                    log.warning(
                        "renewing the visibility of message %s failed: %s",
                        h.message["MessageId"],
                        failure.get("Message") or failure.get("Code"),
                    )

    async def _keep_invisible(self) -> None:
        while True:
            seconds = await self.visibility_timeout()
            await asyncio.sleep(max(seconds * EXTEND_FRACTION, 0.5))
            if seconds > 0:
                await self.extend_visibility(seconds)

    async def release(self) -> None:
        """Let go of every held message at once (visibility 0): another worker takes it."""
        held, self._held = list(self._held.values()), {}
        if not held:
            return
        with contextlib.suppress(Exception):
            url = await self.queue_url()
            for h in held:
                with contextlib.suppress(Exception):
                    await self._sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=h.receipt, VisibilityTimeout=0
                    )

    async def run(self, stopping: Callable[[], bool]) -> None:
        failures = 0
        keeper = asyncio.create_task(self._keep_invisible())
        try:
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
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.release()), timeout=10)


async def listen_for_files(settings: Settings, stopping: Callable[[], bool]) -> None:
    """Ingest every file the queue announces until ``stopping``: fanlist keys to the fanlist
    ingestor, every other key to the scoring ingestor. Restarts after a failure."""
    from vfstream.aws import aws_client
    from vfstream.domain.fanlist import FANLIST_PREFIX
    from vfstream.sources.s3.fanlist_direct import FanlistIngestor
    from vfstream.sources.s3.ingestor import ScoringFileIngestor

    # One fencer for the listener and its ingests: it reads the in-flight topic incrementally.
    fencer = InflightFencer(settings)
    ingest = route_by_key_prefix(
        {FANLIST_PREFIX: FanlistIngestor(settings).ingest},
        default=ScoringFileIngestor(settings, fencer=fencer).ingest,
    )
    try:
        while not stopping():
            try:
                async with aws_client(settings, "sqs") as sqs:
                    await NotificationListener(settings, ingest, sqs, fencer).run(stopping)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification listener failed; restarting in 5s")
                await asyncio.sleep(5)
    finally:
        await fencer.stop()
