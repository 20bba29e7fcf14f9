"""ModuleService: the daemon's side of the module supply chain.

It runs the same pipeline as ``aionctl install`` (:mod:`aion.modules.install`), on the daemon's module
store and under the trust policy of the active policy version, so a module installed through the
API is verified exactly as one installed from a shell. Installs run in a worker thread; the store's
file lock serialises them with each other and with a concurrent ``aionctl install`` on the same store.

Refusals reach the caller through the error table (:mod:`aion.errors`), as the contract says: a failed
signature, identity or content check is PERMISSION_DENIED, a missing required SBOM or an unusable
trust policy FAILED_PRECONDITION, a registry that cannot be reached UNAVAILABLE, an unknown module
NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import timestamp_pb2

from aion.api.v1 import common_pb2, modules_pb2, modules_pb2_grpc
from aion.config.model import ConfigSnapshot, Trust
from aion.errors import Error, NotFound, UsageError
from aion.eventlog import EventSink
from aion.inputs import quoted
from aion.modules.store import ModuleStore
from aion.oci.model import Digest
from aiond.execution.modules import Modules
from aiond.security.auth import current_principal
from aiond.serving.services.paging import page

MAX_PARALLELISM = 1024
"""The most calls a module may be allowed at once (modules.yml's ``parallelism`` has the same cap)."""
SERVICE_NAME = modules_pb2.DESCRIPTOR.services_by_name["ModuleService"].full_name

_RUNTIMES = {"wasm": modules_pb2.MODULE_RUNTIME_WASM, "subprocess": modules_pb2.MODULE_RUNTIME_SUBPROCESS}
_METHODS = {
    "cosign-key-legacy": modules_pb2.VERIFICATION_METHOD_COSIGN_KEY_LEGACY,
    "sigstore-keyless": modules_pb2.VERIFICATION_METHOD_SIGSTORE_KEYLESS,
    "sigstore-key": modules_pb2.VERIFICATION_METHOD_SIGSTORE_KEY,
    "unsafe-dev-exception": modules_pb2.VERIFICATION_METHOD_UNSAFE_DEV_EXCEPTION,
}


class ModuleServicer(modules_pb2_grpc.ModuleServiceServicer):
    def __init__(
        self,
        store_dir: Path,
        config_dir: Path,
        plain_http: frozenset[str],
        *,
        events: EventSink,
        trust: Callable[[], Trust | None] | None = None,
        runner: Modules | None = None,
        snapshot: Callable[[], ConfigSnapshot | None] | None = None,
    ) -> None:
        self._active_trust = trust
        self._runner = runner
        self._snapshot = snapshot or (lambda: None)
        self._store = ModuleStore(store_dir, events=events)  # installs and removals: the daemon's sink
        self._config_dir = config_dir
        self._plain_http = plain_http

    async def _trust(self) -> Trust:
        """The trust policy of the active policy version (what the daemon runs under), else the
        config directory's. Relative key paths resolve against the config directory either way."""
        active = self._active_trust() if self._active_trust is not None else None
        if active is not None:
            return active
        from aion.modules.install import load_trust  # the install pipeline loads when it is used

        return await asyncio.to_thread(load_trust, self._config_dir)

    async def ListModules(
        self, request: modules_pb2.ListModulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> modules_pb2.ListModulesResponse:
        lock = await asyncio.to_thread(self._store.lock)
        chosen, token = page(
            lock.items(), lambda item: item[0], size=request.page_size, token=request.page_token
        )
        return modules_pb2.ListModulesResponse(
            modules=[self._module(name, entry) for name, entry in chosen], next_page_token=token
        )

    async def GetModule(
        self, request: modules_pb2.GetModuleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> modules_pb2.GetModuleResponse:
        entry = (await asyncio.to_thread(self._store.lock)).get(request.name)
        if entry is None:
            raise NotFound(f"no module named {quoted(request.name)} is installed")
        manifest = self._manifest_bytes(entry)
        return modules_pb2.GetModuleResponse(module=self._module(request.name, entry), manifest=manifest)

    async def InstallModule(
        self, request: modules_pb2.InstallModuleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> modules_pb2.InstallModuleResponse:
        if not request.ref.strip():
            raise UsageError("ref is required")
        from aion.modules.install import InstallOptions, install

        trust = await self._trust()
        options = InstallOptions(
            trust=trust,
            config_dir=self._config_dir,
            plain_http=self._plain_http,
            principal=current_principal.get().name,
            dry_run=request.dry_run,
        )
        done = await asyncio.to_thread(install, request.ref, self._store, options)
        if self._runner is not None and not request.dry_run:
            await self._runner.refresh()
        if request.dry_run:
            dry = self._module(done.name, done.entry())
            return modules_pb2.InstallModuleResponse(module=dry, unchanged=True)
        entry = (await asyncio.to_thread(self._store.lock))[done.name]
        return modules_pb2.InstallModuleResponse(
            module=self._module(done.name, entry), unchanged=done.unchanged
        )

    async def VerifyModules(
        self, request: modules_pb2.VerifyModulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> modules_pb2.VerifyModulesResponse:
        from aion.modules.install import verify_installed

        trust = await self._trust()
        checks = await asyncio.to_thread(
            verify_installed, self._store, trust, self._config_dir, list(request.names) or None
        )
        lock = await asyncio.to_thread(self._store.lock)
        results: list[modules_pb2.ModuleVerification] = []
        findings: list[common_pb2.Finding] = []
        for check in checks:
            verification = self._verification(lock.get(check.name, {}))
            verification.verified = check.ok
            verification.problems.extend(check.problems)
            verification.verified_at.FromDatetime(dt.datetime.now(dt.UTC))
            results.append(
                modules_pb2.ModuleVerification(
                    name=check.name, digest=check.digest, verification=verification
                )
            )
            findings.extend(
                common_pb2.Finding(
                    severity=common_pb2.SEVERITY_ERROR,
                    message=f"module {check.name}: {problem}",
                    hint="reinstall it from a trusted signer, or remove it",
                )
                for problem in check.problems
            )
        return modules_pb2.VerifyModulesResponse(results=results, findings=findings)

    async def RemoveModule(
        self, request: modules_pb2.RemoveModuleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> modules_pb2.RemoveModuleResponse:
        from aion.modules.install import remove

        entry = await asyncio.to_thread(
            remove, request.name, self._store, principal=current_principal.get().name
        )
        if self._runner is not None:
            await self._runner.refresh()
        return modules_pb2.RemoveModuleResponse(removed=self._module(request.name, entry))

    async def SetModuleParallelism(
        self, request: modules_pb2.SetModuleParallelismRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> modules_pb2.SetModuleParallelismResponse:
        if self._runner is None:  # pragma: no cover - the daemon always passes its runner
            raise UsageError("this server runs no modules")
        if not 1 <= request.parallelism <= MAX_PARALLELISM:
            raise UsageError(
                f"parallelism must be between 1 and {MAX_PARALLELISM}, not {request.parallelism}",
                hint="to stop a module's traffic, open its breaker: aionctl breaker open module:NAME",
            )
        if not request.reason.strip():
            raise UsageError("a reason is required", hint="pass --reason: it goes into the audit trail")
        snapshot = self._snapshot()
        spec = snapshot.modules.get(request.name) if snapshot is not None else None
        _new, previous = await self._runner.set_parallelism(
            spec, request.name, request.parallelism, principal=current_principal.get().name,
            reason=request.reason.strip()[:1024],
        )  # fmt: skip
        entry = (await asyncio.to_thread(self._store.lock)).get(request.name)
        module = (
            self._module(request.name, entry) if entry is not None else modules_pb2.Module(name=request.name)
        )
        module.parallelism = request.parallelism
        return modules_pb2.SetModuleParallelismResponse(module=module, previous_parallelism=previous)

    # -- messages ----------------------------------------------------------------------------------

    def _manifest_bytes(self, entry: dict[str, Any]) -> bytes:
        try:
            return (self._store.module_dir(Digest.parse(entry["digest"])) / "agent.yaml").read_bytes()
        except (OSError, KeyError, Error):
            return b""

    def _module(self, name: str, entry: dict[str, Any]) -> modules_pb2.Module:
        manifest: dict[str, Any] = {}
        raw = self._manifest_bytes(entry)
        if raw:
            try:
                loaded = yaml.safe_load(raw)
            except yaml.YAMLError:
                loaded = None
            manifest = loaded if isinstance(loaded, dict) else {}
        intents = manifest.get("intents")
        policies = manifest.get("policies")
        timeout = policies.get("timeout_ms", 0) if isinstance(policies, dict) else 0
        state = modules_pb2.MODULE_STATE_READY
        parallelism = 0
        if self._runner is not None:
            state = (
                modules_pb2.MODULE_STATE_READY
                if name in self._runner.runnable
                else modules_pb2.MODULE_STATE_UNTRUSTED
            )
            snapshot = self._snapshot()
            spec = snapshot.modules.get(name) if snapshot is not None else None
            parallelism = self._runner.limit(spec) if spec is not None else 0
        module = modules_pb2.Module(
            name=name,
            version=str(entry.get("version", "")),
            ref=str(entry.get("ref", "")),
            digest=str(entry.get("digest", "")),
            runtime=_RUNTIMES.get(str(entry.get("runtime", "")), modules_pb2.MODULE_RUNTIME_UNSPECIFIED),
            state=state,
            parallelism=parallelism,
            intents=[str(i) for i in intents] if isinstance(intents, list) else [],
            timeout_ms=timeout if isinstance(timeout, int) and timeout >= 0 else 0,
            verification=self._verification(entry),
        )
        installed = _timestamp(entry.get("installedAt"))
        if installed is not None:
            module.installed_at.CopyFrom(installed)
        return module

    @staticmethod
    def _verification(entry: dict[str, Any]) -> modules_pb2.Verification:
        verification = modules_pb2.Verification(
            verified=entry.get("method") in _METHODS and entry.get("method") != "unsafe-dev-exception",
            method=_METHODS.get(str(entry.get("method")), modules_pb2.VERIFICATION_METHOD_UNSPECIFIED),
            signer=str(entry.get("signer") or ""),
            issuer=str(entry.get("issuer") or ""),
            sbom_present=bool(entry.get("sbom")),
            sbom_digest=str(entry.get("sbom") or ""),
        )
        installed = _timestamp(entry.get("installedAt"))
        if installed is not None:
            verification.verified_at.CopyFrom(installed)
        return verification


def _timestamp(text: Any) -> timestamp_pb2.Timestamp | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def add_to_server(
    server: grpc.aio.Server,
    store_dir: Path,
    config_dir: Path,
    plain_http: frozenset[str],
    *,
    events: EventSink,
    trust: Callable[[], Trust | None] | None = None,
    runner: Modules | None = None,
    snapshot: Callable[[], ConfigSnapshot | None] | None = None,
) -> str:
    modules_pb2_grpc.add_ModuleServiceServicer_to_server(
        ModuleServicer(
            store_dir, config_dir, plain_http, events=events, trust=trust, runner=runner, snapshot=snapshot
        ),
        server,
    )
    return SERVICE_NAME
