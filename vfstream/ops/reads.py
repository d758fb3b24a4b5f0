"""What operators ask of topics beyond reading them (``vfstream.kafka.reads`` reads them)."""

from __future__ import annotations

from typing import Any

from vfstream.domain.dead_letters import describe, latest
from vfstream.kafka.reads import tail
from vfstream.settings import Settings


async def recent_dead_letters(
    settings: Settings,
    *,
    campaign: str | None = None,
    kind: str | None = None,
    limit: int = 20,
    scan: int = 2_000,
) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters per campaign and kind, from the last ``scan``
    messages of each partition of the dead-letter topic, newest first."""
    messages = await tail(settings, settings.dead_letter_topic, scan)
    described = [
        letter
        for message in messages
        if message.value and (letter := describe(message.value, message.timestamp)) is not None
    ]
    return latest(described, campaign=campaign, kind=kind, limit=limit)
