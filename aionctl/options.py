"""Options shared by many aionctl commands, each defined once here and reused by annotation.

Connection settings resolve as flag > environment variable > client context (``--context``, else the
current context of the client config file, see aionctl.contexts) > built-in default.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from aionctl import completing
from aionctl.output.interface import OutputFormat


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalOptions:
    """Options given before the command name; commands read them from ``ctx.obj``."""

    no_color: bool = False
    quiet: bool = False
    debug: bool = False
    context: str | None = None
    """The client context named with ``--context`` or ``AION_CONTEXT`` (None: the current context)."""

    def color(self, stream: object = None) -> bool:
        """Whether escape codes may be written: a terminal, no --no-color, no NO_COLOR, not TERM=dumb."""
        target = stream if stream is not None else sys.stdout
        if self.no_color or "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
            return False
        isatty = getattr(target, "isatty", None)
        return bool(isatty and isatty())


def budget_nano(text: str) -> int:
    """A ``--budget`` in dollars (for example 0.05) as nano-dollars; UsageError when it is not one."""
    import decimal

    from aion.errors import UsageError

    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise UsageError(f"--budget {text!r} is not an amount of dollars", hint="for example 0.05") from None
    if not value.is_finite() or value < 0 or value > 1_000_000:
        raise UsageError(f"--budget {text} is out of range", hint="0 to 1000000 dollars")
    return int(value * 1_000_000_000)


def command_app() -> typer.Typer:
    """The Typer application a command module exposes as ``app``: plain help (no box drawing, no
    markup), no completion options of its own (the root has them), no pretty tracebacks."""
    from aionctl._lazy import SuggestingGroup

    return typer.Typer(
        cls=SuggestingGroup, rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False
    )


def global_options(ctx: typer.Context) -> GlobalOptions:
    """The global options of this invocation (defaults when a command runs without the root group)."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, GlobalOptions) else GlobalOptions()


Output = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="Output format: text for people, json or yaml for programs.",
                 case_sensitive=False),
]  # fmt: skip

Address = Annotated[
    str | None,
    typer.Option("--addr", envvar="AION_ADDR", metavar="HOST:PORT",
                 help="aiond gRPC address [default: 127.0.0.1:8470]."),
]  # fmt: skip

HttpAddress = Annotated[
    str | None,
    typer.Option("--http-addr", envvar="AION_HTTP_ADDR", metavar="HOST:PORT",
                 help="aiond HTTP address (health, readiness, metrics) [default: 127.0.0.1:8471]."),
]  # fmt: skip


ContextName = Annotated[
    str | None,
    typer.Option("--context", envvar="AION_CONTEXT", metavar="NAME", autocompletion=completing.context_names,
                 help="Client context to use (`aionctl config get-contexts`) [default: the current one]."),
]  # fmt: skip


def _finite(value: float) -> float:
    """A float option's value, refused when it is not a number (the parser's range check lets
    ``nan`` through: it compares false with every bound)."""
    if value != value:  # noqa: PLR0124 - NaN is the one value unequal to itself
        raise typer.BadParameter(f"{value} is outside 0.1..600.0")
    return value


Timeout = Annotated[
    float,
    typer.Option("--timeout", envvar="AION_TIMEOUT", min=0.1, max=600.0, metavar="SECONDS",
                 callback=_finite, help="Deadline for each call to the daemon."),
]  # fmt: skip


# -- the secret backend, spelled as aiond spells it (aion.secrets.select.BackendSettings) -----------
# ``aionctl secrets check`` and ``aionctl kafka`` read secrets through the backend aiond uses, from
# the same flags and environment variables, so in the daemon's environment they read what it reads.

