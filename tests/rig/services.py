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
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.host = self.url = ""
        self.process: ManagedProcess | None = None

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
            f"  secret: {secrets.token_hex(16)}\n"
        )
        binary = install.command_path("docker-registry")
        assert binary is not None
        log = self.workdir / "registry.log"
        return ManagedProcess("docker-registry", [str(binary), "serve", str(config)], log_path=log).start()

    def start(self) -> OciRegistry:
        self.process = start_with_retries(
            self._launch, lambda: http_ok(f"{self.url}/v2/"), timeout=START_TIMEOUT
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


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
