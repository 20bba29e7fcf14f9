"""``aionctl module ...``: build, publish, sign, install, inspect, re-verify and remove signed modules.

Installs verify before anything is stored: a module whose signature, SBOM or contents do not pass is
refused (exit 1) and quarantined with a reason; the store and the lock file stay as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from aionctl import completing
from aionctl.client import Endpoint, call, channel, every_page
from aionctl.connect import daemon_command
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Build, publish, sign, install, inspect, verify and remove modules."

Store = Annotated[
    Path | None,
    typer.Option("--store", envvar="AION_MODULE_STORE", metavar="DIR",
                 help="Module store [default: ~/.local/share/aion/modules]."),
]  # fmt: skip
Config = Annotated[
    Path,
    typer.Option("--config", envvar="AION_CONFIG", metavar="DIR",
                 help="Config set whose policies.yml holds the trust policy."),
]  # fmt: skip
PlainHttp = Annotated[
    bool, typer.Option("--plain-http", help="Talk HTTP, not HTTPS, to the registry (a local test registry).")
]


def _store(path: Path | None) -> Any:
    from aion.modules.store import ModuleStore, default_store

    return ModuleStore(path or default_store())


@app.command("package")
def package_command(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Module directory (agent.yaml, code, schemas).")
    ],
    output_ref: Annotated[
        str | None,
        typer.Option("--to", metavar="oci:PATH[:TAG]", help="Write the package into this OCI image layout."),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Build a module package; print its digest (and write it to an image layout with --to)."""
    from aion.errors import UsageError
    from aion.modules import package as pkg
    from aion.oci import Reference, open_store

    built = pkg.build(directory)
    target = None
    if output_ref is not None:
        target = Reference.parse(output_ref)
        if not target.is_layout:
            raise UsageError("--to takes an image layout (oci:PATH[:TAG]); use `module push` for a registry")
        target = Reference(target.registry, target.repository, target.tag or built.version, None)
        with open_store(target) as store:
            pkg.publish(store, target, built)
    body = {
        "name": built.name,
        "version": built.version,
        "digest": str(built.digest),
        "to": str(target) if target else None,
    }
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        where = f" -> {target}" if target else ""
        emit(
            document("ModulePackage", body),
            output,
            text=lambda: f"{built.name} {built.version} {built.digest}{where}\n",
        )


@app.command("push")
def push_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Module directory.")],
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="Where to: registry/repository:tag or oci:PATH[:TAG].")
    ],
    sbom: Annotated[
        Path | None,
        typer.Option("--sbom", metavar="FILE", help="CycloneDX or SPDX JSON, attached as a referrer."),
    ] = None,
    plain_http: PlainHttp = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Build a module and push it (with its SBOM) to a registry or an image layout."""
    from aion.modules import package as pkg
    from aion.oci import Reference, open_store

    target = Reference.parse(ref)
    built = pkg.build(directory)
    with open_store(target, plain_http=frozenset({target.registry}) if plain_http else frozenset()) as store:
        digest = pkg.publish(store, target, built, sbom=sbom)
    body = {"name": built.name, "version": built.version, "ref": str(target), "digest": str(digest)}
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("ModulePush", body), output, text=lambda: f"pushed {target}@{digest}\n")


@app.command("sign")
def sign_command(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="registry/repository:tag, @sha256:..., or oci:PATH[:TAG].")
    ],
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            metavar="FILE",
            help="Private key: cosign.key, or PEM ECDSA P-256 (password from AION_KEY_PASSWORD).",
        ),
    ],
    plain_http: PlainHttp = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Sign a module with a key, as `cosign sign --key` does: a Sigstore bundle attached as a referrer."""
    from aion.oci import Reference, open_store
    from aion.trust.sign import load_signing_key, sign_artifact

    target = Reference.parse(ref)
    signing_key = load_signing_key(key, _key_password)
    with open_store(target, plain_http=frozenset({target.registry}) if plain_http else frozenset()) as store:
        done = sign_artifact(store, target, signing_key)
    body = {
        "ref": str(target),
        "digest": str(done.digest),
        "referrer": str(done.referrer),
        "bundle": str(done.bundle),
        "signer": done.signer,
    }
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(
            document("ModuleSign", body),
            output,
            text=lambda: (
                f"signed {target.name}@{done.digest}\n"
                f"  signature: {done.referrer} (Sigstore bundle, key {done.signer})\n"
            ),
        )


@app.command("keygen")
def keygen_command(
    ctx: typer.Context,
    out: Annotated[
        str,
        typer.Option("--out", metavar="PREFIX", help="Write PREFIX.key (mode 0600) and PREFIX.pub."),
    ] = "cosign",
) -> None:
    """Make an ECDSA P-256 key pair for `module sign` (cosign's format; cosign signs with it too)."""
    from aion.trust.keys import load_public_key
    from aion.trust.sign import generate_key_pair

    password = _new_key_password(out)
    private, public = generate_key_pair(Path(out).expanduser(), password)
    fingerprint = load_public_key(public).fingerprint
    if not global_options(ctx).quiet:
        print(f"private key: {private} (keep it secret)\npublic key:  {public} {fingerprint}")


