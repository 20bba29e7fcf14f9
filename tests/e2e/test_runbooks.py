"""The shipped runbooks (examples/runbooks/) run green against a real aiond, with a real stand-in
provider behind it; broken at a chosen step, each stops there, reports it, and resumes with --from;
the release runbook's canary rolls back when the provider starts failing."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.e2e.test_tasks import start, submit
from tests.integration.supply import conforms
from tests.rig import providers as behave
from tests.rig.daemon import REPO, Aiond, aionctl, program
from tests.rig.procs import free_port
from tests.rig.providers import StandIn

RUNBOOKS = REPO / "examples" / "runbooks"


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, stand_in: StandIn) -> Iterator[Aiond]:
    d = start(tmp_path, stand_in)
    yield d
    d.stop()


def env(daemon: Aiond, tmp_path: Path) -> dict[str, str]:
    return {
        **daemon.aionctl_env("admin"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
        "AIOND_SECRETS_DIR": str(tmp_path / "secrets"),
        "HOME": str(tmp_path / "home"),
    }


def variables(name: str, daemon: Aiond) -> list[str]:
    """The --var flags each shipped runbook needs to run against the test daemon."""
    config = str(daemon.config_dir)
    given = {
        "secrets": {"config": config},
        "policy": {"config": config},
        "incident": {"provider": "openai", "intent": "summarize", "module": "", "reason": "runbook-test"},
        "incident-revert": {"provider": "openai", "intent": "summarize"},
        "modules": {"local_intent": "summarize", "api_intent": "summarize"},
        "compliance": {"store": str(daemon.workdir / "no-modules")},
        "disaster-recovery": {
            "config": config,
            "aiond": program("aiond"),
            "grpc": f"127.0.0.1:{free_port()}",
            "http": f"127.0.0.1:{free_port()}",
        },
    }.get(name, {})
    return [w for key, value in given.items() for w in ("--var", f"{key}={value}")]


# Runbooks that need a service the plain daemon does not have: kafka (a broker: the Kafka tests
# cover its commands), release (a prepared config version: test_release_rolls_back... below).
GREEN = ["bootstrap", "secrets", "policy", "observability", "incident", "incident-revert", "modules",
         "compliance", "disaster-recovery"]  # fmt: skip


def run(daemon: Aiond, tmp_path: Path, *args: str, timeout: float = 120) -> Any:
    return aionctl("runbook", "run", *args, env=env(daemon, tmp_path), timeout=timeout)


def report(tmp_path: Path, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((tmp_path / "xdg" / "aion" / "runbooks" / f"{name}.json").read_text())
    return doc


def test_every_shipped_runbook_validates_clean() -> None:
    result = aionctl("validate", "--fail-on-warn", str(RUNBOOKS))
    assert result.returncode == 0, result.stdout + result.stderr
    listed = aionctl("runbook", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    names = {r["name"] for r in json.loads(listed.stdout)["runbooks"]}
    assert set(GREEN) | {"kafka", "release"} <= names


@pytest.mark.parametrize("name", GREEN)
def test_a_shipped_runbook_runs_green_against_aiond(name: str, daemon: Aiond, tmp_path: Path) -> None:
    result = run(daemon, tmp_path, name, "--yes", *variables(name, daemon), "-o", "json")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    doc = conforms(json.loads(result.stdout), "output/runbook-report")
    assert doc["status"] == "passed"
    assert doc["failedStep"] is None
    assert all(s["status"] in ("passed", "skipped") for s in doc["steps"]), doc["steps"]
    assert any(s["status"] == "passed" for s in doc["steps"])
    assert report(tmp_path, doc["runbook"]["name"])["runId"] == doc["runId"]  # the report on disk


def _break(source: Path, target: Path, at: int) -> str:
    """``source`` copied to ``target`` with an impossible check added to its ``at``-th step; the step's
    name."""
    book = yaml.safe_load(source.read_text())
    step = book["steps"][at]
    step.setdefault("check", []).append(
        {"pointer": "/no/such/value", "exists": True, "message": "broken on purpose"}
    )
    target.write_text(yaml.safe_dump(book, sort_keys=False))
    return str(step["name"])


@pytest.mark.parametrize("name", GREEN)
def test_a_broken_runbook_stops_at_the_step_reports_it_and_resumes(
    name: str, daemon: Aiond, tmp_path: Path
) -> None:
    source = next(
        p for p in RUNBOOKS.glob("*.yml") if yaml.safe_load(p.read_text())["metadata"]["name"] == name
    )
    book = yaml.safe_load(source.read_text())
    runs = [i for i, s in enumerate(book["steps"]) if not s.get("when") and not s.get("manual")]
    at = next((i for i in runs if i >= 1), runs[0])  # the second step that always runs, if there is one
    copy = tmp_path / "book" / source.name
    copy.parent.mkdir()
    broken = _break(source, copy, at)
    failed = run(daemon, tmp_path, str(copy), "--yes", *variables(name, daemon))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"failed at step {broken}: broken on purpose: /no/such/value does not exist" in failed.stdout
    assert "Traceback" not in failed.stderr
    doc = report(tmp_path, name)
    assert doc["failedStep"] == broken
    statuses = {s["name"]: s["status"] for s in doc["steps"]}
    assert statuses[broken] == "failed"
    later = [s["name"] for s in book["steps"][at + 1 :]]
    assert all(statuses[n] == "not-run" for n in later)
    resume = next(line for line in failed.stdout.splitlines() if line.startswith("resume: "))
    words = shlex.split(resume.removeprefix("resume: "))
    assert words[:4] == ["aionctl", "runbook", "run", str(copy)]
    assert words[4:6] == ["--from", broken]
    copy.write_text(source.read_text())  # the cause is fixed
    resumed = aionctl(*words[1:], "--yes", env=env(daemon, tmp_path), timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = report(tmp_path, name)
    statuses = {s["name"]: s["status"] for s in after["steps"]}
    assert statuses[broken] in ("passed", "skipped")
    assert all(statuses[s["name"]] == "reused" for s in book["steps"][:at] if not s.get("when"))


@pytest.fixture
def unbroken(tmp_path: Path, stand_in: StandIn) -> Iterator[Aiond]:
    """A daemon whose breakers never open, so a failing provider keeps failing tasks (rather than
    having them refused), as many real failures do until a breaker's statistics catch up."""
    d = start(tmp_path, stand_in, policies={"breakers": {"min_requests": 100_000}})
    yield d
    d.stop()


