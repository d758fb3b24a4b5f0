"""The statuses of ``vfstream replay`` and ``reconcile``, decided on the command line from
what ``vfstream.ops`` returns or raises (the broker's side is in the integration tests)."""

from __future__ import annotations

from typing import Any

import pytest

from vfstream.cli import exit_codes, repairs
from vfstream.ops.replay import ReplayError
from vfstream.settings import Settings


def answering(result: dict[str, Any]) -> Any:
    async def reconcile(settings: Settings, campaign: str | None, fix: bool) -> dict[str, Any]:
        return result

    return reconcile


@pytest.mark.parametrize(
    ("differences", "fix", "status"),
    [(0, False, exit_codes.OK), (2, False, exit_codes.INCOMPLETE), (2, True, exit_codes.OK)],
)
def test_reconcile_is_incomplete_only_for_differences_left_unfixed(
    monkeypatch: pytest.MonkeyPatch, differences: int, fix: bool, status: int
) -> None:
    monkeypatch.setattr(repairs, "reconcile", answering({"differences": differences}))

    assert repairs.run_reconcile(Settings(), fix=fix) == status


def test_a_replay_refused_is_a_wrong_request_named_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def replay(settings: Settings, to: str, topic: str | None) -> dict[str, Any]:
        raise ReplayError("consumer group 'vfstream' is active (state Stable)")

    monkeypatch.setattr(repairs, "replay", replay)

    assert repairs.run_replay(Settings(), "earliest") == exit_codes.USAGE
    assert capsys.readouterr().err == (
        "vfstream replay: consumer group 'vfstream' is active (state Stable)\n"
    )
