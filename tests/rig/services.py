"""The real services the tests run against, each started on 127.0.0.1 with free ports.

- :class:`OciRegistry`: Debian's docker-registry (distribution 2.8), deletes enabled, storage in a temp dir.
- :class:`KafkaBroker`: Kafka 4.x in KRaft combined mode, SASL/SCRAM-SHA-512 with an admin super-user
  made at format time, StandardAuthorizer with deny-by-default; can be stopped and restarted in place.
- :class:`Prometheus`: Debian's prometheus, scraping targets that tests add at run time.
- :class:`GoTools`: cosign, oras, grpcurl and grpc_health_probe at the pinned versions.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.rig import install
from tests.rig.procs import ManagedProcess, free_port, http_ok, poll, port_open, start_with_retries

START_TIMEOUT = 60.0


class OciRegistry:
    """distribution 2.8 on a free port. ``auth`` turns on its own authentication: ``"htpasswd"``
    (HTTP basic, bcrypt) or ``"token"`` (bearer tokens from :class:`TokenService`, which it checks
    against the service's certificate); ``username``/``password`` are the one account either knows."""

    def __init__(self, workdir: Path, *, auth: str | None = None) -> None:
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.username = "ci-publisher"
        self.password = secrets.token_urlsafe(18)
        self.tokens: TokenService | None = None
        self.port = 0
        self.host = self.url = ""
        self.process: ManagedProcess | None = None

    def _auth_config(self) -> str:
        if self.auth == "htpasswd":
            import bcrypt

            path = self.workdir / "htpasswd"
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=6)).decode()
            path.write_text(f"{self.username}:{hashed}\n")
            return f"auth:\n  htpasswd:\n    realm: aion-test\n    path: {path}\n"
        if self.auth == "token":
            if self.tokens is None:
                self.tokens = TokenService(self.workdir / "tokens", self.username, self.password).start()
            return (
                "auth:\n  token:\n"
                f"    realm: {self.tokens.url}/token\n"
                f"    service: {TokenService.SERVICE}\n"
                f"    issuer: {TokenService.ISSUER}\n"
                f"    rootcertbundle: {self.tokens.certificate}\n"
            )
        return ""

    def _launch(self) -> ManagedProcess:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
            f"  secret: {secrets.token_hex(16)}\n" + self._auth_config()
        )
        binary = install.command_path("docker-registry")
        assert binary is not None
        log = self.workdir / "registry.log"
        return ManagedProcess("docker-registry", [str(binary), "serve", str(config)], log_path=log).start()

    def _ready(self) -> bool:
        status = httpx.get(f"{self.url}/v2/", timeout=1, trust_env=False).status_code
        return status == (401 if self.auth else 200)

    def start(self) -> OciRegistry:
        self.process = start_with_retries(self._launch, self._ready, timeout=START_TIMEOUT)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        if self.tokens is not None:
            self.tokens.stop()


class TokenService:
    """A registry token service (the bearer flow of the distribution spec) for :class:`OciRegistry`.

    ``GET /token?service=...&scope=repository:NAME:ACTIONS`` with the account's basic credentials, or
    ``POST /token`` with ``grant_type=refresh_token`` and :attr:`refresh_token`, answers a JWT signed
    with ES256 whose ``x5c`` header carries the service certificate the registry trusts; anything else
    gets 401. It counts the tokens it issues, so tests can see the flow happened.
    """

    SERVICE = "aion-test-registry"
    ISSUER = "aion-test-token-service"

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        workdir.mkdir(parents=True, exist_ok=True)
        self.username, self.password = username, password
        self.refresh_token = secrets.token_urlsafe(24)
        self.issued = 0
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.ISSUER)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.certificate = workdir / "token-service.pem"
        self.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.url = ""
        self._server: Any = None

    def _token(self, subject: str, scopes: list[str]) -> str:
        import time

        import jwt

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {
            "iss": self.ISSUER, "sub": subject, "aud": self.SERVICE, "iat": now, "nbf": now - 30,
            "exp": now + 300, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        self.issued += 1
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})

    def start(self) -> TokenService:
        import http.server
        import threading
        import urllib.parse

        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _answer(self, subject: str | None, query: dict[str, list[str]]) -> None:
                if subject is None or query.get("service", [""])[0] != service.SERVICE:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token = service._token(subject, query.get("scope", []))
                body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                header = self.headers.get("Authorization", "")
                subject = None
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if (user, password) == (service.username, service.password):
                        subject = user
                self._answer(subject, query)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                ok = form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [
                    service.refresh_token
                ]
                self._answer(service.username if ok else None, form)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # By name: clients refuse a realm at a loopback IP literal other than the registry's own
        # host:port (a guard against registries that point clients at metadata services).
        self.url = f"http://localhost:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name="token-service").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclasses.dataclass(frozen=True)
class KafkaUser:
    username: str
    password: str
    mechanism: str = "SCRAM-SHA-512"


