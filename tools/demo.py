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


def policy_tour(state: Path, config: Path, viewer: dict[str, str], admin: dict[str, str]) -> None:
    """Status, diff, apply, a refused rollback, a rollback, history and the audit trail."""
    say("The policy version aiond started on: version 1, read from its config set")
    show([str(BIN / "aionctl"), "policy", "status"], viewer)
    changed = state / "changed-config"
    shutil.copytree(config, changed)
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


class StandInProvider:
    """A model provider for the demo's hybrid task: an HTTP server on loopback that speaks OpenAI's
    chat completions and keeps what it was sent, to show that only redacted text left the host."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        received: list[str] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = json.loads(self.rfile.read(length) or b"{}")
                text = " ".join(
                    str(m.get("content", "")) for m in body.get("messages", ()) if m.get("role") == "user"
                )
                received.append(text)
                answer = json.dumps({
                    "id": "chatcmpl-demo", "object": "chat.completion", "model": body.get("model", ""),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                 "content": "Thank you for writing; we refunded the duplicate charge."}}],
                    "usage": {"prompt_tokens": max(1, len(text) // 4), "completion_tokens": 14},
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the hook's signature
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def modules_setup(state: Path, env: dict[str, str], provider_url: str) -> Path:
    """Sign the example WASM modules and install them into the daemon's store, from an image layout
    built here (no registry, no Go tool); the demo's config set trusts the key that signed them and
    sends the hybrid route's cloud step to the stand-in provider. Returns the config set."""
    import json

    import yaml

    aionctl = str(BIN / "aionctl")
    config = state / "config"
    shutil.copytree(ROOT / "examples", config, ignore=shutil.ignore_patterns("modules", "README.md"))
    keys = {**env, "AION_KEY_PASSWORD": "demo"}
    say("A signing key for the demo's modules (cosign's format; `cosign sign --key` takes it too)")
    show([aionctl, "module", "keygen", "--out", str(config / "demo-signing")], keys)
    layout = state / "layout"
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["trust"]["rules"].insert(0, {"match": f"oci:{state}/**", "keys": ["demo-signing.pub"]})
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    models = yaml.safe_load((config / "models.yml").read_text())
    models["providers"]["openai"] = {"base_url": provider_url, "api_key_secret": "OPENAI_API_KEY"}
    models.pop("secrets", None)  # aiond reads keys from its --secrets-dir, given below
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    (state / "secrets").mkdir(mode=0o700)
    (state / "secrets" / "OPENAI_API_KEY").write_text("sk-demo-stand-in\n")
    for name, version in (("summarize_text", "1.3.0"), ("pii_redact", "0.9.0")):
        sbom = state / f"{name}.cdx.json"
        sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                                    "components": [{"type": "application", "name": name, "version": version},
                                                   {"type": "library", "name": "wasi-libc"}]}))  # fmt: skip
        ref = f"oci:{layout}:{name}-{version}"
        say(
            f"Package {name} (C compiled to WASM, examples/modules/{name}) into an image layout, with an SBOM"
        )
        show(
            [aionctl, "module", "push", str(ROOT / "examples" / "modules" / name), ref, "--sbom", str(sbom)],
            env,
        )
        show([aionctl, "module", "sign", ref, "--key", str(config / "demo-signing.key")], keys)
        say(f"Install {name}: verified under the trust policy before anything is stored")
        show(
            [aionctl, "install", ref, "--config", str(config), "--store", str(state / "state" / "modules")],
            env,
        )
    return config


