"""``aionctl secrets check``: which secrets a config set and the installed modules need, and whether
the secret backend resolves each one, by name only.

It runs offline, where aiond runs: the backend options are aiond's own, read from the same
environment variables (``AIOND_SECRETS_BACKEND``, ``AIOND_SECRETS_DIR``, ``AIOND_SOPS_FILE``,
``AIOND_VAULT_ADDR``, ...), so in the daemon's environment it checks what the daemon would read.
Each secret is fetched through the very backend aiond uses and the value dropped at once: no value
is ever printed, in any format, nor in any error.

Needed are: the ``api_key_secret`` of every cloud provider of the set's models.yml that its policies
allow (required), and every name in an installed module's ``permissions.secrets`` (required, or
optional with a trailing ``?``). Exit 1 when a required secret does not resolve.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aionctl.options import (
    DEFAULT_SECRETS_BACKEND,
    DEFAULT_SECRETS_DIR,
    DEFAULT_VAULT_MOUNT,
    DEFAULT_VAULT_PATH,
    Output,
    SecretsBackendName,
    SecretsDir,
    SopsAgeKeyFile,
    SopsFile,
    VaultAddr,
    VaultCaCert,
    VaultMount,
    VaultPath,
    VaultRoleIdFile,
    VaultSecretIdFile,
    VaultTokenFile,
    backend_options,
    command_app,
    global_options,
)
from aionctl.output import OutputFormat, document, emit

if TYPE_CHECKING:
    from aion.config.model import ConfigSnapshot
    from aion.secrets.base import SecretsBackend

app = command_app()
app.info.help = "Check that the secrets needed resolve (names only)."


@app.callback()
def group() -> None:
    """Check the secrets that a config set and the installed modules need (names only, never values)."""


@dataclasses.dataclass(slots=True)
class Need:
    """One secret name: who uses it and whether any of them requires it."""

    name: str
    users: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def required(self) -> bool:
        return any(user["required"] for user in self.users)


@app.command("check")
def check_command(
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Argument(metavar="[DIR]", envvar="AIOND_CONFIG", show_default=False,
                       help="Config set whose providers need keys [default: $AIOND_CONFIG, else .]."),
    ] = Path(),
    backend: SecretsBackendName = DEFAULT_SECRETS_BACKEND,
    secrets_dir: SecretsDir = DEFAULT_SECRETS_DIR,
    sops_file: SopsFile = None,
    sops_age_key_file: SopsAgeKeyFile = None,
    vault_addr: VaultAddr = None,
    vault_mount: VaultMount = DEFAULT_VAULT_MOUNT,
    vault_path: VaultPath = DEFAULT_VAULT_PATH,
    vault_token_file: VaultTokenFile = None,
    vault_role_id_file: VaultRoleIdFile = None,
    vault_secret_id_file: VaultSecretIdFile = None,
    vault_ca_cert: VaultCaCert = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", envvar="AION_MODULE_STORE", metavar="DIR",
                     help="Module store [default: ~/.local/share/aion/modules; aiond's is "
                          "STATE_DIR/modules]."),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:  # fmt: skip
    """List the secrets the config set DIR and the installed modules need, where each is used, and
    whether it resolves; exit 1 if a required one does not. Values are never shown."""
    from aion.errors import UsageError
    from aion.modules.store import ModuleStore, default_store
    from aion.secrets.select import backend_for, describe

    options = backend_options(
        backend=backend, secrets_dir=secrets_dir, sops_file=sops_file,
        sops_age_key_file=sops_age_key_file, vault_addr=vault_addr, vault_mount=vault_mount,
        vault_path=vault_path, vault_token_file=vault_token_file,
        vault_role_id_file=vault_role_id_file, vault_secret_id_file=vault_secret_id_file,
        vault_ca_cert=vault_ca_cert,
    )  # fmt: skip
    secrets_backend = backend_for(options)
    if not config.is_dir():
        raise UsageError(f"{config}: not a directory", hint="give the directory of a config set")
    modules = ModuleStore(store or default_store())
    needs = _needs(_snapshot(config), modules)
    rows = [_resolve(secrets_backend, need) for need in sorted(needs.values(), key=lambda n: n.name)]
    failing = [row["name"] for row in rows if row["required"] and row["status"] != "ok"]
    body = {
        "backend": options.secrets_backend,
        "source": describe(secrets_backend),
        "config": str(config.absolute()),
        "store": str(modules.root.absolute()),
        "secrets": rows,
        "ok": not failing,
    }
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("SecretsCheck", body), output, text=lambda: _text(body, failing))
    if failing:
        raise typer.Exit(1)


def _snapshot(config: Path) -> ConfigSnapshot:
    from aion.config.validate import validate_directory
    from aion.errors import FindingsError

    report = validate_directory(config)
    if report.snapshot is None:
        errors = [f for f in report.findings if f.severity.value == "error"]
        raise FindingsError(
            f"{config} is not a valid config set ({len(errors)} errors)", hint=f"aionctl validate {config}"
        )
    return report.snapshot


def _needs(snapshot: ConfigSnapshot, modules: Any) -> dict[str, Need]:
    """Every secret name needed, with its users: cloud providers the policies allow, then installed
    modules (their manifests' ``permissions.secrets``)."""
    from aion.config.model import Locality
    from aion.errors import InputError
    from aion.modules.package import read_manifest
    from aion.oci.model import Digest

    needs: dict[str, Need] = {}

    def add(name: str, kind: str, user: str, required: bool) -> None:
        needs.setdefault(name, Need(name)).users.append({"kind": kind, "name": user, "required": required})

    for name, provider in sorted(snapshot.models.providers.items()):
        if (
            provider.locality is Locality.CLOUD
            and provider.api_key_secret
            and snapshot.policies.provider_allowed(name)
        ):
            add(provider.api_key_secret, "provider", name, True)
    for name, entry in sorted(modules.lock().items()):
        try:
            directory = modules.module_dir(Digest.parse(str(entry.get("digest", ""))))
        except (ValueError, InputError):
            raise InputError(
                f"{modules.root}: the lock entry of module {name!r} has no valid digest",
                hint="reinstall the module (aionctl install)",
            ) from None
        _raw, manifest = read_manifest(directory)
        declared = manifest.get("permissions", {}).get("secrets", [])
        for item in declared:
            optional = item.endswith("?")
            add(item.removesuffix("?"), "module", name, not optional)
    return needs


def _resolve(backend: SecretsBackend, need: Need) -> dict[str, Any]:
    """The row of one secret: fetched through the backend, the value dropped at once."""
    from aion.errors import InputError
    from aion.secrets.base import SecretMissing, SecretNameInvalid

    status = "ok"
    failure: InputError | None = None
    try:
        backend.get(need.name)
    except SecretMissing as exc:
        status, failure = "missing", exc
    except SecretNameInvalid as exc:
        status, failure = "invalid", exc
    except InputError as exc:  # SecretsUnavailable, and any other failure to read it
        status, failure = "unavailable", exc
    return {
        "name": need.name,
        "required": need.required,
        "status": status,
        "problem": failure.message if failure is not None else None,
        "hint": failure.hint if failure is not None else None,
        "usedBy": need.users,
    }


def _text(body: dict[str, Any], failing: list[str]) -> str:
    rows = body["secrets"]
    lines = [f"backend: {body['source']}"]
    if not rows:
        lines.append("no secret is needed by the config set or the installed modules")
        return "\n".join(lines) + "\n"
    table = [("NAME", "NEED", "STATUS", "USED BY")] + [
        (
            row["name"],
            "required" if row["required"] else "optional",
            row["status"],
            ", ".join(
                f"{u['kind']} {u['name']}" + ("" if u["required"] else " (optional)") for u in row["usedBy"]
            ),
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines += [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in table
    ]
    problems = [row for row in rows if row["problem"]]
    if problems:
        lines.append("")
        for row in problems:
            lines.append(f"{row['name']}: {row['problem']}")
            if row["hint"]:
                lines.append(f"  hint: {row['hint']}")
    resolved = sum(1 for row in rows if row["status"] == "ok")
    summary = f"{len(rows)} secret{'s' if len(rows) != 1 else ''}, {resolved} resolved"
    if failing:
        summary += f"; required and not resolved: {', '.join(failing)}"
    lines += ["", summary]
    return "\n".join(lines) + "\n"