def test_the_release_canary_rolls_back_when_the_provider_starts_failing(
    unbroken: Aiond, stand_in: StandIn, tmp_path: Path
) -> None:
    daemon = unbroken
    e = env(daemon, tmp_path)
    status = json.loads(aionctl("policy", "status", "-o", "json", env=e).stdout)
    release = tmp_path / "release"
    release.mkdir()
    for path in daemon.config_dir.iterdir():
        if path.is_file():
            (release / path.name).write_bytes(path.read_bytes())
    policies = release / "policies.yml"
    policies.write_text(policies.read_text().replace("default_usd: 0.02", "default_usd: 0.019"))
    stand_in.always(behave.status(500))
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                submit(daemon, "summarize", "canary traffic", timeout=10)
            except grpc.RpcError:  # a task refused (the route full): try again
                stop.wait(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        result = run(
            daemon, tmp_path, "release", "--var", f"config={release}",
            "--var", f"expect_tag={status['active']['tag']}",
            "--var", "window=3s", "-o", "json",
        )  # fmt: skip
    finally:
        stop.set()
        worker.join(30)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    doc = conforms(json.loads(result.stdout), "output/runbook-report")
    assert doc["failedStep"] == "canary"
    canary = next(s for s in doc["steps"] if s["name"] == "canary")
    assert canary["result"]["errors"] > 0, json.dumps(canary["result"])
    assert any("error ratio" in reason for reason in canary["result"]["reasons"])
    assert [(s["name"], s["status"]) for s in doc["onFailure"]] == [
        ("rollback", "passed"),
        ("rolled-back", "passed"),
    ]
    now = json.loads(aionctl("policy", "status", "-o", "json", env=e).stdout)
    assert now["active"]["tag"] == status["active"]["tag"]  # the released content is gone again


def test_a_release_that_cannot_be_promoted_does_not_roll_back(daemon: Aiond, tmp_path: Path) -> None:
    before = json.loads(aionctl("policy", "status", "-o", "json", env=env(daemon, tmp_path)).stdout)
    result = run(daemon, tmp_path, "release", "--var", f"config={daemon.config_dir}", "--var",
                 "expect_tag=sha256:" + "0" * 64, "-o", "json")  # fmt: skip
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["failedStep"] == "promote"
    assert [(s["name"], s["status"]) for s in doc["onFailure"]] == [
        ("rollback", "skipped"),
        ("rolled-back", "skipped"),
    ]
    after = json.loads(aionctl("policy", "status", "-o", "json", env=env(daemon, tmp_path)).stdout)
    assert after["active"]["number"] == before["active"]["number"]


def test_dry_run_resolves_the_plan_and_changes_nothing(daemon: Aiond, tmp_path: Path) -> None:
    e = env(daemon, tmp_path)
    before = json.loads(aionctl("policy", "status", "-o", "json", env=e).stdout)
    result = run(
        daemon, tmp_path, "incident", "--dry-run", "--var", "provider=openai", "--var", "intent=summarize"
    )
    assert result.returncode == 0, result.stderr
    assert "nothing was run" in result.stdout
    assert "[changes state] aionctl breaker open openai --reason incident -o json" in result.stdout
    assert "[reads] aionctl breaker list -o json" in result.stdout
    breakers = json.loads(aionctl("breaker", "list", "-o", "json", env=e).stdout)["breakers"]
    assert not any(b["override"] != "none" for b in breakers)
    after = json.loads(aionctl("policy", "status", "-o", "json", env=e).stdout)
    assert after["active"] == before["active"]
    assert not (tmp_path / "xdg" / "aion" / "runbooks" / "incident.json").exists()


def test_manual_steps_need_yes_off_a_terminal_and_junit_names_the_failure(
    daemon: Aiond, tmp_path: Path
) -> None:
    result = run(
        daemon, tmp_path, "incident", "--var", "provider=openai", "--var", "intent=summarize", "-o", "junit"
    )
    assert result.returncode == 1
    assert 'name="notify"' in result.stdout
    assert "a manual step needs a terminal to confirm it, or --yes" in result.stdout
    assert 'failures="1"' in result.stdout


def test_unknown_variables_and_steps_are_usage_errors(daemon: Aiond, tmp_path: Path) -> None:
    unknown = run(daemon, tmp_path, "bootstrap", "--var", "require_mtl=true")
    assert unknown.returncode == 2
    assert "did you mean require_mtls?" in unknown.stderr
    missing = run(daemon, tmp_path, "incident", "--var", "provider=openai")
    assert missing.returncode == 2
    assert "--var intent=VALUE" in missing.stderr
    step = run(daemon, tmp_path, "bootstrap", "--from", "redy")
    assert step.returncode == 2
    assert "did you mean ready?" in step.stderr


BAD = """\
apiVersion: aion/v1
kind: Runbook
metadata: {name: bad}
vars:
  unused: 1
  tag: v1
steps:
  - name: one
    run: polcy apply x
  - name: two
    run: policy apply x --expect-tagg ${tag}
  - name: three
    run: status
    check:
      - {pointer: "/state", equals: "${steps.four/state}"}
      - {pointer: "state", exists: true}
  - name: four
    run: status ${nope}
"""


def test_validate_reports_runbook_mistakes_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(BAD)
    result = aionctl("validate", str(path))
    assert result.returncode == 1
    out = result.stdout
    assert f"{path}:9:10: error AION602 /steps/0/run: aionctl has no command 'polcy apply'" in out
    assert (
        f"{path}:11:10: error AION602 /steps/1/run: aionctl policy apply has no option --expect-tagg" in out
    )
    assert (
        f"{path}:15:37: error AION603 /steps/2/check/0/equals: ${{steps.four/state}}: "
        "step 'four' runs later, so it has no result yet"
    ) in out
    assert (
        f"{path}:16:19: error AION604 /steps/2/check/1/pointer: pointer 'state' must be empty or start with /"
        in out
    )
    assert f"{path}:18:10: error AION603 /steps/3/run: ${{nope}}: no variable 'nope' in vars" in out
    assert f"{path}:5:3: warning AION605 /vars/unused: variable 'unused' is not used by any step" in out
    refused = aionctl("runbook", "run", str(path))
    assert refused.returncode == 1
    assert "nothing was run" in refused.stderr
