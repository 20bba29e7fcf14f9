"""Modules run as targets of the router, through a real aiond: real WASM modules compiled from C,
pushed to a real registry, signed by the real cosign, installed through ModuleService, then called by
tasks. Misbehaving modules are contained (the daemon keeps answering, other tasks are unaffected),
secrets reach a module only as its manifest declares and never leave it, a module whose files
changed is not run, and parallelism holds, also when changed at run time."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aion.api.v1 import modules_pb2, modules_pb2_grpc
from tests.integration.supply import Signer, make_signer, write_sbom
from tests.rig import wasm
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.services import GoTools, OciRegistry

CANARY = "canary-5f0c2e9a-do-not-print"
"""The value of the secret PROBE_KEY: it must never appear in any output."""

# name -> (source, extra modules.yml settings, manifest secrets)
PROBES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "probe_loop": ("loop.c", {"timeout_ms": 300, "limits": {"fuel": 10**12}}, []),
    "probe_burn": ("burn.c", {"timeout_ms": 5000, "limits": {"fuel": 2_000_000}}, []),
    "probe_membomb": ("membomb.c", {"limits": {"memory": "16Mi"}}, []),
    "probe_badptr": ("badptr.c", {}, []),
    "probe_hugeout": ("hugeout.c", {}, []),
    "probe_exit3": ("exit3.c", {}, []),
    "probe_trap": ("trap.c", {}, []),
    "probe_badjson": ("badjson.c", {}, []),
    "probe_slow": ("probe_slow.c", {"timeout_ms": 3000, "parallelism": 2, "queue_depth": 2}, []),
    "probe_secret": ("probe_secret.c", {}, ["PROBE_KEY", "PROBE_OPTIONAL?"]),
}
EXPECTED_FAILURE = {
    "probe_loop": "MODULE_TIMEOUT",
    "probe_burn": "MODULE_FUEL",
    "probe_membomb": "MODULE_OOM",
    "probe_badptr": "MODULE_TRAP",
    "probe_hugeout": "MODULE_BAD_OUTPUT",
    "probe_exit3": "MODULE_CRASH",
    "probe_trap": "MODULE_TRAP",
    "probe_badjson": "MODULE_BAD_OUTPUT",
}
PARAGRAPH = (
    "The storage cluster lost power in the east data hall at 02:10. Generators started within a minute. "
    "Two racks stayed dark because their transfer switch failed. The on-call engineer moved the "
    "affected volumes to the west hall, and replication caught up by 03:05. No data was lost. "
    "The faulty transfer switch will be replaced on Thursday. Cafeteria menus were updated as usual. "
    "A review of transfer switch maintenance is scheduled for next week."
)


def _module_dir(root: Path, name: str, wasm_file: Path, secrets: list[str]) -> Path:
    root.mkdir(parents=True)
    shutil.copy(wasm_file, root / f"{name}.wasm")
    manifest = {
        "apiVersion": "aionos/v1",
        "kind": "AgentPackage",
        "metadata": {"name": name, "version": "1.0.0", "license": "Apache-2.0"},
        "runtime": {"type": "wasm", "wasi": True},
        "permissions": {"filesystem": "none", "network": "deny", "secrets": secrets},
        "intents": [name],
    }
    (root / "agent.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def _publish(registry: OciRegistry, signer: Signer, directory: Path, sbom: Path) -> str:
    repo = f"{registry.host}/run/{directory.name}-{uuid.uuid4().hex[:6]}"
    pushed = aionctl(
        "module", "push", str(directory), f"{repo}:1", "--plain-http", "--sbom", str(sbom), "-o", "json"
    )
    assert pushed.returncode == 0, pushed.stderr
    signer.sign(f"{repo}@{json.loads(pushed.stdout)['digest']}")
    return f"{repo}:1"


@pytest.fixture(scope="module")
def daemon(
    go_tools: GoTools, oci_registry: OciRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Aiond]:
    """aiond on the example config plus one local-only intent per probe module, with the example
    summarize_text and every probe installed and verified."""
    wasm.require_toolchain()
    tmp = tmp_path_factory.mktemp("modules-run")
    signer = make_signer(go_tools, tmp / "signer")
    config = tmp / "config"
    shutil.copytree(EXAMPLES, config, ignore=shutil.ignore_patterns("modules"))
    intents = yaml.safe_load((config / "intents.yml").read_text())
    modules = yaml.safe_load((config / "modules.yml").read_text())
    policies = yaml.safe_load((config / "policies.yml").read_text())
    for name, (_source, extra, _secrets) in PROBES.items():
        intents[name] = {"default_route": "local", "candidates": ["local"], "privacy": "local-only"}
        modules["modules"].append({"name": name, "ref": f"example.org/{name}:1", "intents": [name],
                                   "routes": ["local"], **extra})  # fmt: skip
    policies["trust"]["rules"].insert(0, {"match": f"{oci_registry.host}/run/**", "keys": [str(signer.pub)]})
    for file, document in (("intents.yml", intents), ("modules.yml", modules), ("policies.yml", policies)):
        (config / file).write_text(yaml.safe_dump(document, sort_keys=False))
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "PROBE_KEY").write_text(CANARY)
    sbom = write_sbom(tmp / "sbom.json")
    refs = [
        _publish(oci_registry, signer, EXAMPLES / "modules" / name, sbom)
        for name in ("summarize_text", "invoice_fields")
    ]
    for name, (source, _extra, declared) in PROBES.items():
        built = wasm.build(wasm.FIXTURES / source)
        refs.append(_publish(oci_registry, signer, _module_dir(tmp / name, name, built, declared), sbom))
    aiond = Aiond(
        tmp,
        config_dir=config,
        extra_args=["--registry-plain-http", oci_registry.host, "--trust-keys-dir", str(signer.pub.parent),
                    "--secrets-dir", str(secrets)],
    )  # fmt: skip
    aiond.start()
    with aiond.channel() as channel:
        stub = modules_pb2_grpc.ModuleServiceStub(channel)
        for ref in refs:
            stub.InstallModule(modules_pb2.InstallModuleRequest(ref=ref), timeout=60)
    yield aiond
    aiond.stop()


def submit(daemon: Aiond, intent: str, text: str, *extra: str) -> dict[str, Any]:
    done = aionctl("task", "submit", intent, "--text", text, "--wait", *extra, "-o", "json",
                   env=daemon.aionctl_env("operator"), timeout=60)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    task: dict[str, Any] = json.loads(done.stdout)
    return task


def healthy(daemon: Aiond) -> bool:
    with urllib.request.urlopen(f"http://{daemon.http_addr}/healthz", timeout=2) as response:
        return bool(response.status == 200)


def first_attempt(task: dict[str, Any]) -> dict[str, Any]:
    attempt: dict[str, Any] = task["attempts"][0]
    return attempt


def test_a_signed_wasm_module_answers_a_task_on_the_local_route(daemon: Aiond) -> None:
    task = submit(daemon, "summarize", PARAGRAPH, "--route", "local")
    assert task["status"] == "ok", task
    attempt = first_attempt(task)
    assert attempt["target"]["kind"] == "module"
    assert attempt["target"]["name"] == "summarize_text"
    assert attempt["outcome"] == "ok"
    summary = task["result"]["text"]
    assert 0 < len(summary) < len(PARAGRAPH)
    assert "transfer switch" in summary  # the sentences about what happened are kept
    assert "Cafeteria" not in summary


def test_a_module_answers_an_openai_client_like_any_model(daemon: Aiond) -> None:
    """The summarize intent on the local route, asked through aiond's OpenAI-compatible endpoint with
    the openai SDK: the WASM module's answer is an ordinary chat completion, plain or streamed."""
    import openai

    with openai.OpenAI(
        base_url=f"http://{daemon.http_addr}/v1", api_key=daemon.tokens["operator"], max_retries=0
    ) as api:
        raw = api.chat.completions.with_raw_response.create(
            model="summarize",
            messages=[{"role": "user", "content": PARAGRAPH}],
            extra_body={"aion": {"route": "local"}},
        )
        answer = raw.parse()
        assert raw.headers["x-aion-target"] == "module:summarize_text"
        assert raw.headers["x-aion-route"] == "local"
        summary = answer.choices[0].message.content
        assert summary is not None
        assert "transfer switch" in summary
        assert "Cafeteria" not in summary
        streamed = api.chat.completions.create(
            model="summarize",
            messages=[{"role": "user", "content": PARAGRAPH}],
            stream=True,
            extra_headers={"x-aion-route": "local"},
        )
        pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert "".join(pieces) == summary


