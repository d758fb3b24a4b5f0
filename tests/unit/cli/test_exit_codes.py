"""Each branch of the exception root has one exit status."""

from __future__ import annotations

import pytest

from vfstream.cli import exit_codes
from vfstream.cli.exit_codes import exit_status_of
from vfstream.errors import (
    AccessRefused,
    DependencyUnavailable,
    FileRejected,
    InputRejected,
    Interrupted,
    OperatorError,
    VfStreamError,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (FileRejected("bad header"), exit_codes.FAILED),
        (InputRejected("bad row"), exit_codes.FAILED),
        (DependencyUnavailable("Kafka does not answer"), exit_codes.UNAVAILABLE),
        (OperatorError("workers are running"), exit_codes.USAGE),
        (AccessRefused("SASL authentication failed for principal 'vfstream'"), 5),
        (Interrupted(15), 143),
    ],
)
def test_each_branch_maps_to_one_exit_status(error: VfStreamError, status: int) -> None:
    assert exit_status_of(error) == status
