"""One root for every exception vfstream raises, in three branches a caller can act on.

- ``InputRejected``: the input itself is wrong (a file, a row, a message, a request).
  Retrying cannot help; the input is dead-lettered or refused with a reason.
- ``DependencyUnavailable``: something vfstream needs did not answer (Kafka, the AWS
  endpoint, Slack, the entry or campaign service, the local stack). Retrying later can.
- ``OperatorError``: what was asked cannot be done as asked (a bad option, replay while
  workers run). The operator changes the request.
- ``AccessRefused``: a service turned vfstream's credentials or permissions down (SASL
  authentication failed, a certificate not trusted, an ACL missing). Retrying cannot help;
  the operator fixes the settings or the grants.

The CLI maps each branch to one exit status (``vfstream.cli.exit_codes``, README "Exit
codes"). Domain modules raise these too: they are plain exceptions without I/O.

``describe_error`` tells an outside service's error without its address (status pages, log
lines and dead letters show it).
"""

from __future__ import annotations

import os


class VfStreamError(Exception):
    """The root: ``except VfStreamError`` catches everything vfstream raises on purpose."""


class InputRejected(VfStreamError, ValueError):
    """The input is refused; nothing of it was applied beyond what its reasons say."""


class FileRejected(InputRejected):
    """A whole input file is refused (its key, header, encoding, size or row count)."""


class DependencyUnavailable(VfStreamError, RuntimeError):
    """A service or tool vfstream needs did not answer or is missing."""


class OperatorError(VfStreamError):
    """The command or request cannot be carried out as given."""


class AccessRefused(VfStreamError):
    """A service refused vfstream's identity or a permission; the message names what."""


class Interrupted(VfStreamError):
    """Stopped by a signal; ``signum`` names it (exit status 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


# An error of a call to an outside service, told without the service's address (for a status
# page, a log line or a dead letter).
SHOWN_CHARS = 256


def describe_error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):  # botocore
        error = response["Error"]
        text = f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, OSError) and exc.errno:
        text = f"{type(exc).__name__}: {os.strerror(exc.errno)}"
    else:
        text = type(exc).__name__
    return text[:SHOWN_CHARS]