def _key_password(name: str) -> bytes:
    """The password of an encrypted key: $AION_KEY_PASSWORD, else asked on the terminal."""
    import os

    from aion.errors import InputError

    value = os.environ.get("AION_KEY_PASSWORD")
    if value is not None:
        return value.encode()
    if sys.stdin.isatty() and sys.stderr.isatty():
        import getpass

        return getpass.getpass(f"Password for {name}: ").encode()
    raise InputError(
        f"{name} is encrypted, and no password was given",
        hint="set AION_KEY_PASSWORD (run on a terminal to be asked instead)",
    )


def _new_key_password(prefix: str) -> bytes:
    import os

    from aion.errors import InputError, UsageError

    value = os.environ.get("AION_KEY_PASSWORD")
    if value is not None:
        return value.encode()
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise InputError(
            f"no password for {prefix}.key",
            hint='set AION_KEY_PASSWORD (AION_KEY_PASSWORD="" for none), or run on a terminal to be asked',
        )
    import getpass

    first = getpass.getpass(f"Password for {prefix}.key: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the passwords differ; nothing was written")
    return first.encode()


@app.command("install")
def install_command(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="REF", help="registry/repository:tag, @sha256:..., or oci:PATH[:TAG].")
    ],
    config: Config = Path(),
    store: Store = None,
    plain_http: PlainHttp = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Verify and unpack, but store nothing.")] = False,
    allow_source_change: Annotated[
        bool,
        typer.Option(
            "--allow-source-change",
            help="Let it replace a module of the same name installed from another repository.",
        ),
    ] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Verify a module under the trust policy, then install it (refused and quarantined otherwise)."""
    from aion.modules.install import InstallOptions, install, load_trust
    from aion.oci import Reference

    target = Reference.parse(ref)
    options = InstallOptions(
        trust=load_trust(config),
        config_dir=config,
        plain_http=frozenset({target.registry}) if plain_http else frozenset(),
        dry_run=dry_run,
        allow_source_change=allow_source_change,
    )
    opts = global_options(ctx)
    with _progress(enabled=not opts.quiet and sys.stderr.isatty() and not opts.no_color) as (
        on_step,
        on_bytes,
    ):
        done = install(ref, _store(store), options, on_step=on_step, on_bytes=on_bytes)
    v = done.verification
    body = {
        "name": done.name,
        **done.entry(),
        "path": str(done.path),
        "unchanged": done.unchanged,
        "previous": done.previous,
        "dryRun": dry_run,
    }
    if v.method.value == "unsafe-dev-exception":
        print(
            f"WARNING: {done.name} was NOT verified (development exception for its registry)", file=sys.stderr
        )

    def text() -> str:
        verb = "verified (dry run)" if dry_run else ("already installed" if done.unchanged else "installed")
        who = f"{v.method.value} {v.signer}" + (f" ({v.issuer})" if v.issuer else "")
        sbom = f"; SBOM {v.sbom_digest}" if v.sbom_digest else ""
        return f"{verb}: {done.name} {done.version} {done.digest}\n  signed: {who}{sbom}\n"

    if not (opts.quiet and output is OutputFormat.TEXT):
        emit(document("ModuleInstall", body), output, text=text)


@app.command("list")
def list_command(ctx: typer.Context, store: Store = None, output: Output = OutputFormat.TEXT) -> None:
    """List installed modules."""
    lock = _store(store).lock()
    rows = [{"name": name, **entry} for name, entry in sorted(lock.items())]

    def text() -> str:
        if not rows:
            return "no modules installed\n"
        width = max(len(r["name"]) for r in rows)
        return "".join(
            f"{r['name']:<{width}}  {r.get('version', ''):<10} {r['digest'][:19]}  {r.get('method', '')}\n"
            for r in rows
        )

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("ModuleList", {"modules": rows}), output, text=text)


@app.command("inspect")
def inspect_command(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Installed module name.", autocompletion=completing.module_names)
    ],
    store: Store = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Show an installed module: its lock entry, manifest and files."""
    from aion.errors import NotFound
    from aion.oci.model import Digest

    modules = _store(store)
    entry = modules.lock().get(name)
    if entry is None:
        raise NotFound(f"no module named {name!r} is installed", hint="aionctl module list shows them")
    directory = modules.module_dir(Digest.parse(entry["digest"]))
    files = sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and "blobs" not in p.parts
    )
    manifest = (
        (directory / "agent.yaml").read_text(encoding="utf-8") if (directory / "agent.yaml").exists() else ""
    )
    body = {"name": name, **entry, "path": str(directory), "files": files, "manifest": manifest}

    def text() -> str:
        lines = [f"{k}: {v}" for k, v in entry.items()] + [f"path: {directory}", "files:"]
        return "\n".join([*lines, *(f"  {f}" for f in files)]) + "\n"

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("Module", body), output, text=text)


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[NAME ...]", help="Default: every module.", autocompletion=completing.module_names
        ),
    ] = None,
    config: Config = Path(),
    store: Store = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Re-check installed modules: files unchanged, signer still trusted by the current policy."""
    from aion.modules.install import load_trust, verify_installed

    checks = verify_installed(_store(store), load_trust(config), config, names or None)
    body = {"ok": all(c.ok for c in checks), "modules": [
        {"name": c.name, "digest": c.digest, "ok": c.ok, "problems": list(c.problems)} for c in checks
    ]}  # fmt: skip

    def text() -> str:
        out = []
        for c in checks:
            out.append(f"{c.name}: {'ok' if c.ok else 'FAILED'} {c.digest}")
            out.extend(f"  - {p}" for p in c.problems)
        return "\n".join(out or ["no modules installed"]) + "\n"

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("ModuleVerification", body), output, text=text)
    if not body["ok"]:
        raise typer.Exit(1)


@app.command("remove")
def remove_command(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Installed module name.", autocompletion=completing.module_names)
    ],
    store: Store = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Remove an installed module."""
    from aion.modules.install import remove

    entry = remove(name, _store(store))
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("ModuleRemove", {"name": name, "digest": entry["digest"]}), output,
             text=lambda: f"removed {name} {entry['digest']}\n")  # fmt: skip