class KafkaBroker:
    """One KRaft node (broker + controller). ``bootstrap`` stays the same across restarts."""

    def __init__(self, workdir: Path, java: Path, classpath: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.controller_port = 0
        self.bootstrap = ""
        self.admin = KafkaUser("admin", secrets.token_urlsafe(18))
        self.restricted = KafkaUser("restricted", secrets.token_urlsafe(18))
        self._controller_secret = secrets.token_urlsafe(18)
        self._java = java
        self._classpath = classpath
        self._config = workdir / "server.properties"
        self._log_config = workdir / "log4j2.properties"
        self._data = workdir / "data"
        self._started_once = False
        self.process: ManagedProcess | None = None

    def _pick_ports(self) -> None:
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._write_config()

    def _write_config(self) -> None:
        secret = self._controller_secret
        ctl = f'username="controller" password="{secret}" user_controller="{secret}"'
        admin = f'username="{self.admin.username}" password="{self.admin.password}"'
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"BROKER://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"BROKER://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "BROKER:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "BROKER",
            "controller.listener.names": "CONTROLLER",
            # Clients and the broker itself use SCRAM; SCRAM credentials live in the metadata log, which
            # the controller cannot read before it runs, so the controller listener uses PLAIN.
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {ctl};"
            ),
            "listener.name.broker.scram-sha-512.sasl.jaas.config": (
                f"org.apache.kafka.common.security.scram.ScramLoginModule required {admin};"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.admin.username};User:controller",
            "allow.everyone.if.no.acl.found": "false",
            "log.dirs": str(self._data),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
        }
        self._config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self._log_config.write_text(
            "rootLogger.level=WARN\n"
            "rootLogger.appenderRef.out.ref=OUT\n"
            "appender.out.type=Console\n"
            "appender.out.name=OUT\n"
            "appender.out.layout.type=PatternLayout\n"
            "appender.out.layout.pattern=[%d] %p %m (%c)%n\n"
        )

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            str(self._java),
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",  # start-up beats peak throughput for a test broker
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log_config}",
            "-cp",
            self._classpath,
            main,
            *args,
        ]

    def format_storage(self) -> None:
        """Format the KRaft log dir once, creating the admin SCRAM credential with it."""
        raw = uuid.uuid4().bytes
        cluster_id = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if cluster_id.startswith("-"):
            cluster_id = "A" + cluster_id[1:]
        scram = f"SCRAM-SHA-512=[name={self.admin.username},password={self.admin.password}]"
        result = subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self._config),
                "--cluster-id",
                cluster_id,
                "--add-scram",
                scram,
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> KafkaBroker:
        """Start the broker and wait until the admin can list topics. The first start picks the ports
        (and formats the log dir); later starts reuse them, so ``bootstrap`` never changes."""

        def launch() -> ManagedProcess:
            if not self._started_once:  # each attempt of the first start may pick new ports
                self._pick_ports()
            if not (self._data / "meta.properties").exists():
                self.format_storage()
            argv = self._java_cmd("kafka.Kafka", str(self._config))
            return ManagedProcess("kafka", argv, log_path=self.workdir / "kafka.log").start()

        self.process = start_with_retries(launch, self._ready, timeout=START_TIMEOUT)
        self._started_once = True
        return self

    def _ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if not port_open("127.0.0.1", self.port):
            return False
        metadata = AdminClient(self.client_config(self.admin)).list_topics(timeout=2)
        return 1 in metadata.brokers

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.exited() is None

    def client_config(self, user: KafkaUser, **extra: Any) -> dict[str, Any]:
        """confluent-kafka settings for ``user`` over SASL/SCRAM."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": user.mechanism,
            "sasl.username": user.username,
            "sasl.password": user.password,
            **extra,
        }

    def create_restricted_user(self) -> None:
        """Create the restricted user's SCRAM credential; it starts with no ACLs at all."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient(self.client_config(self.admin))
        upsert = UserScramCredentialUpsertion(
            self.restricted.username,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
            self.restricted.password.encode(),
        )
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)

    def add_user(self, name: str, *, mechanism: str = "SCRAM-SHA-512") -> KafkaUser:
        """A new SCRAM user ``name`` on the broker, with a random password and no ACLs; it can log in
        once the call returns (poll for its grants: ACLs reach the broker through the metadata log)."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        user = KafkaUser(name, secrets.token_urlsafe(18), mechanism)
        kind = ScramMechanism.SCRAM_SHA_512 if mechanism == "SCRAM-SHA-512" else ScramMechanism.SCRAM_SHA_256
        upsert = UserScramCredentialUpsertion(name, ScramCredentialInfo(kind, 8192), user.password.encode())
        admin = AdminClient(self.client_config(self.admin))
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=30)
        return user


class Prometheus:
    """Prometheus scraping the targets listed in a file_sd file that tests edit at run time."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.url = ""
        self.targets_file = workdir / "targets.json"
        self.targets_file.write_text("[]")
        self.process: ManagedProcess | None = None

    def _launch(self) -> ManagedProcess:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir = self.workdir
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: aion-tests\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self.targets_file}']\n"
            "        refresh_interval: 1s\n"
        )
        binary = install.command_path("prometheus")
        assert binary is not None
        return ManagedProcess(
            "prometheus",
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            log_path=workdir / "prometheus.log",
        ).start()

    def start(self) -> Prometheus:
        self.process = start_with_retries(
            self._launch, lambda: http_ok(f"{self.url}/-/ready"), timeout=START_TIMEOUT
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def set_targets(self, targets: Sequence[str], labels: dict[str, str] | None = None) -> None:
        """Replace the scraped targets (``host:port``), atomically."""
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": labels or {}}]))
        tmp.replace(self.targets_file)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5, trust_env=False)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns a non-empty vector."""
        return poll(lambda: self.query(expr) or None, timeout=timeout, what=f"prometheus query {expr!r}")


class GoTools:
    """The pinned Go-built peers."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def path(self, name: str) -> Path:
        return self.paths[name]

    def run(
        self,
        name: str,
        *args: str,
        check: bool = True,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.paths[name]), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )
        if check and result.returncode != 0:
            command = " ".join([name, *args])
            raise AssertionError(
                f"{command} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result
