"""Settings of one test's own pipeline on a shared stack."""

from __future__ import annotations

import uuid
from pathlib import Path

from vfstream.dev.stack import free_port
from vfstream.settings import Settings


def isolated_settings(stack: Settings, data_dir: Path, **overrides: object) -> Settings:
    """Its own app id and topics (so tests never see each other's data), its own web port
    and data folder. The relays to the outside world are off unless a test is about them: no
    entry service runs here, moto's Kinesis loses records when several workers put to one
    stream, and mirroring every test's states to moto costs CPU the others need."""
    return stack.namespaced(uuid.uuid4().hex[:8]).model_copy(
        update={
            "data_dir": data_dir,
            "web_port": free_port(),
            "forward_to_entry_service": False,
            "forward_to_kinesis": False,
            "mirror_to_dynamodb": False,
            **overrides,
        }
    )
