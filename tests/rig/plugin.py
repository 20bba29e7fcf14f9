"""pytest plugin: session fixtures that start the real services the tests talk to.

Loaded for every run through ``-p tests.rig.plugin`` in pyproject.toml. When a service cannot be
found or started: with ``CI=true`` the test fails (a missing service is a failure in CI, never a skip);
otherwise it is skipped with the reason and the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings as hypothesis_settings

from tests.rig import install
from tests.rig.daemon import Aiond
from tests.rig.fuzz import DEFAULT_EXAMPLES, examples
from tests.rig.secrets import sops_tool, vault  # noqa: F401 - fixtures, registered by import
from tests.rig.services import GoTools, KafkaBroker, OciRegistry, Prometheus

if TYPE_CHECKING:
    from tests.rig.providers import StandIn


hypothesis_settings.register_profile("aion", max_examples=examples(DEFAULT_EXAMPLES))
hypothesis_settings.load_profile("aion")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(what: str, reason: str, install_cmd: str) -> None:
    """Fail under CI, skip otherwise; never returns."""
    message = f"{what} unavailable: {reason}. Install it with: {install_cmd}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def _install_hint(step: str) -> str:
    return f"python3 tests/rig/install.py {step}"


@contextlib.contextmanager
def _running(what: str, start: Callable[[], object], stop: Callable[[], object], hint: str) -> Iterator[None]:
    """Start a service for the session, or report it unavailable; always stop it afterwards."""
    try:
        start()
    except Exception as exc:  # any failure to start is reported the same way
        stop()
        unavailable(what, f"{type(exc).__name__}: {exc}", hint)
    try:
        yield
    finally:
        stop()


KAFKA_GROUP = "tests/integration/[kafka]"
KAFKA_FILES = frozenset(
    f"tests/integration/{name}.py"
    for name in (
        "test_audit_verify",
        "test_kafka_delivery",
        "test_kafka_ops",
        "test_rig_kafka",
        "test_runbooks_services",
    )
)
"""Under pytest-xdist with ``--dist loadfile`` (``-n 2 --dist loadfile``, as the nox session runs it)
the test files that use the session's Kafka broker (the ``kafka_broker`` fixture, directly or through
another file's fixtures) run together, in order, in one worker: one JVM, not one per worker, and
their broker restarts and outages cannot reach another worker's tests. Every other test file goes to
one worker as a whole, so that its module-scoped daemons start once. A unit test keeps this list
true (tests/unit/test_rig_schedule.py)."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, with the files of KAFKA_FILES one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-not-found,import-untyped,unused-ignore]

    class Scheduling(LoadFileScheduling):  # type: ignore[misc,unused-ignore]
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return KAFKA_GROUP if path in KAFKA_FILES else path

    return Scheduling(config, log)


@pytest.fixture(scope="session")
def rig_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rig")


@pytest.fixture(scope="session")
def oci_registry(rig_workdir: Path) -> Iterator[OciRegistry]:
    """A real OCI registry (distribution 2.8) at ``oci_registry.host``, deletes enabled."""
    if install.command_path("docker-registry") is None:
        unavailable("OCI registry", "docker-registry is not installed", f"sudo {_install_hint('apt')}")
    registry = OciRegistry(rig_workdir / "registry")
    with _running("OCI registry", registry.start, registry.stop, f"sudo {_install_hint('apt')}"):
        yield registry


@pytest.fixture(scope="session", params=["htpasswd", "token"])
def oci_registry_auth(request: pytest.FixtureRequest, rig_workdir: Path) -> Iterator[OciRegistry]:
    """A real OCI registry that wants credentials: HTTP basic (htpasswd), or bearer tokens from a
    token service; ``.username``/``.password`` are its one account."""
    if install.command_path("docker-registry") is None:
        unavailable("OCI registry", "docker-registry is not installed", f"sudo {_install_hint('apt')}")
    registry = OciRegistry(rig_workdir / f"registry-{request.param}", auth=request.param)
    with _running("OCI registry", registry.start, registry.stop, f"sudo {_install_hint('apt')}"):
        yield registry


@pytest.fixture(scope="session")
def _kafka_session(rig_workdir: Path) -> Iterator[KafkaBroker]:
    java = install.java_path()
    if java is None:
        unavailable("Kafka", "no Java 17 or newer", f"sudo {_install_hint('apt')}")
    classpath = install.kafka_classpath()
    if classpath is None:
        unavailable(
            "Kafka", f"the Kafka {install.KAFKA_VERSION} jars are not installed", _install_hint("kafka")
        )
    assert java is not None
    assert classpath is not None
    broker = KafkaBroker(rig_workdir / "kafka", java, classpath)

    def start() -> None:
        broker.start()
        broker.create_restricted_user()

    with _running("Kafka", start, broker.stop, _install_hint("kafka")):
        yield broker


@pytest.fixture
def kafka_broker(_kafka_session: KafkaBroker) -> KafkaBroker:
    """A running Kafka 4.x broker with SASL/SCRAM and ACLs; ``.admin`` and ``.restricted`` hold
    credentials. A test may stop, kill or restart it; the next test gets it running again."""
    if not _kafka_session.running:
        _kafka_session.start()
    return _kafka_session


@pytest.fixture(scope="session")
def prometheus(rig_workdir: Path) -> Iterator[Prometheus]:
    """A real Prometheus; tests choose what it scrapes with ``set_targets``."""
    if install.command_path("prometheus") is None:
        unavailable("Prometheus", "prometheus is not installed", f"sudo {_install_hint('apt')}")
    server = Prometheus(rig_workdir / "prometheus")
    with _running("Prometheus", server.start, server.stop, f"sudo {_install_hint('apt')}"):
        yield server


@pytest.fixture(scope="session")
def go_tools() -> GoTools:
    """cosign, oras, grpcurl, grpc_health_probe and sops at the pinned versions."""
    paths = {name: install.tool_path(name) for name in install.GO_TOOLS}
    absent = sorted(name for name, path in paths.items() if path is None)
    if absent:
        unavailable("Go tools", f"{', '.join(absent)} not built at the pinned versions", _install_hint("go"))
    return GoTools({name: path for name, path in paths.items() if path is not None})


@pytest.fixture
def aiond(tmp_path: Path) -> Iterator[Aiond]:
    """A real aiond on the example config, on free loopback ports, ready; stopped after the test."""
    daemon = Aiond(tmp_path).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """A stand-in model provider speaking the OpenAI and Anthropic wire formats on a free loopback
    port (``.url`` / ``.anthropic_url``), with scriptable failures; stopped after the test. It accepts
    any key until ``.api_key`` is set."""
    from tests.rig.providers import StandIn

    with StandIn() as server:
        yield server


@pytest.fixture(scope="session")
def sarif_schema() -> Path:
    """The official SARIF 2.1.0 JSON Schema (Microsoft's rtm.5), for checking aionctl's SARIF output."""
    path = install.sarif_schema_path()
    if path is None:
        unavailable("SARIF schema", "it has not been fetched", _install_hint("sarif"))
    assert path is not None
    return path
