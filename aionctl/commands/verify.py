"""``aionctl verify blob``: check a Sigstore bundle for a file (a release file, a module blob), offline.

Either keyless (``--certificate-identity`` and ``--certificate-oidc-issuer``, checked against the
trust roots sigstore-python ships, or ``--trusted-root``), or with a key (``--key``, then the key is
the one trust anchor and no trusted root is consulted).

Every input is bounded: the bundle, the key and the trusted root are read through
:func:`aion.inputs.read_bounded` (regular files or ``-``, a few MiB at most); the file is hashed
streaming (:mod:`aion.trust.artifacts`), so it may be large but is never held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aion.errors import UsageError
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Verify signatures offline."


@app.callback()
def group() -> None:
    """Verify signatures offline (Sigstore bundles of files)."""


@app.command("blob")
def blob(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="FILE_OR_DIGEST", help="The file, or its sha256:<hex> digest.")
    ],
    bundle: Annotated[
        Path, typer.Option("--bundle", metavar="B", help="The Sigstore bundle (.sigstore.json).")
    ],
    identity: Annotated[
        str | None,
        typer.Option("--certificate-identity", metavar="I", help="Keyless: the signer's exact identity."),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option("--certificate-oidc-issuer", metavar="O", help="Keyless: the identity's OIDC issuer."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", metavar="K", help="A PEM public key (cosign.pub).")
    ] = None,
    trusted_root: Annotated[
        Path | None,
        typer.Option("--trusted-root", metavar="T", help="Keyless: a trusted_root.json to use instead."),
    ] = None,
    staging: Annotated[bool, typer.Option("--staging", help="Keyless: Sigstore's staging instance.")] = False,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Verify a file's Sigstore bundle (exit 0 verified, 1 not)."""
    from aion.inputs import human_size, read_bounded
    from aion.trust import bundles, keyless
    from aion.trust.keys import load_public_key

    if key is not None and (identity or issuer):
        raise UsageError("give --key, or --certificate-identity with --certificate-oidc-issuer, not both")
    if key is None and not (identity and issuer):
        raise UsageError("give --certificate-identity and --certificate-oidc-issuer (keyless), or --key")
    _at_most_one_stdin({"the file": target, "--bundle": bundle, "--key": key, "--trusted-root": trusted_root})
    limit = bundles.MAX_BUNDLE_BYTES
    raw = read_bounded(
        bundle,
        limit,
        what="--bundle",
        hint=f"give the Sigstore bundle file (.sigstore.json, at most {human_size(limit)})",
    )
    sha256 = _sha256(target)
    what = f"bundle {bundle}"
    if key is not None:
        parsed = bundles.parse(raw, what)
        signed = bundles.verify_with_keys(
            parsed, [load_public_key(key, what="--key")], what, artifact_sha256=sha256
        )
        method = "key"
    else:
        assert identity is not None
        assert issuer is not None
        verifier = keyless.verifier(staging=staging, trusted_root=trusted_root)
        policy = keyless.exact_identity(identity, issuer)
        signed = keyless.verify_blob_bundle(raw, sha256=sha256, verifier_=verifier, policy=policy, what=what)
        method = "keyless"
    body = {
        "verified": True,
        "target": target,
        "method": method,
        "signer": signed.signer,
        "issuer": signed.issuer,
    }
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        who = signed.signer + (f" ({signed.issuer})" if signed.issuer else "")
        emit(
            document("BlobVerification", body),
            output,
            text=lambda: f"verified: {target}\n  signed by {who}\n",
        )


def _at_most_one_stdin(inputs: dict[str, str | Path | None]) -> None:
    from aion.inputs import STDIN

    from_stdin = [name for name, value in inputs.items() if value is not None and str(value) == STDIN]
    if len(from_stdin) > 1:
        raise UsageError(f"{' and '.join(from_stdin)} cannot all be standard input (-): only one of them can")


def _sha256(target: str) -> bytes:
    """The SHA-256 the bundle must be for: the one given (``sha256:<hex>``), or the file's (``-``:
    standard input), hashed streaming."""
    from aion.trust.artifacts import sha256_of

    if target.startswith("sha256:"):
        value = target.removeprefix("sha256:")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise UsageError(f"{target!r} is not a sha256:<64 hex digits> digest")
        return bytes.fromhex(value)
    return sha256_of(target, what="file")
