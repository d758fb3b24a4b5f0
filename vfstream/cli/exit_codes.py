"""The exit statuses of every ``vfstream`` command, in one place (README "Exit codes").

Each branch of the exception root (``vfstream.errors``) has one status, so a script can
tell a bad input (fix it) from an unavailable service (retry later) from a wrong request.
"""

from __future__ import annotations

from vfstream.errors import (
    AccessRefused,
    DependencyUnavailable,
    InputRejected,
    Interrupted,
    OperatorError,
    VfStreamError,
)

OK = 0
# The input was refused: a file (key, header, size, rows), a row limit, a message.
FAILED = 1
# The request was wrong: an unreadable option or URL, replay while workers run.
USAGE = 2
# The command ran and found the pipeline short of what it should be: counts that differ
# (reconcile), items not stored (fanlist), no worker in the group (status).
INCOMPLETE = 3
# A service it needs did not answer: Kafka, the AWS endpoint, the local stack. Retry later.
UNAVAILABLE = 4
# Refused: the cluster turned vfstream's credentials or permissions down (SASL, TLS trust,
# an ACL). Retrying will not help; fix the settings or the grants.
DENIED = 5
# Stopped by a signal: 128 + the signal number (130 Ctrl-C, 143 SIGTERM).
SIGNALLED_BASE = 128


def exit_status_of(error: VfStreamError) -> int:
    if isinstance(error, Interrupted):
        return SIGNALLED_BASE + error.signum
    if isinstance(error, InputRejected):
        return FAILED
    if isinstance(error, OperatorError):
        return USAGE
    if isinstance(error, DependencyUnavailable):
        return UNAVAILABLE
    if isinstance(error, AccessRefused):
        return DENIED
    return FAILED
