"""The policy lifecycle end to end: a real aiond, driven by the real aionctl, curl-style HTTP and signals."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.supply import conforms
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.procs import poll
from tests.rig.services import GoTools


def config_copy(root: Path, name: str = "config", *, budget: float | None = None) -> Path:
    """A copy of the example config set; ``budget`` changes default_usd so the content differs."""
    target = root / name
    shutil.copytree(EXAMPLES, target)
    if budget is not None:
        set_budget(target, budget)
    return target


def set_budget(config: Path, budget: float) -> None:
    policies = config / "policies.yml"
    text = policies.read_text()
    old = next(line for line in text.splitlines() if "default_usd:" in line)
    policies.write_text(text.replace(old, f"  default_usd: {budget:.4f}"))


def ctl(daemon: Aiond, *args: str, role: str = "admin", timeout: float = 60.0) -> Any:
    return aionctl(*args, env=daemon.aionctl_env(role), timeout=timeout)


def doc(result: Any) -> Any:
    """stdout parsed and checked against the policy output schema."""
    return conforms(json.loads(result.stdout), "output/policy")


def status(daemon: Aiond) -> Any:
    result = ctl(daemon, "policy", "status", "-o", "json", role="viewer")
    assert result.returncode == 0, result.stderr
    return doc(result)


def history(daemon: Aiond) -> list[Any]:
    result = ctl(daemon, "policy", "history", "-o", "json", "--limit", "1000", role="viewer")
    assert result.returncode == 0, result.stderr
    return list(doc(result)["versions"])


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Aiond]:
    """An aiond on a writable copy of the example config."""
    d = Aiond(tmp_path, config_dir=config_copy(tmp_path)).start()
    yield d
    d.stop()


def test_startup_activates_version_1_from_the_config_directory(daemon: Aiond) -> None:
    body = status(daemon)
    assert body["active"]["number"] == 1
    assert body["active"]["source"] == "startup"
    assert body["active"]["tag"].startswith("sha256:")
    assert body["configDir"] == str(daemon.config_dir)
    assert "lastError" not in body
    shown = json.loads(ctl(daemon, "status", "-o", "json", role="viewer").stdout)
    assert shown["activePolicyVersion"] == 1


def test_apply_reload_rollback_history_and_diff(daemon: Aiond, tmp_path: Path) -> None:
    first = status(daemon)["active"]
    # apply: a changed set uploaded from the client becomes version 2
    local = config_copy(tmp_path, "local", budget=0.031)
    pending = ctl(daemon, "policy", "diff", str(local), "-o", "json", role="viewer")
    assert pending.returncode == 1, pending.stderr  # differences: like kubectl diff
    changes = doc(pending)
    assert (changes["from"], changes["identical"]) == ("v1", False)
    assert [(f["path"], f["change"]) for f in changes["files"]] == [("policies.yml", "modified")]
    assert "+  default_usd: 0.0310" in changes["files"][0]["diff"]
    applied = ctl(daemon, "policy", "apply", str(local), "-m", "commit abc123", "-o", "json")
    assert applied.returncode == 0, applied.stderr
    activation = doc(applied)
    assert activation["activated"] is True
    assert activation["version"]["number"] == 2
    assert activation["version"]["source"] == "apply"
    assert activation["version"]["author"] == "test-admin"
    assert activation["version"]["description"] == "commit abc123"
    assert activation["previous"]["tag"] == first["tag"]
    # the same content again changes nothing
    again = doc(ctl(daemon, "policy", "apply", str(local), "-o", "json"))
    assert (again["activated"], again["unchanged"], again["version"]["number"]) == (False, True, 2)
    assert ctl(daemon, "policy", "diff", str(local), role="viewer").returncode == 0
    # reload: the daemon's own directory, changed on disk, becomes version 3
    set_budget(daemon.config_dir, 0.032)
    dry = doc(ctl(daemon, "policy", "reload", "--dry-run", "-o", "json", role="operator"))
    assert (dry["activated"], dry["version"]["number"]) == (False, 0)
    assert status(daemon)["active"]["number"] == 2
    reloaded = doc(ctl(daemon, "policy", "reload", "-o", "json", role="operator"))
    assert (reloaded["version"]["number"], reloaded["version"]["source"]) == (3, "reload")
    assert reloaded["previous"]["number"] == 2
    # rollback: the previous content comes back as version 4; twice returns to where we were
    rolled = ctl(daemon, "policy", "rollback", "-o", "json")
    assert rolled.returncode == 0, rolled.stderr
    back = doc(rolled)
    assert (back["version"]["number"], back["version"]["source"]) == (4, "rollback")
    assert back["version"]["tag"] == activation["version"]["tag"]
    assert back["previous"]["number"] == 3
    assert (
        doc(ctl(daemon, "policy", "rollback", "-o", "json"))["version"]["tag"] == reloaded["version"]["tag"]
    )
    # rollback to a number and to a tag prefix
    by_number = doc(ctl(daemon, "policy", "rollback", "--to", "1", "-o", "json"))
    assert by_number["version"]["tag"] == first["tag"]
    short = activation["version"]["tag"].removeprefix("sha256:")[:12]
    by_tag = doc(ctl(daemon, "policy", "rollback", "--to", short, "-o", "json"))
    assert by_tag["version"]["tag"] == activation["version"]["tag"]
    versions = history(daemon)
    assert [v["number"] for v in versions] == [7, 6, 5, 4, 3, 2, 1]
    assert [v["active"] for v in versions] == [True] + [False] * 6
    assert [v["source"] for v in versions] == ["rollback"] * 4 + ["reload", "apply", "startup"]
    # diff between two versions
    between = doc(ctl(daemon, "policy", "diff", "1", "2", "-o", "json", role="viewer"))
    assert (between["from"], between["to"]) == ("v1", "v2")
    assert "+  default_usd: 0.0310" in between["files"][0]["diff"]
    text = ctl(daemon, "policy", "history", role="viewer").stdout.splitlines()
    assert text[0].split()[:3] == ["VERSION", "TAG", "SOURCE"]
    assert text[1].startswith("*       7")


def test_a_bad_reload_keeps_the_running_version_and_reports_findings_with_lines(daemon: Aiond) -> None:
    before = status(daemon)["active"]
    intents = daemon.config_dir / "intents.yml"
    intents.write_text(
        intents.read_text().replace(
            "candidates: [local, hybrid]\n  privacy: local-only",
            "candidates: [local, api, hybrid]\n  privacy: local-only",
        )
    )
    result = ctl(daemon, "policy", "reload", role="operator")
    assert result.returncode == 1
    assert "AION301" in result.stderr
    assert f"{intents}:1" in result.stderr  # file:line:column
    assert f"version {before['number']} stays active" in result.stderr
    refused = ctl(daemon, "policy", "reload", "-o", "json", role="operator")
    assert refused.returncode == 1
    body = doc(refused)
    assert body["activated"] is False
    assert body["previous"]["number"] == before["number"]
    errors = [f for f in body["findings"] if f["severity"] == "error"]
    assert errors
    assert errors[0]["ruleId"] == "AION301"
    assert errors[0]["location"]["file"] == str(intents)
    assert errors[0]["location"]["line"] > 0
    after = status(daemon)
    assert after["active"] == before
    assert after["lastError"]["source"] == "reload"
    assert after["lastError"]["findings"][0]["ruleId"] == "AION301"
    # The HTTP endpoint answers the same way: 422 with the findings, nothing activated.
    response = httpx.post(
        f"http://{daemon.http_addr}/router/policy/reload",
        headers={"Authorization": f"Bearer {daemon.tokens['operator']}"},
        timeout=30,
        trust_env=False,
    )
    assert response.status_code == 422
    http_body = conforms(response.json(), "output/policy")
    assert http_body["findings"][0]["ruleId"] == "AION301"
    assert "stays active" in http_body["message"]
    assert status(daemon)["active"]["number"] == before["number"]


def test_http_endpoints_reload_and_report_with_roles(daemon: Aiond) -> None:
    base = f"http://{daemon.http_addr}"

    def call(method: str, path: str, role: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {daemon.tokens[role]}"} if role else {}
        return httpx.request(method, base + path, headers=headers, timeout=30, trust_env=False)

    anonymous = call("GET", "/router/policy", None)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    got = call("GET", "/router/policy", "viewer")
    assert got.status_code == 200
    assert conforms(got.json(), "output/policy")["active"]["number"] == 1
    assert call("POST", "/router/policy/reload", "viewer").status_code == 403
    set_budget(daemon.config_dir, 0.041)
    assert call("POST", "/router/policy/reload?dry_run=true", "operator").json()["activated"] is False
    reloaded = call("POST", "/router/policy/reload", "operator")
    assert reloaded.status_code == 200
    body = conforms(reloaded.json(), "output/policy")
    assert (body["activated"], body["version"]["number"], body["version"]["source"]) == (True, 2, "http")
    assert body["version"]["tag"] != body["previous"]["tag"]
    assert call("POST", "/router/policy/reload?dry_run=maybe", "operator").status_code == 400
    assert call("GET", "/healthz", None).status_code == 200  # probes stay open
    assert call("GET", "/metrics", None).status_code == 200
    metrics = call("GET", "/metrics", None).text
    assert "aion_policy_active_version 2.0" in metrics
    assert 'aion_policy_activations_total{outcome="success",source="http"} 1.0' in metrics
    assert 'aion_auth_denials_total{reason="forbidden"} 1.0' in metrics


def test_concurrent_applies_each_become_a_version_and_none_is_lost(daemon: Aiond, tmp_path: Path) -> None:
    sets = [config_copy(tmp_path, f"set{i}", budget=0.05 + i / 1000) for i in range(20)]
    results: list[Any] = [None] * len(sets)

    def apply(i: int) -> None:
        results[i] = ctl(daemon, "policy", "apply", str(sets[i]), "-o", "json")

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(len(sets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    created = [doc(r)["version"] for r in results]
    numbers = sorted(int(v["number"]) for v in created)
    assert numbers == list(range(2, 22))  # 20 distinct versions, none skipped
    versions = history(daemon)
    assert {v["tag"] for v in versions[:20]} == {v["tag"] for v in created}
    # Each activation names the version that was active just before it: a chain, nothing lost.
    previous_of = {int(doc(r)["version"]["number"]): int(doc(r)["previous"]["number"]) for r in results}
    assert all(previous_of[n] == n - 1 for n in previous_of)


def test_concurrent_reloads_of_one_change_make_one_version(daemon: Aiond) -> None:
    set_budget(daemon.config_dir, 0.061)
    results: list[Any] = []
    lock = threading.Lock()

    def reload() -> None:
        r = ctl(daemon, "policy", "reload", "-o", "json", role="operator")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=reload) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0] * 20
    bodies = [doc(r) for r in results]
    assert sum(1 for b in bodies if b["activated"]) == 1
    assert sum(1 for b in bodies if b["unchanged"]) == 19
    assert [v["number"] for v in history(daemon)] == [2, 1]


def test_expect_tag_refuses_a_stale_apply_with_exit_6(daemon: Aiond, tmp_path: Path) -> None:
    tag = status(daemon)["active"]["tag"]
    ok = ctl(daemon, "policy", "apply", str(config_copy(tmp_path, "a", budget=0.071)), "--expect-tag", tag)
    assert ok.returncode == 0, ok.stderr
    stale = ctl(daemon, "policy", "apply", str(config_copy(tmp_path, "b", budget=0.072)), "--expect-tag", tag)
    assert stale.returncode == 6
    assert "the active version is not the expected one" in stale.stderr
    assert status(daemon)["active"]["number"] == 2


def test_rollback_refusals(daemon: Aiond) -> None:
    nothing = ctl(daemon, "policy", "rollback")
    assert nothing.returncode == 6
    assert "nothing to roll back to" in nothing.stderr
    same = ctl(daemon, "policy", "rollback", "--to", "1")
    assert same.returncode == 6
    missing = ctl(daemon, "policy", "rollback", "--to", "99")
    assert missing.returncode == 3
    assert "there is no policy version 99" in missing.stderr
    bad_tag = ctl(daemon, "policy", "rollback", "--to", "zz")
    assert bad_tag.returncode == 2
    for bad in ("", "0", "99999999999999999999999", "²"):
        refused = ctl(daemon, "policy", "rollback", "--to", bad)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "internal error" not in refused.stderr
    viewer = ctl(daemon, "policy", "rollback", role="viewer")
    assert viewer.returncode == 4
    assert "needs role admin" in viewer.stderr
    assert "Traceback" not in nothing.stderr + missing.stderr + viewer.stderr
    events = [
        json.loads(line)
        for line in ctl(daemon, "events", "tail", "-o", "json", "-n", "50").stdout.splitlines()
    ]
    refusals = [e for e in events if e.get("action") == "policy.rollback"]
    assert {e["outcome"] for e in refusals} == {"refused"}


def test_sighup_reloads_the_config_directory(daemon: Aiond) -> None:
    set_budget(daemon.config_dir, 0.081)
    daemon.process.signal(signal.SIGHUP)
    active = poll(
        lambda: (s := status(daemon)["active"])["number"] == 2 and s, timeout=15, what="SIGHUP reload"
    )
    assert active["source"] == "sighup"
    assert active["author"] == "aiond"
    # A broken directory on SIGHUP is refused, and the daemon keeps serving version 2.
    (daemon.config_dir / "models.yml").write_text("tiers: [\n")
    daemon.process.signal(signal.SIGHUP)
    poll(lambda: "lastError" in (s := status(daemon)) and s["lastError"]["source"] == "sighup", timeout=15,
         what="refused SIGHUP reload")  # fmt: skip
    assert status(daemon)["active"]["number"] == 2
    assert ctl(daemon, "health").returncode == 0


def test_versions_survive_a_restart(tmp_path: Path) -> None:
    config = config_copy(tmp_path)
    daemon = Aiond(tmp_path, config_dir=config).start()
    try:
        assert ctl(daemon, "policy", "apply", str(config_copy(tmp_path, "new", budget=0.091))).returncode == 0
        applied = status(daemon)["active"]
        assert daemon.stop() == 0
        daemon.start()  # resume: the stored active version, not the directory
        assert status(daemon)["active"] == applied
        assert [v["number"] for v in history(daemon)] == [2, 1]
        assert "differs from the active policy version 2" in daemon.process.log_path.read_text()
        assert daemon.stop() == 0
        daemon.extra_args = ["--startup-policy", "config"]
        daemon.start()
        active = status(daemon)["active"]
        assert (active["number"], active["source"]) == (3, "startup")
        assert active["tag"] == history(daemon)[-1]["tag"]
    finally:
        daemon.stop()


def test_a_daemon_with_an_invalid_config_and_no_stored_version_does_not_start(tmp_path: Path) -> None:
    import subprocess

    from tests.rig.daemon import clean_env, program

    config = config_copy(tmp_path)
    (config / "intents.yml").write_text("summarize: {default_route: teleport}\n")
    result = subprocess.run(
        [program("aiond"), "--config", str(config), "--state-dir", str(tmp_path / "s"),
         "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"{config / 'intents.yml'}:1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_grpcurl_calls_policy_status_through_reflection(daemon: Aiond, go_tools: GoTools) -> None:
    result = go_tools.run(
        "grpcurl", "-plaintext", "-format", "json", "-H", f"authorization: Bearer {daemon.tokens['viewer']}",
        daemon.grpc_addr, "aion.v1.PolicyService/GetPolicyStatus",
    )  # fmt: skip
    body = json.loads(result.stdout)
    assert body["active"]["number"] == "1"  # grpcurl prints the proto3 JSON mapping
    assert body["active"]["tag"].startswith("sha256:")
    denied = go_tools.run(
        "grpcurl", "-plaintext", daemon.grpc_addr, "aion.v1.PolicyService/GetPolicyStatus", check=False
    )
    assert "Code: Unauthenticated" in denied.stderr


def test_every_admin_action_is_audited_and_tail_follows(daemon: Aiond, tmp_path: Path) -> None:
    import subprocess

    from tests.rig.daemon import clean_env, program

    follower = subprocess.Popen(
        [program("aionctl"), "events", "tail", "--follow", "-o", "json", "-n", "1",
         "--topic", "aion.audit.activity"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=clean_env(daemon.aionctl_env("viewer")),
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # the last recorded event comes first
        assert ctl(daemon, "policy", "apply", str(config_copy(tmp_path, "n", budget=0.101))).returncode == 0
        while True:
            event = conforms(json.loads(follower.stdout.readline()), "output/event")
            if event["action"] == "policy.apply":
                break
        assert event["sequence"] > first["sequence"]
        assert (event["apiVersion"], event["kind"]) == ("aion/v1", "EventRecord")
        audit = {k: v for k, v in event.items() if k not in ("apiVersion", "kind", "sequence")}
        conforms(audit, "events/audit")
        assert (audit["principal"], audit["outcome"], audit["before"], audit["after"]) == (
            "test-admin",
            "success",
            "1",
            "2",
        )
        assert audit["details"]["afterTag"] == status(daemon)["active"]["tag"]
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()
    denied = ctl(daemon, "policy", "reload", role="")
    assert denied.returncode == 4
    lines = ctl(daemon, "events", "tail", "-o", "json", "-n", "100", role="viewer").stdout.splitlines()
    actions = [(e["action"], e["outcome"]) for e in map(json.loads, lines)]
    assert ("token.create", "success") in actions
    assert ("policy.reload", "success") in actions  # the start-up activation
    assert actions[-1] == ("auth.deny", "refused")
    # The audit trail (never sealed or deleted by aiond) holds the same audit events, in the same order.
    trail = [json.loads(line) for line in (daemon.state_dir / "audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in trail] == actions


def test_tail_resumes_after_a_sequence_number(daemon: Aiond) -> None:
    lines = ctl(daemon, "events", "tail", "-o", "json", role="viewer").stdout.splitlines()
    sequences = [json.loads(line)["sequence"] for line in lines]
    assert sequences == sorted(sequences)
    assert len(sequences) >= 4  # three token grants and the start-up activation
    after = ctl(daemon, "events", "tail", "-o", "json", "--after", str(sequences[1]), role="viewer")
    assert [json.loads(line)["sequence"] for line in after.stdout.splitlines()] == sequences[2:]


def test_the_state_database_is_consistent_after_use(daemon: Aiond, tmp_path: Path) -> None:
    assert ctl(daemon, "policy", "apply", str(config_copy(tmp_path, "n", budget=0.111))).returncode == 0
    daemon.stop()
    db = sqlite3.connect(daemon.state_dir / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tokens = db.execute("SELECT secret_sha256 FROM tokens").fetchall()
        stored = {row[0] for row in tokens}
    finally:
        db.close()
    # Tokens are stored only as hashes: no token text appears anywhere in the state directory.
    for token in daemon.tokens.values():
        assert token.split("_")[-1] not in stored
        for path in daemon.state_dir.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes()


def big_intents(count: int, *, broken: bool = False) -> str:
    """An intents file with ``count`` intents; ``broken`` gives every one an unknown route."""
    route = "teleport" if broken else "auto"
    return "".join(
        f"intent_{i}:\n  description: generated\n  default_route: {route}\n  candidates: [local, api]\n"
        f"  privacy: allow-api\n  tiers_allowed: [tier0, tier1]\n"
        for i in range(count)
    )


def test_a_refusal_with_many_findings_still_arrives_intact(daemon: Aiond, tmp_path: Path) -> None:
    local = config_copy(tmp_path, "many")
    (local / "intents.yml").write_text(big_intents(150, broken=True))
    result = ctl(daemon, "policy", "apply", str(local), "-o", "json")
    assert result.returncode == 1, result.stderr
    body = doc(result)
    assert body["activated"] is False
    assert 5 < len(body["findings"]) < 150  # capped to fit a gRPC trailer ...
    assert "more findings are not shown" in body["findings"][-1]["message"]  # ... and says so
    assert "RESOURCE_EXHAUSTED" not in result.stderr
    assert status(daemon)["active"]["number"] == 1


def test_an_apply_whose_caller_gives_up_still_finishes_consistently(daemon: Aiond, tmp_path: Path) -> None:
    import grpc

    from aion.api.v1 import common_pb2, policies_pb2, policies_pb2_grpc

    local = config_copy(tmp_path, "big")
    intents = local / "intents.yml"
    intents.write_text(intents.read_text() + big_intents(2000))
    files = [common_pb2.ConfigFile(path=p.name, content=p.read_bytes()) for p in sorted(local.glob("*.yml"))]
    with daemon.channel() as channel:
        stub = policies_pb2_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ApplyPolicy(policies_pb2.ApplyPolicyRequest(files=files), timeout=0.05)
        assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    def settled() -> Any:
        versions = history(daemon)
        return versions if versions[0]["number"] == 2 else None

    versions = poll(settled, timeout=30, what="the abandoned apply to finish")
    # What the daemon runs is what the store says is active, and the change was audited.
    assert status(daemon)["active"] == versions[0]
    events = [
        json.loads(x) for x in ctl(daemon, "events", "tail", "-o", "json", role="viewer").stdout.splitlines()
    ]
    assert any(e["action"] == "policy.apply" and e["after"] == "2" for e in events)


def test_head_requests_need_a_token_too(daemon: Aiond) -> None:
    response = httpx.head(f"http://{daemon.http_addr}/router/policy", timeout=10, trust_env=False)
    assert response.status_code == 401
    unknown = httpx.get(f"http://{daemon.http_addr}/router/nothing", timeout=10, trust_env=False)
    assert unknown.status_code == 404


def test_history_pages_through_every_version(daemon: Aiond, tmp_path: Path) -> None:
    from aion.api.v1 import policies_pb2, policies_pb2_grpc

    for i in range(4):
        assert (
            ctl(
                daemon, "policy", "apply", str(config_copy(tmp_path, f"p{i}", budget=0.12 + i / 100))
            ).returncode
            == 0
        )
    seen: list[int] = []
    token = ""
    with daemon.channel("viewer") as channel:
        stub = policies_pb2_grpc.PolicyServiceStub(channel)
        while True:
            page = stub.ListPolicyVersions(
                policies_pb2.ListPolicyVersionsRequest(page_size=2, page_token=token), timeout=10
            )
            assert len(page.versions) <= 2
            seen += [v.number for v in page.versions]
            token = page.next_page_token
            if not token:
                break
        everything = stub.ListPolicyVersions(
            policies_pb2.ListPolicyVersionsRequest(page_size=5000), timeout=10
        )
    assert seen == [5, 4, 3, 2, 1]
    assert [v.number for v in everything.versions] == seen


def test_an_event_log_line_cut_short_does_not_hide_the_next_event(daemon: Aiond, tmp_path: Path) -> None:
    log = daemon.state_dir / "events.jsonl"
    with log.open("a") as handle:
        handle.write('{"id": "cut short by a crash')
    assert ctl(daemon, "policy", "apply", str(config_copy(tmp_path, "c", budget=0.131))).returncode == 0
    events = [
        json.loads(x) for x in ctl(daemon, "events", "tail", "-o", "json", role="viewer").stdout.splitlines()
    ]
    assert events[-1]["action"] == "policy.apply"


@pytest.mark.parametrize("fmt", ["sarif", "github", "junit"])
def test_a_refused_apply_prints_the_report_validate_prints(daemon: Aiond, tmp_path: Path, fmt: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLES, broken)
    intents = broken / "intents.yml"
    intents.write_text(
        intents.read_text().replace(
            "candidates: [local, hybrid]\n  privacy: local-only",
            "candidates: [local, api, hybrid]\n  privacy: local-only\n  colour: blue",  # an error, a warning
        )
    )
    validated = aionctl("validate", str(broken), "-o", fmt)
    applied = ctl(daemon, "policy", "apply", str(broken), "-o", fmt)
    assert (validated.returncode, applied.returncode) == (1, 1), applied.stderr
    assert "AION301" in validated.stdout
    assert applied.stdout == validated.stdout


def test_an_applied_sets_warnings_print_in_the_findings_formats(daemon: Aiond, tmp_path: Path) -> None:
    warned = tmp_path / "warned"
    shutil.copytree(EXAMPLES, warned)
    # A set that names no secrets directory: aiond would warn that it reads its own instead, which
    # only it can know.
    models = warned / "models.yml"
    models.write_text(
        models.read_text().replace("secrets:\n  backend: files\n  directory: /run/secrets/aion\n", "")
    )
    (warned / "policies.yml").write_text((warned / "policies.yml").read_text() + "\ncolour: blue\n")
    applied = ctl(daemon, "policy", "apply", str(warned), "--dry-run", "-o", "github")
    validated = aionctl("validate", str(warned), "-o", "github")
    assert applied.returncode == validated.returncode == 0, applied.stderr
    assert "AION101" in validated.stdout
    assert applied.stdout == validated.stdout
