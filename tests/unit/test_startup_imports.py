"""What aiond loads before it serves: every test daemon, and every real start, pays for each module.

The server module must not load what only some requests or some configurations use (the module
install pipeline and its cryptography, the backup format, Kafka, WebAssembly, tracing exporters,
Vault), and the validation worker, which every start waits for, must not load asyncio. Each check
runs in a fresh interpreter and looks at ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.rig.daemon import EXAMPLES, REPO

NOT_FOR_EVERY_START = (
    "aion.modules.install",  # InstallModule, VerifyModules, RemoveModule; a store with modules in it
    "aion.trust.verify",
    "aion.trust.keys",
    "aion.trust.keyless",
    "cryptography",
    "aion.backup",  # the first snapshot (--backup-dir, CreateBackup)
    "tarfile",
    "confluent_kafka",  # --kafka-config
    "wasmtime",  # wasm modules
    "opentelemetry",  # traces on
    "sigstore",
    "hvac",  # --secrets-backend vault
    "rich",
    "jsonschema",
)

DAEMON = ("asyncio", "grpc", "aiohttp", "yaml", "google.protobuf", "prometheus_client", "cryptography")


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are in sys.modules after ``code`` runs in a new interpreter."""
    script = (
        f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True, cwd=REPO
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_the_server_module_loads_nothing_that_only_some_starts_use() -> None:
    assert _loaded("import aiond.serving.server", NOT_FOR_EVERY_START) == []


def test_settings_are_built_without_the_daemon() -> None:
    code = "from aiond import settings\nsettings.load({'config_dir': '/srv/aion'}, {})"
    assert _loaded(code, DAEMON) == []


def test_the_validation_worker_loads_no_asyncio() -> None:
    # A real validation in the real worker process, then the worker's own sys.modules.
    code = f"""
import asyncio
from pathlib import Path
from aion.config.validate import Source
from aion.config.yamlload import Limits
from aiond.policy.validation import Validator

examples = Path({str(EXAMPLES)!r})
sources = [Source(p.name, p.read_bytes(), explicit=False) for p in sorted(examples.glob("*.yml"))]
validator = Validator(processes=True)
report = asyncio.run(validator.validate(sources, set_name="examples", base_dir=examples, limits=Limits()))
assert report.snapshot is not None, report.findings
worker = validator._executor().submit(eval, "sorted(__import__('sys').modules)").result(timeout=60)
validator.close()
print(__import__("json").dumps([m for m in worker if m.split(".")[0] == "asyncio"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, cwd=REPO
    )
    assert json.loads(result.stdout.splitlines()[-1]) == []