def modules_tour(viewer: dict[str, str], admin: dict[str, str], provider: StandInProvider) -> None:
    """A local task answered by a WASM module, a hybrid task whose cloud step sees redacted text only,
    and a module's parallelism changed during an incident."""
    aionctl = str(BIN / "aionctl")
    say("The daemon runs the modules it verified; each is a target of the routes modules.yml gives it")
    show([aionctl, "module", "status"], viewer)
    say("A task on the local route: summarize_text (WASM, in a fresh sandbox per call) answers it")
    text = (
        "The storage cluster lost power in the east hall at 02:10. Generators started within a minute. "
        "Two racks stayed dark because their transfer switch failed. Engineers moved the affected volumes "
        "to the west hall, and replication caught up by 03:05. No data was lost. The cafeteria reopened. "
        "The faulty transfer switch will be replaced on Thursday."
    )
    show([aionctl, "task", "submit", "summarize", "--text", text, "--route", "local", "--wait"], admin)
    say("A hybrid task: pii_redact runs on this host first; only its output goes to the (stand-in) cloud")
    reply = (
        "Hi, I am Dana Whitfield. You charged my card 4111 1111 1111 1111 twice. "
        "Call me on +1 415 555 0134 or write to dana.whitfield@example.com."
    )
    show([aionctl, "task", "submit", "draft_reply", "--text", reply, "--wait"], admin)
    if not provider.received:
        raise SystemExit("demo: the hybrid task never reached its cloud step")
    seen = provider.received[-1]
    print(f"the cloud model was sent: {seen!r}", flush=True)
    for secret in ("4111 1111 1111 1111", "415 555 0134", "dana.whitfield@example.com"):
        if secret in seen:
            raise SystemExit(f"demo: {secret!r} left the host")
    say("Incident: slow summarize_text down to one call at a time (role operator; stored and audited)")
    show(
        [aionctl, "module", "parallelism", "summarize_text", "1", "--reason", "demo: host under load"], admin
    )
    show([aionctl, "module", "status"], viewer)


def openai_tour(admin: dict[str, str]) -> None:
    """An application that speaks the OpenAI Chat Completions API, pointed at aiond: the model names an
    intent, the token is the API key, and the answer says how the task was routed."""
    import json

    say("An app using the OpenAI API: POST /v1/chat/completions with model=summarize (an intent)")
    url = f"http://{admin['AION_HTTP_ADDR']}/v1/chat/completions"
    body = {
        "model": "summarize",
        "messages": [
            {"role": "user", "content": "The backup finished at 03:10. Nothing failed. Lunch is at noon."}
        ],
        "aion": {"route": "local"},
    }
    print(f"$ curl -H 'Authorization: Bearer $AION_TOKEN' {url} -d '{json.dumps(body)[:60]}...'", flush=True)
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin['AION_TOKEN']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the demo's own daemon
        answer = json.load(response)
        for header in ("x-aion-task-id", "x-aion-route", "x-aion-target", "x-aion-cost-usd"):
            print(f"{header}: {response.headers[header]}", flush=True)
    print(f"answer: {answer['choices'][0]['message']['content']!r}", flush=True)
    if response.headers["x-aion-target"] != "module:summarize_text":
        raise SystemExit("demo: the OpenAI-compatible task was not answered by the summarize_text module")


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
    say("A task for invoice_ocr: its module is not installed and no model server runs here (exit 1)")
    show(
        [aionctl, "task", "submit", "invoice_ocr", "--text", "Invoice INV-7 total EUR 12.00", "--wait"],
        admin,
        expect=1,
    )


def main() -> int:
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "AION_ADDR": grpc_addr, "AION_HTTP_ADDR": http_addr}
    provider = StandInProvider()
    with tempfile.TemporaryDirectory(prefix="aion-demo-") as work:
        state = str(Path(work) / "state")
        Path(state).mkdir()
        offline_tour(Path(work), env)
        config = modules_setup(Path(work), env, provider.url)
        argv = [
            str(BIN / "aiond"),
            "--config", str(config),
            "--state-dir", state,
            "--grpc-listen", grpc_addr,
            "--http-listen", http_addr,
            "--secrets-dir", str(Path(work) / "secrets"),
        ]  # fmt: skip
        admin, viewer = create_tokens(state, env)

        say("Start aiond on the example config set, with the demo's key trusted (logs go to stderr)")
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

            modules_tour(viewer, admin, provider)
            openai_tour(admin)
            policy_tour(Path(work), config, viewer, admin)
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
            provider.close()
    print("\ndemo: done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
