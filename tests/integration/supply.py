"""Shared pieces of the module supply-chain tests: module directories, trust policies, signatures made
by the real cosign, and a snapshot of a module store to prove a refused install changed nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from aion import schemas
from tests.rig.services import GoTools

WASM = b"\0asm\x01\0\0\0"
"""The smallest valid WebAssembly module (magic and version, no sections)."""


def write_module(
    root: Path,
    *,
    name: str = "summarize_text",
    version: str = "1.3.0",
    wasm: bytes = WASM,
    schemas: bool = True,
) -> Path:
    """A wasm module directory as users keep it: agent.yaml, the .wasm file, its I/O schemas."""
    root.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "apiVersion": "aionos/v1",
        "kind": "AgentPackage",
        "metadata": {"name": name, "version": version, "license": "Apache-2.0"},
        "runtime": {"type": "wasm", "wasi": True},
        "permissions": {"filesystem": "read-only", "network": "deny"},
        "intents": ["summarize"],
    }
    if schemas:
        (root / "schemas").mkdir(exist_ok=True)
        for side in ("input", "output"):
            (root / "schemas" / f"{side}.json").write_text(json.dumps({"type": "object", "title": side}))
        manifest["entrypoints"] = {"schema": {"input": "schemas/input.json", "output": "schemas/output.json"}}
    (root / "agent.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / f"{name}.wasm").write_bytes(wasm)
    return root


def write_sbom(path: Path, name: str = "summarize_text") -> Path:
    path.write_text(
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "version": 1,
                "components": [{"type": "library", "name": name, "version": "1.3.0"}],
            }
        )
    )
    return path


def write_trust(config: Path, trust: dict[str, Any]) -> Path:
    """A config directory whose policies.yml holds just this trust policy."""
    config.mkdir(parents=True, exist_ok=True)
    (config / "policies.yml").write_text(yaml.safe_dump({"trust": trust}, sort_keys=False))
    return config


@dataclasses.dataclass(frozen=True)
class Signer:
    """A cosign key pair made by ``cosign generate-key-pair``, and signing with the real cosign."""

    tools: GoTools
    key: Path
    pub: Path

    def sign(self, image: str, *, bundle: bool = True) -> None:
        """Sign ``image`` (registry/repo@sha256:...) without a transparency log, so it works offline:
        a Sigstore bundle referrer (cosign v3's default), or the legacy ``sha256-<hex>.sig`` tag."""
        args = [
            "sign",
            "--key",
            str(self.key),
            "--tlog-upload=false",
            "--use-signing-config=false",
            "--allow-http-registry",
            "-y",
        ]
        if not bundle:
            args.append("--new-bundle-format=false")
        self.tools.run("cosign", *args, image, env=cosign_env(self.key.parent), timeout=120)

    def verify(self, image: str, *, bundle: bool = True) -> str:
        """``cosign verify`` with this key; returns its stdout (the verified payloads)."""
        args = ["verify", "--key", str(self.pub), "--insecure-ignore-tlog=true", "--allow-http-registry"]
        if not bundle:
            args.append("--new-bundle-format=false")
        return self.tools.run("cosign", *args, image, env=cosign_env(self.key.parent), timeout=120).stdout


def cosign_env(home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSIGN_", "SIGSTORE_", "TUF_"))}
    env.update({"COSIGN_PASSWORD": "", "HOME": str(home), "SIGSTORE_NO_CACHE": "true"})
    return env


def make_signer(tools: GoTools, directory: Path) -> Signer:
    directory.mkdir(parents=True, exist_ok=True)
    tools.run("cosign", "generate-key-pair", env=cosign_env(directory), cwd=directory)
    return Signer(tools, directory / "cosign.key", directory / "cosign.pub")


def snapshot(store: Path) -> dict[str, Any]:
    """What a refused install must not change: the lock file's bytes and the installed modules."""
    lock = store / "aion.lock"
    modules = store / "modules"
    return {
        "lock": lock.read_bytes() if lock.exists() else None,
        "modules": sorted(str(p.relative_to(modules)) for p in modules.rglob("*"))
        if modules.exists()
        else [],
        "staging": sorted(p.name for p in (store / ".staging").iterdir())
        if (store / ".staging").exists()
        else [],
    }


def quarantine_reasons(store: Path) -> list[dict[str, Any]]:
    directory = store / "quarantine"
    if not directory.exists():
        return []
    return [
        conforms(json.loads(p.read_text()), "store/quarantine-reason")
        for p in sorted(directory.glob("*/reason.json"))
    ]


def audit_events(store: Path) -> list[dict[str, Any]]:
    path = store / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def conforms(document: Any, schema: str) -> Any:
    """``document``, after checking it against the named aion schema (the documented shape)."""
    jsonschema.validate(document, schemas.load(schema), format_checker=jsonschema.FormatChecker())
    return document
