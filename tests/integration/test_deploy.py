"""deploy/ kept true: the Kubernetes overlays against the API's schemas, the compose file against the
Compose Specification, and both against aiond itself.

- Every overlay is rendered by kustomize and checked by kubeconform -strict against the pinned
  Kubernetes version's schemas (tests/rig/deploy_schemas.py; no network at test time), and a manifest
  with a misspelled field, a wrong type or a removed API version is refused, so the check can fail.
- What the schemas cannot see: selectors that select aiond's pods (and DNS's), one replica per state
  volume, the restricted securityContext, the probes, ports that are aiond's defaults, the policy set
  that is examples/ word for word.
- The rendered Deployment's arguments, volumes laid out as the kubelet mounts them, run a real aiond
  that becomes ready and answers the probes' requests; the image's healthcheck script asks it too.
- compose.yaml against the Compose Specification's schema (compose-go's copy), with the dashboards,
  ports, scrape target and mounted files checked, and `promtool check config` on prometheus.yml.
- The stack's Kafka as kafka/start.sh configures it (on the rig's jars of the image's Kafka version),
  set up by kafka-setup's own commands, takes aiond's audit events with the stack's kafka.yml.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import jsonschema_rs
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aiond.settings import DEFAULT_GRPC_LISTEN, DEFAULT_HTTP_LISTEN
from tests.rig import install
from tests.rig.certs import Authority
from tests.rig.daemon import EXAMPLES, REPO, Aiond, aionctl, clean_env, program
from tests.rig.plugin import unavailable
from tests.rig.procs import ManagedProcess, free_port, http_ok, poll

DEPLOY = REPO / "deploy"
KUSTOMIZE_DIRS = {
    "base": DEPLOY / "kubernetes" / "base",
    "dev": DEPLOY / "kubernetes" / "overlays" / "dev",
    "prod": DEPLOY / "kubernetes" / "overlays" / "prod",
}
KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
GRPC_PORT, HTTP_PORT = DEFAULT_GRPC_LISTEN.port, DEFAULT_HTTP_LISTEN.port
CONFIG_FILES = ("intents.yml", "policies.yml", "models.yml", "modules.yml")


# -- tools -------------------------------------------------------------------------------------------


def _tool(name: str) -> Path:
    path = install.tool_path(name)
    if path is None:
        unavailable(
            name, f"{name} {install.GO_TOOLS[name][1]} is not built", "python3 tests/rig/install.py go"
        )
    assert path is not None
    return path


@pytest.fixture(scope="module")
def kustomize() -> Path:
    return _tool("kustomize")


@pytest.fixture(scope="module")
def kubeconform() -> Path:
    path = _tool("kubeconform")
    if install.kubernetes_schemas_path() is None:
        unavailable(
            "Kubernetes schemas",
            f"the Kubernetes {install.KUBERNETES_MODULE[1]} API schemas have not been made",
            "python3 tests/rig/install.py deploy",
        )
    return path


@pytest.fixture(scope="module")
def compose_validator() -> Any:
    path = install.compose_schema_path()
    if path is None:
        unavailable(
            "Compose schema",
            "the Compose Specification's schema is not fetched",
            "python3 tests/rig/install.py deploy",
        )
    assert path is not None
    return jsonschema_rs.validator_for(json.loads(path.read_text()))


def build(kustomize: Path, directory: Path) -> str:
    result = subprocess.run(
        [str(kustomize), "build", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kustomize build {directory}:\n{result.stderr}"
    return result.stdout


def conform(kubeconform: Path, manifests: str) -> tuple[int, dict[str, Any]]:
    """kubeconform -strict on ``manifests`` with the rig's schemas only (nothing remote)."""
    result = subprocess.run(
        [
            str(kubeconform),
            "-strict",
            "-summary",
            "-output", "json",
            "-kubernetes-version", install.kubernetes_version(),
            "-schema-location", str(install.kubernetes_schemas_path()),
            "-",
        ],
        input=manifests, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module")
def rendered(kustomize: Path) -> dict[str, str]:
    return {name: build(kustomize, directory) for name, directory in KUSTOMIZE_DIRS.items()}


def objects(manifests: str) -> dict[str, dict[str, Any]]:
    """Kind -> the one object of that kind; ConfigMap -> the policy set's (prod adds kafka.yml's)."""
    found: dict[str, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(manifests):
        if doc["kind"] == "ConfigMap" and not doc["metadata"]["name"].startswith("aiond-config-"):
            continue
        assert doc["kind"] not in found, f"two {doc['kind']} objects"
        found[doc["kind"]] = doc
    return found


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


# -- Kubernetes: the schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KUSTOMIZE_DIRS))
def test_every_object_is_valid_against_the_pinned_api(
    kubeconform: Path, rendered: dict[str, str], name: str
) -> None:
    code, report = conform(kubeconform, rendered[name])
    problems = [r for r in report.get("resources", []) if r["status"] != "statusValid"]
    assert code == 0, problems
    count = len(list(yaml.safe_load_all(rendered[name])))
    assert report["summary"] == {"valid": count, "invalid": 0, "errors": 0, "skipped": 0}
    assert set(objects(rendered[name])) == KINDS


def _edited(manifests: str, kind: str, edit: Any) -> str:
    docs = list(yaml.safe_load_all(manifests))
    for doc in docs:
        if doc["kind"] == kind:
            edit(doc)
    return yaml.safe_dump_all(docs)


def _misspell_probe(doc: dict[str, Any]) -> None:
    spec = doc["spec"]["template"]["spec"]["containers"][0]
    spec["readynessProbe"] = spec.pop("readinessProbe")


def _wrong_type(doc: dict[str, Any]) -> None:
    doc["spec"]["replicas"] = "one"


def _nested_unknown(doc: dict[str, Any]) -> None:
    doc["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True


def _removed_api(doc: dict[str, Any]) -> None:
    doc["apiVersion"] = "autoscaling/v2beta2"  # served until Kubernetes 1.25


@pytest.mark.parametrize(
    ("kind", "edit", "said"),
    [
        ("Deployment", _misspell_probe, "readynessProbe"),
        ("Deployment", _wrong_type, "/spec/replicas"),
        ("Deployment", _nested_unknown, "runAsNonroot"),
        ("HorizontalPodAutoscaler", _removed_api, "could not find schema for HorizontalPodAutoscaler"),
    ],
    ids=["misspelled-field", "wrong-type", "unknown-nested-field", "removed-api-version"],
)
def test_a_broken_manifest_is_refused(
    kubeconform: Path, rendered: dict[str, str], kind: str, edit: Any, said: str
) -> None:
    code, report = conform(kubeconform, _edited(rendered["dev"], kind, edit))
    assert code == 1
    bad = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert [r["kind"] for r in bad] == [kind]
    assert said in bad[0]["msg"]


def test_int_or_string_and_quantities_take_both_forms(kubeconform: Path, rendered: dict[str, str]) -> None:
    """The two types the API decodes from a string or a number, as the API server does."""

    def numbers(doc: dict[str, Any]) -> None:
        pod = doc["spec"]["template"]["spec"]["containers"][0]
        pod["livenessProbe"]["httpGet"]["port"] = HTTP_PORT
        pod["resources"]["requests"]["cpu"] = 0.5

    code, report = conform(kubeconform, _edited(rendered["dev"], "Deployment", numbers))
    assert code == 0, report

    def boolean(doc: dict[str, Any]) -> None:
        doc["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = True

    code, _ = conform(kubeconform, _edited(rendered["dev"], "Deployment", boolean))
    assert code == 1


# -- Kubernetes: what the schemas cannot see --------------------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", sorted(KUSTOMIZE_DIRS))
def test_selectors_select_aionds_pods_and_nothing_else(rendered: dict[str, str], name: str) -> None:
    objs = objects(rendered[name])
    deployment = objs["Deployment"]["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert _matches(deployment["selector"]["matchLabels"], pod_labels)
    assert _matches(objs["Service"]["spec"]["selector"], pod_labels)
    assert _matches(objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], pod_labels)
    policy = objs["NetworkPolicy"]["spec"]
    assert _matches(policy["podSelector"]["matchLabels"], pod_labels)
    # Peer selectors are left as written: DNS is kube-dns's pods, not pods labelled like aiond.
    dns = [peer for rule in policy["egress"] for peer in rule.get("to", ()) if "podSelector" in peer]
    assert [peer["podSelector"] for peer in dns] == [{"matchLabels": {"k8s-app": "kube-dns"}}]
    target = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", objs["Deployment"]["metadata"]["name"])


@pytest.mark.parametrize("name", sorted(KUSTOMIZE_DIRS))
def test_one_writer_per_state_volume(rendered: dict[str, str], name: str) -> None:
    objs = objects(rendered[name])
    deployment = objs["Deployment"]["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 1)
    assert objs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container(objs)["volumeMounts"]}
    (state,) = [n for n, v in volumes.items() if "persistentVolumeClaim" in v]
    assert (
        volumes[state]["persistentVolumeClaim"]["claimName"]
        == objs["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert f"--state-dir={mounts[state]}" in container(objs)["args"]


@pytest.mark.parametrize("name", sorted(KUSTOMIZE_DIRS))
def test_the_security_context_is_restricted(rendered: dict[str, str], name: str) -> None:
    objs = objects(rendered[name])
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert objs["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(objs)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    # Written only where a volume is: the state and /tmp; every config and secret mount is read-only.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container(objs)["volumeMounts"]:
        kind = next(k for k in volumes[mount["name"]] if k != "name")
        if kind in ("configMap", "secret"):
            assert mount.get("readOnly") is True, mount
        else:
            assert kind in ("persistentVolumeClaim", "emptyDir"), mount


@pytest.mark.parametrize("name", sorted(KUSTOMIZE_DIRS))
def test_probes_and_ports_are_aionds(rendered: dict[str, str], name: str) -> None:
    objs = objects(rendered[name])
    spec = container(objs)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": HTTP_PORT}
    assert f"--grpc-listen=0.0.0.0:{GRPC_PORT}" in spec["args"]
    assert f"--http-listen=0.0.0.0:{HTTP_PORT}" in spec["args"]
    service = {p["name"]: (p["port"], p["targetPort"]) for p in objs["Service"]["spec"]["ports"]}
    assert service == {"grpc": (GRPC_PORT, "grpc"), "http": (HTTP_PORT, "http")}
    tls = any(arg.startswith("--tls-cert=") for arg in spec["args"])
    scheme = "HTTPS" if tls else "HTTP"
    assert spec["livenessProbe"]["httpGet"] | {"scheme": scheme} == {
        "path": "/healthz",
        "port": "http",
        "scheme": scheme,
    }
    assert spec["readinessProbe"]["httpGet"] | {"scheme": scheme} == {
        "path": "/readyz",
        "port": "http",
        "scheme": scheme,
    }
    if tls:  # the kubelet's gRPC probe has no TLS
        assert spec["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTPS"}
    else:
        assert spec["startupProbe"]["grpc"] == {"port": GRPC_PORT}
    grace = objs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in spec["args"])
    assert grace > float(flags["shutdown-delay"]) + float(flags["shutdown-grace"])


@pytest.mark.parametrize("name", sorted(KUSTOMIZE_DIRS))
def test_the_policy_set_is_the_example_config(rendered: dict[str, str], name: str) -> None:
    docs = list(yaml.safe_load_all(rendered[name]))
    maps = {d["metadata"]["name"].rsplit("-", 1)[0]: d for d in docs if d["kind"] == "ConfigMap"}
    assert set(maps) == ({"aiond-config", "aiond-kafka"} if name == "prod" else {"aiond-config"})
    assert maps["aiond-config"]["data"] == {f: (EXAMPLES / f).read_text() for f in CONFIG_FILES}, (
        "deploy/kubernetes/base/config/ differs from examples/: "
        f"cp {' '.join(f'examples/{f}' for f in CONFIG_FILES)} deploy/kubernetes/base/config/"
    )
    if name == "prod":
        assert maps["aiond-kafka"]["data"] == {"kafka.yml": (EXAMPLES / "kafka.yml").read_text()}


# -- Kubernetes: the rendered Deployment runs a real aiond ------------------------------------------


def kubelet_volume(directory: Path, files: dict[str, bytes]) -> Path:
    """``files`` laid out as the kubelet mounts a ConfigMap or Secret volume: the data in a
    timestamped directory, ``..data`` linking to it, and one link per key."""
    stamp = directory / "..2026_12_03_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, data in files.items():
        (stamp / key).write_bytes(data)
    (directory / "..data").symlink_to(stamp.name)
    for key in files:
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def run_deployment(
    manifests: str, workdir: Path, secrets: dict[str, dict[str, bytes]], drop: tuple[str, ...] = ()
) -> Aiond:
    """Start aiond with the Deployment's arguments, each mount path moved under ``workdir`` and its
    volume made there as the kubelet would; the listen addresses are free loopback ports instead."""
    docs = list(yaml.safe_load_all(manifests))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    moved: dict[str, Path] = {}
    for mount in spec["volumeMounts"]:
        volume, local = volumes[mount["name"]], workdir / mount["name"]
        if "configMap" in volume:
            data = by_name["ConfigMap", volume["configMap"]["name"]]["data"]
            kubelet_volume(local, {k: v.encode() for k, v in data.items()})
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            if name in secrets:
                kubelet_volume(local, secrets[name])
            else:
                assert volume["secret"].get("optional") is True, f"secret {name} is needed to start"
                local.mkdir()
        elif "persistentVolumeClaim" in volume:
            local = workdir / "state"  # where the rig's Aiond writes the test tokens
            local.mkdir()
        else:
            local.mkdir()
        moved[mount["mountPath"]] = local
    args: list[str] = []
    for arg in spec["args"]:
        flag, _, value = arg.partition("=")
        if flag in ("--grpc-listen", "--http-listen", *drop):
            continue
        for mount_path, local in sorted(moved.items(), key=lambda item: -len(item[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(local) + value[len(mount_path) :]
                break
        args += [flag, value]
    return Aiond(workdir, config_dir=moved["/etc/aion/config"], extra_args=args).start()


def healthcheck(daemon: Aiond, path: str, *, tls: bool) -> subprocess.CompletedProcess[str]:
    env = clean_env({"AIOND_HTTP_LISTEN": daemon.http_addr})
    if tls:
        env["AIOND_TLS_CERT"] = "set"
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py"), path],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip


def grpc_health(address: str) -> int:
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(answer.status)


def test_the_dev_deployment_runs_aiond_and_answers_its_probes(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    daemon = run_deployment(rendered["dev"], tmp_path, secrets={})
    try:
        assert grpc_health(daemon.grpc_addr) == health_pb2.HealthCheckResponse.SERVING  # startupProbe
        assert http_ok(f"http://{daemon.http_addr}/healthz")  # livenessProbe
        assert http_ok(f"http://{daemon.http_addr}/readyz")  # readinessProbe
        for path in ("/healthz", "/readyz"):
            result = healthcheck(daemon, path, tls=False)
            assert result.returncode == 0, result.stderr
        first = (tmp_path / "aiond.log").read_text().splitlines()[0]
        assert "level" in json.loads(first)  # --log-format=json took effect
    finally:
        daemon.stop()
    result = healthcheck(daemon, "/healthz", tls=False)
    assert result.returncode == 1
    assert daemon.http_addr in result.stderr


def test_the_prod_deployment_serves_tls_with_the_mounted_certificates(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    authority = Authority(tmp_path / "pki")
    server = authority.issue("server", common_name="aiond", dns=("aiond.aion.svc",), ips=("127.0.0.1",))
    tls = {
        "tls.crt": server.cert.read_bytes(),
        "tls.key": server.key.read_bytes(),
        "ca.crt": authority.pem.read_bytes(),
    }
    # Kafka's brokers are the example's, which are not here: the run leaves --kafka-config out (the
    # CA's volume is still mounted, as the pod needs it to start).
    secrets = {"aiond-tls": tls, "aiond-kafka-ca": {"ca.pem": authority.pem.read_bytes()}}
    daemon = run_deployment(rendered["prod"], tmp_path / "pod", secrets=secrets, drop=("--kafka-config",))
    try:
        trust = ssl.create_default_context(cafile=str(authority.pem))
        assert http_ok(f"https://{daemon.http_addr}/healthz", verify=trust)
        assert http_ok(f"https://{daemon.http_addr}/readyz", verify=trust)
        result = healthcheck(daemon, "/readyz", tls=True)
        assert result.returncode == 0, result.stderr
        assert healthcheck(daemon, "/readyz", tls=False).returncode == 1  # plain HTTP is not served
    finally:
        daemon.stop()


# -- the container image ----------------------------------------------------------------------------


def containerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Containerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_runs_aiond_unprivileged_on_its_default_ports(rendered: dict[str, str]) -> None:
    steps = containerfile()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for i, a in steps if i == "ARG" and "=" in a}
    python = re.search(r"python:(\d+)\.(\d+)-slim", args["PYTHON_IMAGE"])
    assert python
    assert (int(python[1]), int(python[2])) >= (3, 11)
    assert [a for i, a in steps if i == "EXPOSE"] == [f"{GRPC_PORT} {HTTP_PORT}"]
    (user,) = [a for i, a in steps if i == "USER"]
    uid = int(args["AION_UID"]) if user.startswith("${AION_UID}") else int(user.split(":")[0])
    assert uid > 0
    pod = objects(rendered["base"])["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, uid)
    (entry,) = [a for i, a in steps if i == "ENTRYPOINT"]
    assert json.loads(entry) == ["aiond"]
    (check,) = [a for i, a in steps if i == "HEALTHCHECK"]
    assert "/usr/local/lib/aion/healthcheck.py" in check
    # Every file copied from the source tree is there, and the wheel's package data is among them.
    sources = [a.split()[0] for i, a in steps if i == "COPY" and not a.startswith("--from")]
    for source in sources:
        assert (REPO / source).exists(), source
    copied = {s.rstrip("/") for s in sources}
    assert {"pyproject.toml", "aion", "aionctl", "aiond", "schemas", "examples/runbooks"} <= copied


# -- compose ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_is_valid_against_the_compose_specification(
    compose_validator: Any, compose: dict[str, Any]
) -> None:
    errors = [f"{list(e.instance_path)}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    ("where", "key"),
    [
        (("services", "aiond"), "helthcheck"),
        (("services", "grafana", "healthcheck"), "intervall"),
        ((), "volume"),
    ],
)
def test_a_misspelled_compose_key_is_refused(
    compose_validator: Any, compose: dict[str, Any], where: tuple[str, ...], key: str
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for part in where:
        node = node[part]
    node[key] = {} if key != "intervall" else "10s"
    messages = [e.message for e in compose_validator.iter_errors(broken)]
    assert any(key in m for m in messages), messages


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of a service's bind mounts (short syntax, relative to deploy/)."""
    found = {}
    for volume in service.get("volumes", ()):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = source
    return found


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in command)


def test_compose_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            assert (DEPLOY / source).exists(), f"{name}: {source} (mounted at {target}) does not exist"
    # The secrets are made by dev-secrets.sh, into the git-ignored deploy/secrets/.
    assert {Path(s["file"]).parent for s in compose["secrets"].values()} == {Path("secrets")}
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "deploy/secrets/kafka_admin_password"], check=False
    )
    assert ignored.returncode == 0


def test_dev_secrets_makes_every_secret_compose_reads(compose: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    subprocess.run(["sh", str(DEPLOY / "dev-secrets.sh"), str(target)], check=True, capture_output=True)
    made = {p.name: p.read_text() for p in target.iterdir()}
    assert set(made) == {Path(s["file"]).name for s in compose["secrets"].values()}
    assert all(re.fullmatch(r"[0-9a-f]{48}", v) for v in made.values())  # what kafka/start.sh accepts
    assert len(set(made.values())) == len(made)
    again = subprocess.run(
        ["sh", str(DEPLOY / "dev-secrets.sh"), str(target)], check=True, capture_output=True
    )
    assert again.stdout == b""  # kept, not remade
    assert {p.name: p.read_text() for p in target.iterdir()} == made


def test_compose_aiond_runs_on_the_examples_with_kafka(compose: dict[str, Any]) -> None:
    aiond = compose["services"]["aiond"]
    flags = _flags(aiond["command"])
    mounts = _mounts(aiond)
    assert Path(mounts[flags["config"]]) == Path("../examples")
    assert Path(mounts[flags["kafka-config"]]) == Path("compose/kafka.yml")
    assert f"aiond-state:{flags['state-dir']}" in aiond["volumes"]
    assert "aiond-state" in compose["volumes"]
    assert flags["grpc-listen"] == f"0.0.0.0:{GRPC_PORT}"
    assert flags["http-listen"] == f"0.0.0.0:{HTTP_PORT}"
    assert aiond["ports"] == [f"127.0.0.1:{GRPC_PORT}:{GRPC_PORT}", f"127.0.0.1:{HTTP_PORT}:{HTTP_PORT}"]
    assert "/readyz" in aiond["healthcheck"]["test"]
    # Each flag is one aiond has.
    usage = subprocess.run([program("aiond"), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in flags:
        assert f"--{flag} " in usage, flag
    # The Kafka password aiond's kafka.yml names is in aiond's secrets directory.
    kafka = yaml.safe_load((DEPLOY / "compose" / "kafka.yml").read_text())["kafka"]
    secret = kafka["security"]["sasl"]["password_secret"]
    assert f"{flags['secrets-dir']}/{secret}" in [s["target"] for s in aiond["secrets"]]
    host, port = kafka["bootstrap_servers"][0].split(":")
    assert host in compose["services"]
    start = (DEPLOY / "kafka" / "start.sh").read_text()
    assert f"HOST=${{KAFKA_ADVERTISED_HOST:-{host}}}" in start
    assert f"BROKER_PORT=${{KAFKA_BROKER_PORT:-{port}}}" in start
    (published,) = compose["services"]["kafka"]["ports"]
    external = published.rsplit(":", 1)[1]
    assert f"EXTERNAL_PORT=${{KAFKA_EXTERNAL_PORT:-{external}}}" in start


def test_compose_kafka_yml_validates_clean() -> None:
    result = subprocess.run(
        [program("aionctl"), "validate", "--strict", "--fail-on-warn", str(DEPLOY / "compose" / "kafka.yml")],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 warnings" in result.stdout + result.stderr


def test_prometheus_scrapes_aionds_http_port(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config = _flags(prometheus["command"])["config.file"]
    assert Path(_mounts(prometheus)[config]) == Path("prometheus/prometheus.yml")
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = [j for j in scrape if j["job_name"] == "aiond"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert [t for c in job["static_configs"] for t in c["targets"]] == [f"aiond:{HTTP_PORT}"]
    promtool = install.command_path("promtool")
    if promtool is None:
        unavailable("promtool", "prometheus is not installed", "sudo python3 tests/rig/install.py apt")
    result = subprocess.run(
        [str(promtool), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_exactly_the_example_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning/dashboards"]
    (provider_file,) = provisioning.glob("*.yml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file"
    mounted = DEPLOY / mounts[provider["options"]["path"]]
    assert mounted.resolve() == (EXAMPLES / "dashboards").resolve()
    shipped = sorted(p.name for p in (EXAMPLES / "dashboards").glob("*.json"))
    assert sorted(p.name for p in mounted.iterdir()) == shipped
    assert shipped
    # The dashboards' DS_PROMETHEUS variable picks the default Prometheus: the stack's.
    datasources = DEPLOY / mounts["/etc/grafana/provisioning/datasources"]
    (source,) = yaml.safe_load(next(datasources.glob("*.yml")).read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["url"] == f"http://prometheus:{port}"
    for name in shipped:
        dashboard = json.loads((EXAMPLES / "dashboards" / name).read_text())
        assert any(v["name"] == "DS_PROMETHEUS" for v in dashboard["templating"]["list"])


# -- compose: Kafka as kafka/start.sh runs it -------------------------------------------------------


def _kafka_home(directory: Path) -> Path:
    """The two scripts of the Kafka image that start.sh runs, over the rig's Kafka jars (the image's
    version, install.KAFKA_VERSION)."""
    java, classpath = install.java_path(), install.kafka_classpath()
    if java is None or classpath is None:
        unavailable("Kafka", "no Java 17 or no Kafka jars", "sudo python3 tests/rig/install.py apt kafka")
    assert java is not None
    assert classpath is not None
    log_config = directory / "log4j2.properties"
    directory.joinpath("bin").mkdir(parents=True)
    log_config.write_text(
        "rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\nappender.out.type=Console\n"
        "appender.out.name=OUT\nappender.out.layout.type=PatternLayout\nappender.out.layout.pattern=%p %m%n\n"
    )
    for script, main in (
        ("kafka-storage.sh", "kafka.tools.StorageTool"),
        ("kafka-server-start.sh", "kafka.Kafka"),
    ):
        path = directory / "bin" / script
        path.write_text(
            f"#!/bin/sh\nexec '{java}' -Xms256m -Xmx512m -XX:TieredStopAtLevel=1 "
            f"-Dlog4j2.configurationFile='{log_config}' -cp '{classpath}' {main} \"$@\"\n"
        )
        path.chmod(0o755)
    return directory


def _kafka_setup_commands(compose: dict[str, Any]) -> list[list[str]]:
    """kafka-setup's shell command, as the argument lists of its aionctl runs."""
    (script,) = compose["services"]["kafka-setup"]["command"]
    return [part.split() for part in script.split("&&")]


def test_the_stacks_kafka_takes_aionds_events(compose: dict[str, Any], tmp_path: Path) -> None:
    """start.sh's broker, kafka-setup's commands and the stack's kafka.yml, as compose runs them,
    with the services' names and ports moved to loopback: aiond's audit events reach the topic."""
    home = _kafka_home(tmp_path / "kafka-home")
    secrets = tmp_path / "secrets"
    subprocess.run(["sh", str(DEPLOY / "dev-secrets.sh"), str(secrets)], check=True, capture_output=True)
    broker_port, external_port, controller_port = free_port(), free_port(), free_port()
    env = clean_env(
        {
            "KAFKA_HOME": str(home),
            "KAFKA_DATA_DIR": str(tmp_path / "data"),
            "KAFKA_CONF_DIR": str(tmp_path / "conf"),
            "KAFKA_SECRETS_DIR": str(secrets),
            "KAFKA_LISTEN_HOST": "127.0.0.1",
            "KAFKA_ADVERTISED_HOST": "127.0.0.1",
            "KAFKA_BROKER_PORT": str(broker_port),
            "KAFKA_EXTERNAL_PORT": str(external_port),
            "KAFKA_CONTROLLER_PORT": str(controller_port),
        }
    )
    kafka = ManagedProcess(
        "kafka", ["sh", str(DEPLOY / "kafka" / "start.sh")], log_path=tmp_path / "kafka.log", env=env
    )
    kafka.start()
    try:
        # aionctl's secrets directory and aiond's, as compose mounts them.
        admin_dir, aiond_dir = tmp_path / "admin-secrets", tmp_path / "aiond-secrets"
        admin_dir.mkdir()
        aiond_dir.mkdir()
        for service, directory in (("kafka-setup", admin_dir), ("aiond", aiond_dir)):
            for entry in compose["services"][service]["secrets"]:
                source = secrets / Path(compose["secrets"][entry["source"]]["file"]).name
                (directory / Path(entry["target"]).name).write_bytes(source.read_bytes())
        # The stack's kafka.yml with the service's name moved to the host's listener.
        text = (DEPLOY / "compose" / "kafka.yml").read_text()
        assert "[kafka:9092]" in text
        kafka_yml = tmp_path / "kafka.yml"
        kafka_yml.write_text(text.replace("[kafka:9092]", f"[127.0.0.1:{external_port}]"))

        def setup_done() -> bool:
            for argv in _kafka_setup_commands(compose):
                assert argv[0] == "aionctl"
                args = [str(kafka_yml) if a == "/etc/aion/kafka.yml" else a for a in argv[1:]]
                args = [str(admin_dir) if a == "/run/secrets/admin" else a for a in args]
                result = aionctl(*args, "--timeout", "5")
                if result.returncode == 5:  # the broker is not up yet
                    return False
                assert result.returncode == 0, result.stdout + result.stderr
            return True

        poll(setup_done, timeout=90, what="kafka-setup", alive=kafka.exited)
        flags = _flags(compose["services"]["aiond"]["command"])
        daemon = Aiond(
            tmp_path / "aiond",
            extra_args=[
                "--kafka-config", str(kafka_yml),
                "--secrets-dir", str(aiond_dir),
                "--startup-policy", flags["startup-policy"],
            ],
        ).start()  # fmt: skip
        try:
            reload = aionctl("policy", "reload", env=daemon.aionctl_env())
            assert reload.returncode == 0, reload.stderr
            # A token made after start, by `aiond token` beside the running daemon, goes out too.
            daemon.create_token("ops", "operator")
            verify = aionctl(
                "audit", "verify", "--since", "10m", "--wait", "10s", "--kafka-config", str(kafka_yml),
                "--sasl-username", "admin", "--sasl-password-secret", "KAFKA_ADMIN_PASSWORD",
                "--secrets-dir", str(admin_dir), "-o", "json",
                env=daemon.aionctl_env(), timeout=120,
            )  # fmt: skip
            report = json.loads(verify.stdout)
            # Only the rig's tokens, made before aiond ever had Kafka, stay local (docs/kafka.md).
            missing = {(m["action"], m["target"]) for m in report["missing"]}
            assert missing == {("token.create", f"test-{role}") for role in ("viewer", "operator", "admin")}
            assert report["found"] == report["local"]["events"] - len(missing)
            assert report["found"] >= 3, report  # the start's activation, the reload, the new token
        finally:
            daemon.stop()
    finally:
        kafka.stop()
