"""The aion demo: start a real aiond on examples/, drive it with aionctl, then stop it gracefully.

    nox -s demo            (or, with aion installed: python tools/demo.py)

Needs no other service. The daemon listens on free loopback ports and keeps its state in a temporary
directory that is removed afterwards. Exits non-zero if any step does not do what it should.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str) -> None:
    print(f"\n# {text}", flush=True)


def show(argv: list[str], env: dict[str, str], expect: int = 0) -> None:
    shown = " ".join(shlex.quote(Path(a).name if i == 0 else a) for i, a in enumerate(argv))
    print(f"$ {shown}", flush=True)
    result = subprocess.run(argv, env=env, check=False)
    if result.returncode != expect:
        raise SystemExit(f"demo: `{shown}` exited {result.returncode}, expected {expect}")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL built here
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def create_tokens(state: str, env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """An admin and a viewer token, made with `aiond token create`; the environments that carry them."""
    say("Create API tokens offline on the state directory: each is shown once, stored as a hash")
    tokens: dict[str, str] = {}
    for role in ("admin", "viewer"):
        cmd = [
            str(BIN / "aiond"),
            "token",
            "--state-dir",
            state,
            "create",
            f"demo-{role}",
            "--role",
            role,
        ]
        print(
            "$ " + " ".join(shlex.quote(Path(a).name if i == 0 else a) for i, a in enumerate(cmd)),
            flush=True,
        )
        made = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise SystemExit(f"demo: aiond token create exited {made.returncode}: {made.stderr}")
        tokens[role] = made.stdout.strip()
        print(f"{tokens[role][:18]}... (stored in $AION_TOKEN for the steps below)", flush=True)
    return {**env, "AION_TOKEN": tokens["admin"]}, {**env, "AION_TOKEN": tokens["viewer"]}


def policy_tour(state: Path, viewer: dict[str, str], admin: dict[str, str]) -> None:
    """Status, diff, apply, a refused rollback, a rollback, history and the audit trail."""
    say("The policy version aiond started on: version 1, read from examples/")
    show([str(BIN / "aionctl"), "policy", "status"], viewer)
    changed = state / "changed-config"
    shutil.copytree(ROOT / "examples", changed)
    policies = changed / "policies.yml"
    policies.write_text(policies.read_text().replace("default_usd: 0.02", "default_usd: 0.03"))
    say("A changed config set: what would change, before it is applied (exit 1: they differ)")
    show([str(BIN / "aionctl"), "policy", "diff", str(changed)], viewer, expect=1)
    say("Apply it (role admin): validated on the daemon with the rules of `aionctl validate`")
    show(
        [
            str(BIN / "aionctl"),
            "policy",
            "apply",
            str(changed),
            "-m",
            "demo: raise the default budget",
        ],
        admin,
    )
    say("A viewer token may not roll back: exit 4")
    show([str(BIN / "aionctl"), "policy", "rollback"], viewer, expect=4)
    say("Roll back with the admin token: the previous content becomes version 3")
    show([str(BIN / "aionctl"), "policy", "rollback"], admin)
    show([str(BIN / "aionctl"), "policy", "history"], viewer)
    say("Every change and every refusal is an audit event in the daemon's event log")
    show([str(BIN / "aionctl"), "events", "tail", "-n", "6"], viewer)


def offline_tour(state: Path, env: dict[str, str]) -> None:
    """Validation as CI runs it, a finding that points at its line, and a rule explained."""
    say("Validate the example config set offline, as CI would (exit 0: clean)")
    show([str(BIN / "aionctl"), "validate", str(ROOT / "examples")], env)
    broken = state / "broken-config"
    shutil.copytree(ROOT / "examples", broken)
    intents = broken / "intents.yml"
    intents.write_text(
        intents.read_text().replace(
            "candidates: [local, hybrid]\n  privacy: local-only",
            "candidates: [local, api, hybrid]\n  privacy: local-only",
        )
    )
    say("A copy where a local-only intent could reach a remote API: the finding points at the line")
    show([str(BIN / "aionctl"), "validate", str(broken)], env, expect=1)
    shutil.rmtree(broken)
    say("Every finding names a rule; explain says what it checks and how to fix it")
    show([str(BIN / "aionctl"), "explain", "AION301"], env)


def routing_tour(viewer: dict[str, str], admin: dict[str, str]) -> None:
    """Route explanations, a forced breaker, a runtime local-only switch, and a task that fails over."""
    aionctl = str(BIN / "aionctl")
    say("What the router would decide for draft_reply, and why (nothing runs)")
    show([aionctl, "route", "explain", "draft_reply", "--input-bytes", "2000"], viewer)
    say("Incident: force the openai breaker open; its models drop out of the chain")
    show([aionctl, "breaker", "open", "openai", "--reason", "demo: provider incident"], admin)
    show([aionctl, "route", "explain", "summarize", "--route", "api"], viewer)
    show([aionctl, "breaker", "auto", "openai"], admin)
    say("Privacy concern: switch summarize to local-only at runtime; the api route is now refused (exit 1)")
    show([aionctl, "intent", "mode", "summarize", "local-only", "--reason", "demo: privacy review"], admin)
    show([aionctl, "route", "explain", "summarize", "--route", "api"], viewer, expect=1)
    show([aionctl, "intent", "mode", "summarize", "policy"], admin)
    say("Run a task. No model server runs here, so every target fails and the task says why (exit 1)")
    show(
        [aionctl, "task", "submit", "summarize", "--text", "Summarise: aion routes tasks.", "--wait"],
        admin,
        expect=1,
    )


def main() -> int:
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "AION_ADDR": grpc_addr, "AION_HTTP_ADDR": http_addr}
    with tempfile.TemporaryDirectory(prefix="aion-demo-") as state:
        argv = [
            str(BIN / "aiond"),
            "--config", str(ROOT / "examples"),
            "--state-dir", state,
            "--grpc-listen", grpc_addr,
            "--http-listen", http_addr,
        ]  # fmt: skip
        offline_tour(Path(state), env)
        admin, viewer = create_tokens(state, env)

        say("Start aiond on the example config set (logs go to stderr)")
        print("$ " + " ".join(shlex.quote(a) for a in ["aiond", *argv[1:]]), flush=True)
        daemon = subprocess.Popen(argv, env=env)
        try:
            deadline = time.monotonic() + 30
            while not ready(f"http://{http_addr}/readyz"):
                if daemon.poll() is not None:
                    raise SystemExit(f"demo: aiond exited with {daemon.returncode} before it was ready")
                if time.monotonic() > deadline:
                    raise SystemExit("demo: aiond was not ready within 30 s")
                time.sleep(0.05)

            say(f"aionctl finds the daemon through AION_ADDR={grpc_addr} and AION_HTTP_ADDR={http_addr}")
            show([str(BIN / "aionctl"), "health"], env)
            say("The same, for scripts: JSON on stdout, and the exit code says the outcome")
            show([str(BIN / "aionctl"), "health", "--output", "json"], env)
            say("What the daemon reports about itself (AdminService.GetStatus over gRPC, role viewer)")
            show([str(BIN / "aionctl"), "status"], viewer)
            say("Without a token the daemon refuses: exit 4")
            show([str(BIN / "aionctl"), "status"], env, expect=4)

            policy_tour(Path(state), viewer, admin)
            routing_tour(viewer, admin)

            say("SIGTERM: aiond drains (readiness 503, in-flight calls finish) and stops; see its log")
            print(f"$ kill -TERM {daemon.pid}", flush=True)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
            if code != 0:
                raise SystemExit(f"demo: aiond exited {code} after SIGTERM")
            say("Nothing answers now: health exits 5 (daemon unreachable)")
            show([str(BIN / "aionctl"), "health"], env, expect=5)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    print("\ndemo: done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