SecretsBackendName = Annotated[
    str,
    typer.Option("--secrets-backend", envvar="AIOND_SECRETS_BACKEND", metavar="BACKEND",
                 help="files, sops or vault, as aiond's --secrets-backend."),
]  # fmt: skip
SecretsDir = Annotated[
    Path,
    typer.Option("--secrets-dir", envvar="AIOND_SECRETS_DIR", metavar="DIR",
                 help="The files backend's directory, as aiond's."),
]  # fmt: skip
SopsFile = Annotated[
    Path | None,
    typer.Option("--sops-file", envvar="AIOND_SOPS_FILE", metavar="FILE",
                 help="The sops backend's encrypted file."),
]  # fmt: skip
SopsAgeKeyFile = Annotated[
    Path | None,
    typer.Option("--sops-age-key-file", envvar="AIOND_SOPS_AGE_KEY_FILE", metavar="FILE",
                 help="The age identity that decrypts --sops-file."),
]  # fmt: skip
VaultAddr = Annotated[
    str | None,
    typer.Option("--vault-addr", envvar="AIOND_VAULT_ADDR", metavar="URL", help="Vault's address."),
]  # fmt: skip
VaultMount = Annotated[
    str,
    typer.Option("--vault-mount", envvar="AIOND_VAULT_MOUNT", metavar="MOUNT", help="The KV v2 mount."),
]  # fmt: skip
VaultPath = Annotated[
    str,
    typer.Option("--vault-path", envvar="AIOND_VAULT_PATH", metavar="PATH",
                 help="The secret whose keys are the names."),
]  # fmt: skip
VaultTokenFile = Annotated[
    Path | None,
    typer.Option("--vault-token-file", envvar="AIOND_VAULT_TOKEN_FILE", metavar="FILE",
                 help="File holding a Vault token."),
]  # fmt: skip
VaultRoleIdFile = Annotated[
    Path | None,
    typer.Option("--vault-role-id-file", envvar="AIOND_VAULT_ROLE_ID_FILE", metavar="FILE",
                 help="File holding the AppRole role_id."),
]  # fmt: skip
VaultSecretIdFile = Annotated[
    Path | None,
    typer.Option("--vault-secret-id-file", envvar="AIOND_VAULT_SECRET_ID_FILE", metavar="FILE",
                 help="File holding the AppRole secret_id."),
]  # fmt: skip
VaultCaCert = Annotated[
    Path | None,
    typer.Option("--vault-ca-cert", envvar="AIOND_VAULT_CA_CERT", metavar="FILE",
                 help="PEM CA bundle that verifies Vault's certificate."),
]  # fmt: skip
DEFAULT_SECRETS_BACKEND = "files"
DEFAULT_SECRETS_DIR = Path("/run/secrets/aion")
DEFAULT_VAULT_MOUNT = "secret"
DEFAULT_VAULT_PATH = "aion"


@dataclasses.dataclass(frozen=True, slots=True)
class BackendOptions:
    """The backend options as aiond spells them (aion.secrets.select.BackendSettings)."""

    secrets_backend: str
    secrets_dir: Path
    sops_file: Path | None
    sops_age_key_file: Path | None
    vault_addr: str | None
    vault_mount: str
    vault_path: str
    vault_token_file: Path | None
    vault_role_id_file: Path | None
    vault_secret_id_file: Path | None
    vault_ca_cert: Path | None
    vault_cache_ttl: float = 0.0


def backend_options(
    *,
    backend: str,
    secrets_dir: Path,
    sops_file: Path | None,
    sops_age_key_file: Path | None,
    vault_addr: str | None,
    vault_mount: str,
    vault_path: str,
    vault_token_file: Path | None,
    vault_role_id_file: Path | None,
    vault_secret_id_file: Path | None,
    vault_ca_cert: Path | None,
) -> BackendOptions:
    """The options of the annotations above, checked (UsageError naming the flag) and with paths
    made absolute; :func:`aion.secrets.select.backend_for` makes the backend from them."""
    from aion.secrets.select import check_addr, check_location

    def file(path: Path | None) -> Path | None:
        return path.expanduser().absolute() if path is not None else None

    return BackendOptions(
        secrets_backend=backend.strip().lower(),
        secrets_dir=secrets_dir.expanduser().absolute(),
        sops_file=file(sops_file),
        sops_age_key_file=file(sops_age_key_file),
        vault_addr=check_addr(vault_addr, "--vault-addr") if vault_addr is not None else None,
        vault_mount=check_location(vault_mount, "--vault-mount"),
        vault_path=check_location(vault_path, "--vault-path"),
        vault_token_file=file(vault_token_file),
        vault_role_id_file=file(vault_role_id_file),
        vault_secret_id_file=file(vault_secret_id_file),
        vault_ca_cert=file(vault_ca_cert),
    )
