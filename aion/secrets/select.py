"""Choosing the secret backend from settings: aiond's (``aiond.settings.Settings``) or aionctl's
(``aionctl secrets check``), which spell the same options the same way.

:func:`backend_for` takes anything with the attributes of :class:`BackendSettings`, so the core never
imports either program. Building a backend reads no secret and contacts no server: it checks the
settings (UsageError naming the flag) and that the sops program exists; the first :meth:`get` does
the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from aion.errors import UsageError
from aion.secrets.base import SecretsBackend

BACKENDS = ("files", "sops", "vault")
_SEGMENTS = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def check_location(value: str, what: str) -> str:
    """A mount or path: segments of letters, digits, ``_``, ``.`` and ``-`` joined by ``/``, none of
    them ``.`` or ``..``."""
    text = value.strip().strip("/")
    if _SEGMENTS.fullmatch(text) is None or any(part in (".", "..") for part in text.split("/")):
        raise UsageError(
            f"{what}: {value!r} is not a Vault path",
            hint="segments of letters, digits, '_', '.' and '-' joined by '/' (for example aion/prod)",
        )
    return text


def check_addr(value: str, what: str) -> str:
    """A Vault address: ``http://`` or ``https://`` and a host, with a port or not, nothing after."""
    text = value.strip().rstrip("/")
    if re.fullmatch(r"https?://[^\s/?#@]+", text) is None:
        raise UsageError(
            f"{what}: {value!r} is not a Vault address",
            hint="http(s)://HOST:PORT, for example https://vault:8200",
        )
    return text


class BackendSettings(Protocol):
    """The settings a backend is chosen and built from (aiond's flag for each is in brackets)."""

    @property
    def secrets_backend(self) -> str:
        """files, sops or vault [--secrets-backend]."""
        ...

    @property
    def secrets_dir(self) -> Path:
        """The files backend's directory [--secrets-dir]."""
        ...

    @property
    def sops_file(self) -> Path | None: ...  # [--sops-file]

    @property
    def sops_age_key_file(self) -> Path | None: ...  # [--sops-age-key-file]

    @property
    def vault_addr(self) -> str | None: ...  # [--vault-addr]

    @property
    def vault_mount(self) -> str: ...  # [--vault-mount]

    @property
    def vault_path(self) -> str: ...  # [--vault-path]

    @property
    def vault_token_file(self) -> Path | None: ...  # [--vault-token-file]

    @property
    def vault_role_id_file(self) -> Path | None: ...  # [--vault-role-id-file]

    @property
    def vault_secret_id_file(self) -> Path | None: ...  # [--vault-secret-id-file]

    @property
    def vault_ca_cert(self) -> Path | None: ...  # [--vault-ca-cert]

    @property
    def vault_cache_ttl(self) -> float: ...  # [--vault-cache-ttl]


def check_settings(settings: BackendSettings) -> None:
    """UsageError when the options do not make one backend: the backend's required options missing,
    or another backend's options given (which would be silently ignored)."""
    backend = settings.secrets_backend
    if backend not in BACKENDS:
        raise UsageError(f"--secrets-backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    sops = {"--sops-file": settings.sops_file, "--sops-age-key-file": settings.sops_age_key_file}
    vault = {
        "--vault-addr": settings.vault_addr,
        "--vault-token-file": settings.vault_token_file,
        "--vault-role-id-file": settings.vault_role_id_file,
        "--vault-secret-id-file": settings.vault_secret_id_file,
        "--vault-ca-cert": settings.vault_ca_cert,
    }
    for other, flags in (("sops", sops), ("vault", vault)):
        given = [flag for flag, value in flags.items() if value is not None]
        if other != backend and given:
            raise UsageError(
                f"{given[0]} is for --secrets-backend {other}, and the backend is {backend}",
                hint=f"pass --secrets-backend {other}, or leave out {', '.join(given)}",
            )
    if backend == "sops":
        absent = [flag for flag, value in sops.items() if value is None]
        if absent:
            raise UsageError(
                f"--secrets-backend sops needs {' and '.join(absent)}",
                hint="the encrypted file, and the age identity file that decrypts it",
            )
    if backend == "vault":
        if settings.vault_addr is None:
            raise UsageError(
                "--secrets-backend vault needs --vault-addr", hint="for example https://vault:8200"
            )
        token = settings.vault_token_file is not None
        approle = (settings.vault_role_id_file, settings.vault_secret_id_file)
        if token and any(f is not None for f in approle):
            raise UsageError(
                "--vault-token-file and --vault-role-id-file/--vault-secret-id-file go one at a time",
                hint="authenticate with a token file, or with AppRole",
            )
        if not token and None in approle:
            raise UsageError(
                "--secrets-backend vault needs --vault-token-file, or --vault-role-id-file and "
                "--vault-secret-id-file (AppRole)",
                hint="the files hold the credential alone, readable only by aiond",
            )


def backend_for(settings: BackendSettings) -> SecretsBackend:
    """The backend the settings choose, built once for the life of the process. Raises UsageError
    for settings that do not make one backend (see :func:`check_settings`), InputError when the sops
    program is missing."""
    check_settings(settings)
    match settings.secrets_backend:
        case "sops":
            from aion.secrets.sops import SopsSecrets

            assert settings.sops_file is not None
            assert settings.sops_age_key_file is not None
            return SopsSecrets(settings.sops_file, settings.sops_age_key_file)
        case "vault":
            from aion.secrets.vault import VaultSecrets

            assert settings.vault_addr is not None
            return VaultSecrets(
                settings.vault_addr,
                mount=settings.vault_mount,
                path=settings.vault_path,
                token_file=settings.vault_token_file,
                role_id_file=settings.vault_role_id_file,
                secret_id_file=settings.vault_secret_id_file,
                ca_cert=settings.vault_ca_cert,
                cache_ttl=settings.vault_cache_ttl,
            )
        case _:
            from aion.secrets.files import FileSecrets

            return FileSecrets(settings.secrets_dir)


def describe(backend: SecretsBackend) -> str:
    """Where a backend reads from, in words (no value, no credential)."""
    method = getattr(backend, "describe", None)
    return str(method()) if callable(method) else type(backend).__name__


__all__ = [
    "BACKENDS",
    "BackendSettings",
    "backend_for",
    "check_addr",
    "check_location",
    "check_settings",
    "describe",
]