INVOICE = """ACME Tooling GmbH
Rechnung / Invoice
Invoice No.: INV-2026-0042
Date: 2026-11-30
Subtotal: 100.00 EUR
VAT 19%: 19.00 EUR
Amount due: 119.00 EUR
"""


def test_a_signed_subprocess_module_answers_in_its_sandbox(daemon: Aiond) -> None:
    task = submit(daemon, "invoice_ocr", INVOICE, "--route", "local")
    assert task["status"] == "ok", task["attempts"]
    attempt = first_attempt(task)
    assert (attempt["target"]["name"], attempt["outcome"]) == ("invoice_fields", "ok")
    fields = json.loads(task["result"]["text"])
    assert fields["invoice_number"] == "INV-2026-0042"
    assert (fields["total"], fields["currency"], fields["date"]) == ("119.00", "EUR", "2026-11-30")
    declined = submit(daemon, "invoice_ocr", "just some words", "--route", "local")
    assert first_attempt(declined)["error"]["code"] == "MODULE_DECLINED"


@pytest.mark.parametrize("probe", sorted(EXPECTED_FAILURE))
def test_misbehaviour_is_contained_and_named(daemon: Aiond, probe: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bad = pool.submit(submit, daemon, probe, "x")
        good = pool.submit(submit, daemon, "summarize", PARAGRAPH, "--route", "local")
        while not bad.done():
            assert healthy(daemon)
            time.sleep(0.05)
        failed, answered = bad.result(), good.result()
    attempt = first_attempt(failed)
    assert attempt["target"]["name"] == probe
    assert attempt["error"]["code"] == EXPECTED_FAILURE[probe], attempt
    assert answered["status"] == "ok", "another task is unaffected"
    assert healthy(daemon)


def test_the_timeout_ends_an_endless_loop_within_its_limit(daemon: Aiond) -> None:
    started = time.monotonic()
    task = submit(daemon, "probe_loop", "x")
    attempt = first_attempt(task)
    assert attempt["error"]["code"] == "MODULE_TIMEOUT"
    assert 300 <= attempt["latencyMs"] < 1500
    assert time.monotonic() - started < 10


def test_secrets_are_granted_as_declared_and_never_leave_the_module(daemon: Aiond) -> None:
    declared = submit(daemon, "probe_secret", "rc:PROBE_KEY")
    assert declared["result"]["text"] == str(len(CANARY))
    assert submit(daemon, "probe_secret", "rc:UNDECLARED")["result"]["text"] == "-1"
    assert submit(daemon, "probe_secret", "rc:PROBE_OPTIONAL")["result"]["text"] == "-2"
    leaked = submit(daemon, "probe_secret", "leak:PROBE_KEY")
    assert leaked["status"] == "ok"
    assert leaked["result"]["text"] == "[redacted]"
    time.sleep(0.5)  # the event journal writes in batches
    events = aionctl("events", "tail", "-n", "200", "-o", "json", env=daemon.aionctl_env("viewer"))
    log = (daemon.workdir / "aiond.log").read_text()
    for text in (json.dumps(leaked), events.stdout, events.stderr, log):
        assert CANARY not in text


def test_a_required_secret_without_a_value_means_the_module_never_starts(
    daemon: Aiond, tmp_path: Path
) -> None:
    key = daemon.workdir / "secrets" / "PROBE_KEY"
    key.unlink()
    try:
        task = submit(daemon, "probe_secret", "rc:PROBE_KEY")
    finally:
        key.write_text(CANARY)
    attempt = first_attempt(task)
    assert attempt["error"]["code"] == "MODULE_SECRET"
    assert "PROBE_KEY" in attempt["error"]["message"]
    assert submit(daemon, "probe_secret", "rc:PROBE_KEY")["result"]["text"] == str(len(CANARY)), "rotation"


def overlap(tasks: list[dict[str, Any]]) -> int:
    """The most calls that ran at the same moment, from the times the module reported."""
    moments = []
    for task in tasks:
        started, ended = (int(x) for x in task["result"]["text"].split())
        moments += [(started, 1), (ended, -1)]
    running = peak = 0
    for _moment, step in sorted(moments, key=lambda m: (m[0], m[1])):
        running += step
        peak = max(peak, running)
    return peak


def test_parallelism_holds_refuses_past_the_queue_and_changes_at_run_time(daemon: Aiond) -> None:
    env = daemon.aionctl_env("operator")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _i: submit(daemon, "probe_slow", "400"), range(4)))
    assert all(t["status"] == "ok" for t in results)
    assert overlap(results) == 2

    # Slots 2 and queue 2 full: a fifth task at once is refused with a retry hint, and not admitted.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        waiting = [pool.submit(submit, daemon, "probe_slow", "1500") for _ in range(4)]
        time.sleep(0.5)
        refused = aionctl("task", "submit", "probe_slow", "--text", "10", "-o", "json", env=env)
        for future in waiting:
            future.result()
    assert refused.returncode == 5, refused.stderr
    assert "probe_slow is at its parallelism" in refused.stderr

    changed = aionctl("module", "parallelism", "probe_slow", "1", "--reason", "incident drill", env=env)
    assert changed.returncode == 0, changed.stderr
    assert "probe_slow: parallelism 2 -> 1" in changed.stdout
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _i: submit(daemon, "probe_slow", "300"), range(3)))
    assert overlap(results) == 1
    listed = json.loads(aionctl("module", "status", "-o", "json", env=env).stdout)
    assert {m["name"]: m["parallelism"] for m in listed["modules"]}["probe_slow"] == 1
    viewer = aionctl(
        "module", "parallelism", "probe_slow", "4", "--reason", "x", env=daemon.aionctl_env("viewer")
    )
    assert viewer.returncode == 4, "role operator is required"
    restored = aionctl("module", "parallelism", "probe_slow", "2", "--reason", "drill over", env=env)
    assert restored.returncode == 0, restored.stderr


def test_a_module_whose_files_changed_after_install_is_not_run(daemon: Aiond) -> None:
    lock = json.loads((daemon.state_dir / "modules" / "aion.lock").read_text())
    digest = lock["modules"]["probe_exit3"]["digest"].removeprefix("sha256:")
    code = daemon.state_dir / "modules" / "modules" / "sha256" / digest / "probe_exit3.wasm"
    original = code.read_bytes()
    code.write_bytes(original + b"\0")
    task = submit(daemon, "probe_exit3", "x")
    attempt = first_attempt(task)
    assert attempt["error"]["code"] == "MODULE_UNAVAILABLE", attempt
    assert "changed since it was installed" in attempt["error"]["message"]
    listed = json.loads(aionctl("module", "status", "-o", "json", env=daemon.aionctl_env("viewer")).stdout)
    assert {m["name"]: m["state"] for m in listed["modules"]}["probe_exit3"] == "untrusted"
    explained = aionctl("route", "explain", "probe_exit3", "-o", "json", env=daemon.aionctl_env("viewer"))
    assert "module:probe_exit3" not in json.dumps(json.loads(explained.stdout).get("decision", {}))
