"""The exit statuses of every ``vfstream`` command, in one place (README "Exit codes")."""

from __future__ import annotations

OK = 0
# The input was refused (a file, a row limit) or a service it needs did not answer.
FAILED = 1
# The command line itself was wrong (an unreadable URL, a missing option).
USAGE = 2
# The command ran, and found the pipeline short of what it should be: counts that differ
# (reconcile), items not stored (fanlist), no worker in the group or a stack part down.
INCOMPLETE = 3
# Stopped by a signal: 128 + the signal number (130 Ctrl-C, 143 SIGTERM).
SIGNALLED_BASE = 128
