"""Installing, checking and removing modules; shared by ``aionctl install`` and aiond's ModuleService.

The install pipeline, in order (each step runs only if the one before succeeded):

0. refuse a reference no trust rule covers, before contacting anything, and a trust rule whose key
   files are outside the directories the policy allows (aiond's config directory and
   ``--trust-keys-dir``: :attr:`~aion.config.model.Trust.key_roots`);
1. resolve the reference to a manifest, and compute its digest (a tag is only a pointer);
2. verify the signature of that digest under the trust policy, and the SBOM when it is required;
3. pull the config and layers of that same digest, verifying every byte (no window between the
   digest that was verified and the bytes that are installed);
4. check the AgentPackage manifest against its schema, and the layers against the runtime it names;
5. unpack the layers safely into a staging directory inside the store;
6. if a tag was given, check it still points at the verified digest (a tag moved during the install
   is refused rather than silently ignored);
7. move the module into the content-addressed store, then replace the lock file;
8. record an audit event.

Any failure leaves the store and the lock file untouched, moves what was fetched to quarantine with
a machine-readable reason, records a ``refused`` audit event, and raises.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aion.config.model import Trust
from aion.config.yamlload import Limits
from aion.envelopes import audit, local_principal
from aion.errors import ConflictError, Error, FindingsError, InputError, NotFound, VerificationError
from aion.inputs import read_bounded
from aion.modules import package as pkg
from aion.modules.store import ModuleStore, blob_problems, tree_digest
from aion.modules.unpack import UnpackLimits, unpack
from aion.oci import open_store
from aion.oci.interface import ArtifactStore
from aion.oci.model import Descriptor, Digest, Manifest, Reference
from aion.trust.keys import trust_key_file
from aion.trust.verify import Method, Verification, require_coverage, select_rule, verify_artifact

DEFAULT_BLOB_LIMIT = 1024 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class InstallOptions:
    trust: Trust
    config_dir: Path
    """Where trust-rule key paths are relative to."""
    plain_http: frozenset[str] = frozenset()
    blob_limit: int = DEFAULT_BLOB_LIMIT
    unpack_limits: UnpackLimits = dataclasses.field(default_factory=UnpackLimits)
    principal: str = dataclasses.field(default_factory=local_principal)
    dry_run: bool = False
    allow_source_change: bool = False
    """Let a module replace one of the same name installed from another repository."""


@dataclasses.dataclass(frozen=True, slots=True)
class Installed:
    name: str
    version: str
    ref: str
    digest: Digest
    verification: Verification
    path: Path
    unchanged: bool
    previous: str | None

    def entry(self) -> dict[str, Any]:
        """What was installed (or would be, for a dry run), in the shape of a lock-file entry."""
        v = self.verification
        return {
            "version": self.version,
            "ref": self.ref,
            "digest": str(self.digest),
            "method": v.method.value,
            "signer": v.signer,
            "issuer": v.issuer,
            "sbom": str(v.sbom_digest) if v.sbom_digest else None,
        }


Step = Callable[[str], None]
BytesDone = Callable[[int, int], None]


class _Observer:
    def __init__(self, on_step: Step | None, on_bytes: BytesDone | None) -> None:
        self.step = on_step or (lambda _name: None)
        self.bytes = on_bytes or (lambda _done, _total: None)


def load_trust(config_dir: Path) -> Trust:
    """The trust policy of the config set in ``config_dir`` (its policies.yml), checked like
    ``aionctl validate`` checks it; no policies.yml means no trust rule (so everything is refused)."""
    from aion.config.findings import Severity
    from aion.config.kinds import Kind
    from aion.config.model import build_policies
    from aion.config.validate import Options, Source, check_file

    path = config_dir / "policies.yml"
    if not path.exists():
        alternative = config_dir / "policies.yaml"
        path = alternative if alternative.exists() else path
    if not path.exists():
        if not config_dir.is_dir():
            raise InputError(f"{config_dir}: no such config directory", hint="pass --config DIR")
        return build_policies(None).trust
    raw = read_bounded(path, Limits().max_bytes, what="the trust policy")
    _kind, document, findings = check_file(Source(str(path), raw, Kind.POLICIES), Options())
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if document is None or errors:
        raise FindingsError(
            f"{path} has {len(errors)} error(s); its trust policy cannot be used",
            hint=f"aionctl validate {config_dir}",
        )
    return build_policies(document.data).trust


def install(
    text: str,
    store: ModuleStore,
    options: InstallOptions,
    *,
    on_step: Step | None = None,
    on_bytes: BytesDone | None = None,
    source: ArtifactStore | None = None,
) -> Installed:
    """Install the module ``text`` names into ``store``; see the module docstring for the steps."""
    observer = _Observer(on_step, on_bytes)
    ref = Reference.parse(text)
    oci = source or open_store(ref, plain_http=options.plain_http)
    staged: Path | None = None
    digest: Digest | None = None
    step = "policy"
    try:
        # Before any request: aion neither contacts nor offers credentials to a registry the policy
        # does not know, and such a module could never be installed anyway.
        require_coverage(options.trust, ref)
        trust = _keys_confined(options.trust, ref, options.config_dir)
        step = "resolve"
        observer.step(step)
        manifest = oci.resolve(ref)
        digest = manifest.digest
        _check_artifact(manifest, ref)
        step = "verify"
        observer.step(step)
        verification = verify_artifact(oci, ref, digest, trust, config_dir=options.config_dir)
        step = "pull"
        observer.step(step)
        staged = store.staging()
        config = _pull(oci, ref, manifest, staged, options=options, observer=observer)
        step = "check"
        observer.step(step)
        name, version, runtime = _check_manifest(config, manifest, staged)
        step = "unpack"
        observer.step(step)
        known = _unpack_layers(manifest, staged, options)
        if ref.tag and not ref.digest:
            step = "recheck"
            current = oci.tag_digest(ref, ref.tag)
            if current != digest:
                raise VerificationError(
                    f"{ref}: the tag moved from {digest} to {current} during the install; refused",
                    hint="install again to verify what the tag points at now, or install by digest",
                )
        if options.dry_run:
            shutil.rmtree(staged, ignore_errors=True)
            return Installed(
                name, version, str(ref), digest, verification, store.module_dir(digest), True, None
            )
        step = "commit"
        observer.step(step)
        facts = (name, version, runtime)
        return _commit(
            store, staged, ref=ref, digest=digest, facts=facts, verification=verification, options=options,
            known=known,
        )  # fmt: skip
    except Exception as raised:
        exc = _refuse(
            store, staged, ref=ref, digest=digest, step=step, raised=raised, principal=options.principal
        )
        if exc is raised:
            raise
        raise exc from raised
    finally:
        if source is None:
            oci.close()


def _keys_confined(trust: Trust, ref: Reference, config_dir: Path) -> Trust:
    """``trust`` with the keys of the rule that covers ``ref`` named by their real paths, each checked
    against :attr:`Trust.key_roots <aion.config.model.Trust.key_roots>` (fail closed: one key outside
    refuses the install), so that verification reads exactly the files checked here."""
    rule = select_rule(trust, ref)
    if rule is None or not rule.keys:
        return trust
    keys = tuple(str(trust_key_file(key, config_dir, trust.key_roots)) for key in rule.keys)
    confined = dataclasses.replace(rule, keys=keys)
    return dataclasses.replace(trust, rules=tuple(confined if r is rule else r for r in trust.rules))


def _refuse(
    store: ModuleStore,
    staged: Path | None,
    *,
    ref: Reference,
    digest: Digest | None,
    step: str,
    raised: Exception,
    principal: str,
) -> Error:
    """Quarantine and audit a refused install; the error to raise. Fails closed on anything: an
    unexpected exception is a refusal too, with the same quarantine and audit record."""
    if isinstance(raised, Error):
        exc = raised
    elif isinstance(raised, OSError):
        exc = InputError(f"{ref}: {raised.strerror or raised}")
    else:
        exc = VerificationError(f"{ref}: refused after an unexpected {type(raised).__name__}: {raised}")
    where = store.quarantine(staged, ref=str(ref), digest=digest, step=step, error=exc.message)
    store.events.append(
        audit(
            principal=principal, action="module.install", target=str(ref), outcome="refused",
            reason=exc.message, details={"step": step, "digest": str(digest) if digest else None,
                                         "quarantine": str(where)},
        )
    )  # fmt: skip
    exc.message = f"{exc.message} (install refused at step {step}; quarantined in {where})"
    return exc


def _check_artifact(manifest: Manifest, ref: Reference) -> None:
    if manifest.artifact_type != pkg.ARTIFACT_TYPE or manifest.config is None:
        raise VerificationError(
            f"{ref} is not an aion module (artifact type {manifest.artifact_type!r})",
            hint=f"modules are OCI artifacts of type {pkg.ARTIFACT_TYPE}, made by aionctl module push",
        )
    if manifest.config.media_type != pkg.MANIFEST_TYPE:
        raise VerificationError(
            f"{ref}: the module's config is {manifest.config.media_type!r}, not its manifest"
        )


def _pull(
    oci: ArtifactStore,
    ref: Reference,
    manifest: Manifest,
    staged: Path,
    *,
    options: InstallOptions,
    observer: _Observer,
) -> bytes:
    blobs = staged / "blobs"
    blobs.mkdir()
    (blobs / f"manifest-{manifest.digest.hex}.json").write_bytes(manifest.raw)
    assert manifest.config is not None
    total = manifest.config.size + sum(layer.size for layer in manifest.layers)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        observer.bytes(done, total)

    for descriptor in (manifest.config, *manifest.layers):
        with (blobs / descriptor.digest.hex).open("wb") as out:
            oci.fetch_blob(ref, descriptor, out, limit=options.blob_limit, progress=progress)
    return (blobs / manifest.config.digest.hex).read_bytes()


def _check_manifest(config: bytes, manifest: Manifest, staged: Path) -> tuple[str, str, str]:
    (staged / pkg.MANIFEST_FILE).write_bytes(config)
    try:
        _raw, document = pkg.read_manifest(staged)
    except (FindingsError, InputError) as exc:
        raise VerificationError(f"the module's AgentPackage manifest is invalid: {exc.message}") from exc
    runtime = document["runtime"]["type"]
    code = [layer for layer in manifest.layers if layer.media_type in pkg.CODE_TYPES]
    wanted = pkg.WASM_TYPE if runtime == "wasm" else pkg.BUNDLE_TYPE
    if len(code) != 1 or code[0].media_type != wanted:
        raise VerificationError(
            f"a {runtime} module needs exactly one {wanted} layer; found {[c.media_type for c in code]}"
        )
    return document["metadata"]["name"], str(document["metadata"]["version"]), runtime


def _unpack_layers(manifest: Manifest, staged: Path, options: InstallOptions) -> dict[str, str]:
    """Unpack the layers into ``staged``; return the files whose SHA-256 is already known."""
    known = {}
    # The wasm file first: a later tar layer can then not replace it (unpack refuses existing names).
    for layer in manifest.layers:
        if layer.media_type == pkg.WASM_TYPE:
            name = _safe_title(layer, "module.wasm")
            _link_or_copy(staged / "blobs" / layer.digest.hex, staged / name)
            if layer.digest.algorithm == "sha256":
                known[name] = layer.digest.hex
    for layer in manifest.layers:
        if layer.media_type in (pkg.BUNDLE_TYPE, pkg.SCHEMAS_TYPE):
            blob = staged / "blobs" / layer.digest.hex
            unpack(blob, staged, what=f"layer {layer.digest}", limits=options.unpack_limits)
    return known


def _link_or_copy(source: Path, target: Path) -> None:
    """The verified blob under its file name: a hard link (no second copy of a large module on disk)
    where the file system allows one, else a copy."""
    if target.exists() or target.is_symlink():
        raise VerificationError(f"{target.name}: two layers claim this file name")
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


def _safe_title(layer: Descriptor, default: str) -> str:
    title = layer.annotations.get("org.opencontainers.image.title", default)
    unsafe = set("/\\\0:") & set(title)
    if not title.endswith(".wasm") or unsafe or title.startswith(".") or len(title) > 128:
        raise VerificationError(f"layer {layer.digest}: unsafe file name {title!r}")
    return title


def _commit(
    store: ModuleStore,
    staged: Path,
    *,
    ref: Reference,
    digest: Digest,
    facts: tuple[str, str, str],
    verification: Verification,
    options: InstallOptions,
    known: dict[str, str],
) -> Installed:
    name, version, runtime = facts
    record = {
        "name": name,
        "version": version,
        "runtime": runtime,
        "ref": str(ref),
        "digest": str(digest),
        "method": verification.method.value,
        "signer": verification.signer,
        "issuer": verification.issuer,
        "rule": verification.rule,
        "sbom": str(verification.sbom_digest) if verification.sbom_digest else None,
        "installedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "installedBy": options.principal,
    }
    record["tree"] = tree_digest(staged, known)
    (staged / "install.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    with store.exclusive():
        lock = store.lock()
        previous = lock.get(name, {}).get("digest")
        before = lock.get(name, {}).get("ref")
        if before and not options.allow_source_change and Reference.parse(before).name != ref.name:
            # Names are chosen by whoever builds a module; a signer trusted for one repository must
            # not silently take over a module that came from another.
            raise ConflictError(
                f"{name} is installed from {Reference.parse(before).name}; this module is from {ref.name}",
                hint="pass --allow-source-change if the module really moved",
            )
        created = store.commit(staged, digest, record["tree"])
        lock[name] = {k: v for k, v in record.items() if k != "tree"}
        event = audit(
            principal=options.principal, action="module.install", target=name, before=previous,
            after=str(digest), outcome="success",
            reason=f"verified: {verification.method.value} {verification.signer}".strip(),
            details={"ref": str(ref), "signer": verification.signer, "issuer": verification.issuer,
                     "method": verification.method.value, "sbom": record["sbom"]},
        )  # fmt: skip
        with store.audited(event):
            store.write_lock(lock)
    return Installed(
        name,
        version,
        str(ref),
        digest,
        verification,
        store.module_dir(digest),
        not created and previous == str(digest),
        previous,
    )


def remove(name: str, store: ModuleStore, *, principal: str | None = None) -> dict[str, Any]:
    """Remove a module from the lock file (and its files, unless another name still uses them)."""
    who = principal or local_principal()
    with store.exclusive():
        lock = store.lock()
        if name not in lock:
            raise NotFound(f"no module named {name!r} is installed", hint="aionctl module list shows them")
        entry = lock.pop(name)
        event = audit(
            principal=who, action="module.remove", target=name, before=entry["digest"], after=None,
            outcome="success",
        )  # fmt: skip
        with store.audited(event):
            store.write_lock(lock)
        digest = Digest.parse(entry["digest"])
        if not any(e.get("digest") == entry["digest"] for e in lock.values()):
            shutil.rmtree(store.module_dir(digest), ignore_errors=True)
    return entry


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    name: str
    digest: str
    ok: bool
    problems: tuple[str, ...]


def verify_installed(
    store: ModuleStore, trust: Trust, config_dir: Path, names: list[str] | None = None
) -> list[Check]:
    """Re-check installed modules, offline: their files are unchanged since install, and the signer
    recorded at install still satisfies the current trust policy."""
    lock = store.lock()
    unknown = [n for n in names or [] if n not in lock]
    if unknown:
        raise NotFound(f"not installed: {', '.join(unknown)}", hint="aionctl module list shows what is")
    checks = []
    for name in names or sorted(lock):
        entry = lock[name]
        problems: list[str] = []
        directory = store.module_dir(Digest.parse(entry["digest"]))
        try:
            recorded = json.loads((directory / "install.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            problems.append(f"{directory} is missing or damaged")
        else:
            if tree_digest(directory) != recorded.get("tree"):
                problems.append("its files changed since it was installed")
            problems.extend(blob_problems(directory))
        problems.extend(_policy_problems(entry, trust, config_dir))
        checks.append(Check(name, entry["digest"], not problems, tuple(problems)))
    return checks


def _policy_problems(entry: dict[str, Any], trust: Trust, config_dir: Path) -> list[str]:
    ref = Reference.parse(entry["ref"])
    method = entry.get("method")
    rule = select_rule(trust, ref)
    if method == Method.UNSAFE_DEV_EXCEPTION.value:
        if not any(e.registry == ref.registry for e in trust.unsafe_dev_registries):
            return ["it was installed unverified through a development exception that no longer exists"]
        return []
    if rule is None:
        return [f"no trust rule covers {ref.name} any more"]
    if method in (Method.SIGSTORE_KEY.value, Method.COSIGN_KEY_LEGACY.value):
        from aion.trust.keys import load_public_key

        if not rule.keys:
            return [f"trust rule {rule.match!r} no longer accepts key signatures"]
        fingerprints: set[str] = set()
        unreadable: list[str] = []
        for key in rule.keys:  # relative to the config directory and confined, like at install
            try:
                path = trust_key_file(key, config_dir, trust.key_roots)
                fingerprints.add(load_public_key(path).fingerprint)
            except (InputError, VerificationError) as exc:
                unreadable.append(exc.message)
        if entry.get("signer") not in fingerprints:
            # Fail closed: a key that cannot be read cannot vouch for the module.
            return [
                f"its signer {entry.get('signer')} is not among the keys of trust rule {rule.match!r}",
                *unreadable,
            ]
    if method == Method.SIGSTORE_KEYLESS.value:
        from aion.trust.keyless import subject_matches

        if not any(
            i.issuer == entry.get("issuer") and subject_matches(i.subject, str(entry.get("signer", "")))
            for i in rule.identities
        ):
            return [
                f"its signer {entry.get('signer')} is not among the identities of trust rule {rule.match!r}"
            ]
    if (rule.require_sbom or trust.require_sbom) and not entry.get("sbom"):
        return ["the trust policy now requires an SBOM, and none was recorded at install"]
    return []


__all__ = ["Check", "InstallOptions", "Installed", "install", "load_trust", "remove", "verify_installed"]
