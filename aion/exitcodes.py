"""Process exit codes shared by every aion command; scripts branch on these, so they never change."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What an ``aionctl`` (or ``aiond`` sub-command) exit status means."""

    OK = 0
    """Success."""
    FINDINGS = 1
    """The command ran and found a problem: invalid config, failed verification, failed check."""
    USAGE = 2
    """The command line was wrong: unknown option, missing argument, bad value."""
    INPUT = 3
    """Input or I/O error: a missing or unreadable file, a bad directory, an unreachable registry."""
    AUTH = 4
    """Authentication or permission: missing token, role too weak, certificate refused."""
    UNAVAILABLE = 5
    """The daemon could not be reached or did not answer in time."""
    CONFLICT = 6
    """A precondition or conflict: for example a rollback with no earlier version."""


EXIT_CODE_HELP = {
    ExitCode.OK: "ok",
    ExitCode.FINDINGS: "findings (invalid config, verification failed, check failed)",
    ExitCode.USAGE: "usage error",
    ExitCode.INPUT: "input/IO error (missing file, unreadable schema, registry unreachable)",
    ExitCode.AUTH: "authentication or permission refused",
    ExitCode.UNAVAILABLE: "daemon unreachable or timed out",
    ExitCode.CONFLICT: "conflict or failed precondition",
}
"""One line per code, for ``--help`` and README."""

__all__ = ["EXIT_CODE_HELP", "ExitCode"]
