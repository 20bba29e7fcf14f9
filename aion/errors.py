"""The one error model of aion: every failure a user can cause or meet is an :class:`Error`.

``aionctl`` and ``aiond`` catch :class:`Error` in one place each, print :meth:`Error.diagnostics`, and
exit with :attr:`Error.exit_code`. Lower-layer exceptions (grpc, httpx, OS errors, ...) are translated
into these at the boundary with ``raise ... from``, so ``--debug`` can still show the cause.

Exception tree::

    Error
    ├── UsageError              exit 2  a value given on the command line or in the environment is wrong
    ├── InputError              exit 3  a file or directory cannot be read or is not what it must be
    │   ├── ConfigError         exit 3  a config file cannot be loaded at all
    │   └── RegistryError       exit 3  a registry or image layout cannot be read or written
    ├── FindingsError           exit 1  the command ran and found problems (invalid config, failed check)
    │   └── VerificationError   exit 1  a signature, digest or trust-policy check failed
    ├── AuthError               exit 4  authentication or authorisation refused
    │   └── RegistryAuthError   exit 4  a registry refused the credentials (or there were none)
    ├── DaemonUnavailable       exit 5  the daemon cannot be reached or did not answer in time
    ├── ConflictError           exit 6  a precondition does not hold (nothing to roll back to, ...)
    └── ServiceError            exit 1  the daemon answered with an error that is none of the above
"""

from __future__ import annotations

from aion.exitcodes import ExitCode


class Error(Exception):
    """Base of every aion error. ``message`` says what went wrong; ``hint`` says what to do."""

    exit_code: ExitCode = ExitCode.FINDINGS

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """The text shown to a user: the message, then the hint on its own line when there is one."""
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class UsageError(Error):
    exit_code = ExitCode.USAGE


class InputError(Error):
    exit_code = ExitCode.INPUT


class ConfigError(InputError):
    pass


class RegistryError(InputError):
    pass


class FindingsError(Error):
    exit_code = ExitCode.FINDINGS


class VerificationError(FindingsError):
    pass


class AuthError(Error):
    exit_code = ExitCode.AUTH


class RegistryAuthError(AuthError):
    pass


class DaemonUnavailable(Error):
    exit_code = ExitCode.UNAVAILABLE


class ConflictError(Error):
    exit_code = ExitCode.CONFLICT


class ServiceError(Error):
    exit_code = ExitCode.FINDINGS


__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "DaemonUnavailable",
    "Error",
    "FindingsError",
    "InputError",
    "RegistryAuthError",
    "RegistryError",
    "ServiceError",
    "UsageError",
    "VerificationError",
]