class _progress:
    """A rich progress bar on stderr while an install runs on a terminal; nothing otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> tuple[Any, Any]:
        if not self.enabled:
            return None, None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("resolve", total=None)

        def on_step(name: str) -> None:
            self._bar.update(self._task, description=name)

        def on_bytes(done: int, total: int) -> None:
            self._bar.update(self._task, completed=done, total=total)

        return on_step, on_bytes

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


__all__ = ["app", "install_command"]


# -- the daemon's modules -------------------------------------------------------------------------------


def _daemon_row(module: Any) -> str:
    from aion.api.v1 import modules_pb2
    from aion.documents import enum_word

    state = enum_word(modules_pb2.ModuleState.DESCRIPTOR, module.state) or "unknown"
    runtime = enum_word(modules_pb2.ModuleRuntime.DESCRIPTOR, module.runtime) or "unknown"
    return f"{module.name:<20} {module.version:<10} {runtime:<10} {state:<10} {module.parallelism:>11}"


@daemon_command(app, "status", timeout=5.0)
def status_command(ctx: typer.Context, target: Endpoint, output: Output = OutputFormat.TEXT) -> None:
    """List the modules of the running aiond: state (ready, or untrusted: never run) and parallelism."""
    from aion.api.v1 import modules_pb2, modules_pb2_grpc
    from aion.documents import to_dict

    with channel(target) as ch:
        modules = every_page(
            target, modules_pb2_grpc.ModuleServiceStub(ch).ListModules,
            lambda token: modules_pb2.ListModulesRequest(page_token=token),
            lambda reply: reply.modules, "modules",
        )  # fmt: skip

    def text() -> str:
        if not modules:
            return "no modules installed in the daemon's store\n"
        head = f"{'NAME':<20} {'VERSION':<10} {'RUNTIME':<10} {'STATE':<10} PARALLELISM\n"
        return head + "".join(_daemon_row(m) + "\n" for m in modules)

    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("DaemonModuleList", {"modules": [to_dict(m) for m in modules]}), output, text=text)


@daemon_command(app, "parallelism", timeout=5.0)
def parallelism_command(
    ctx: typer.Context,
    target: Endpoint,
    name: Annotated[
        str, typer.Argument(help="Module name (as in modules.yml).", autocompletion=completing.module_names)
    ],
    parallelism: Annotated[int, typer.Argument(metavar="N", help="Calls it may run at once (1-1024).")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", metavar="TEXT", help="Why; recorded in the audit.")
    ] = "",
    output: Output = OutputFormat.TEXT,
) -> None:
    """Change how many calls of module NAME run at once, now and after restarts (role operator)."""
    from aion.api.v1 import modules_pb2, modules_pb2_grpc
    from aion.errors import UsageError

    if not 1 <= parallelism <= 1024:
        raise UsageError(f"N must be between 1 and 1024, not {parallelism}")
    if not reason.strip():
        raise UsageError("--reason is required", hint="say why: it goes into the audit trail")
    request = modules_pb2.SetModuleParallelismRequest(name=name, parallelism=parallelism, reason=reason)
    with channel(target) as ch:
        reply = call(
            target, modules_pb2_grpc.ModuleServiceStub(ch).SetModuleParallelism, request, "parallelism"
        )
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        change = (
            f"{reply.module.name}: parallelism {reply.previous_parallelism} -> {reply.module.parallelism}\n"
        )
        emit(document("ModuleParallelismChange", reply), output, text=lambda: change)
