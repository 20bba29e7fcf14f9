#!/usr/bin/env python3
"""Install the real services and tools the test suite runs against. Idempotent; caches under ~/.cache.

    python3 tests/rig/install.py all      # everything below (what `.ci/run` and `nox -s tests` run)
    python3 tests/rig/install.py apt      # docker-registry, prometheus, Java 17, Maven, the WASM
                                          # toolchain (clang, lld, wasi-libc), bubblewrap, age
                                          # (needs root or sudo)
    python3 tests/rig/install.py go       # cosign, oras, grpcurl, grpc_health_probe, sops, kubeconform,
                                          # kustomize at pinned versions
    python3 tests/rig/install.py kafka    # Kafka broker jars from Maven Central
    python3 tests/rig/install.py sarif    # the official SARIF 2.1.0 JSON Schema, from the npm registry
    python3 tests/rig/install.py deploy   # the Kubernetes API's schemas (pinned version) and the Compose
                                          # Specification's schema, from the Go module proxy
    python3 tests/rig/install.py check    # report what is missing; exit 1 if anything is

The test fixtures import this module to find what it installed (same paths, same pins), so the two can
never disagree. Only the standard library is used: this runs before any virtualenv exists.

Environment: AION_RIG_HOME (default ~/.cache/aion-rig) holds the tools, the Kafka jars, the Go module
cache and, when the machine's Go is missing or too old, a Go toolchain fetched from the Go module proxy.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import io
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

RIG_HOME = Path(os.environ.get("AION_RIG_HOME") or Path.home() / ".cache" / "aion-rig")
BIN_DIR = RIG_HOME / "bin"
HERE = Path(__file__).resolve().parent

# Go-built peers: binary name -> (package, version). Bump a version here and the tools rebuild.
GO_TOOLS: dict[str, tuple[str, str]] = {
    "cosign": ("github.com/sigstore/cosign/v3/cmd/cosign", "v3.1.3"),
    "oras": ("oras.land/oras/cmd/oras", "v1.3.6"),
    "grpcurl": ("github.com/fullstorydev/grpcurl/cmd/grpcurl", "v1.9.4"),
    "grpc_health_probe": ("github.com/grpc-ecosystem/grpc-health-probe", "v0.4.62"),
    "sops": ("github.com/getsops/sops/v3/cmd/sops", "v3.13.3"),
    # deploy/: kustomize renders the overlays, kubeconform checks them against the schemas below
    "kubeconform": ("github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0"),
    "kustomize": ("sigs.k8s.io/kustomize/kustomize/v5", "v5.8.2"),
}
GO_MIN_VERSION = (1, 26, 7)  # oras v1.3.6 declares go 1.26.7
GO_FALLBACK_TOOLCHAIN = "go1.26.8"
# The toolchain module's hashes as recorded in the Go checksum database (sum.golang.org), which is
# what the go command itself checks before it runs a downloaded toolchain.
GO_TOOLCHAIN_H1 = {
    "amd64": "h1:ZOmGe1OnfREDMIdb1Qi4G9JSuDPBLGExZMQ4nis1RXM=",
    "arm64": "h1:sYL/O6MqS68ML0kjsQ36WoYIpJqkw60TxizWUYUKQMc=",
}

KAFKA_VERSION = "4.1.1"
KAFKA_POM = HERE / "kafka" / "pom.xml"
KAFKA_LIBS = RIG_HOME / "kafka" / KAFKA_VERSION / "libs"

# The SARIF 2.1.0 schema (rtm.5) as Microsoft publishes it inside @microsoft/jest-sarif; fetched as the
# npm registry serves the package, checked against the registry's integrity hash.
SARIF_TARBALL = "https://registry.npmjs.org/@microsoft/jest-sarif/-/jest-sarif-1.0.0-beta.0.tgz"
SARIF_INTEGRITY = (
    "sha512-A1fOhPd6Ic5iDk4F9YPw1qNB4XF+7+IviR7xl8r2F6QzQkx5cpY9LsGk2rExiFIEcBbjpVnSmwWGBukASkiQ9A=="
)
SARIF_MEMBER = "package/lib/schemas/sarif-2.1.0-rtm.5.json"
SARIF_SCHEMA = RIG_HOME / "sarif" / "sarif-2.1.0-rtm.5.json"

# The schemas deploy/ is checked against (tests/rig/deploy_schemas.py makes them): module, version and
# the zip's hash as the Go checksum database records it.
KUBERNETES_MODULE = ("k8s.io/kubernetes", "v1.36.3", "h1:qDQdoMiluAE2Eab6Fa52YV+WjiGz9mZFFoagEA6cI+o=")
COMPOSE_MODULE = (
    "github.com/compose-spec/compose-go/v2",
    "v2.16.2",
    "h1:pTp1DqQwJzFd85GzlWsSszKA1ABrV/ySqsClujIcWA8=",
)
KUBERNETES_SCHEMAS = RIG_HOME / "kubernetes-schemas"  # kubeconform's -schema-location
COMPOSE_SCHEMA = RIG_HOME / "compose" / f"compose-spec-{COMPOSE_MODULE[1]}.json"

# Debian packages: package -> what shows it is installed: a command it provides, or (an absolute
# path, possibly a glob) a file it installs, for packages that provide no command.
APT_PACKAGES = {
    "docker-registry": "docker-registry",
    "prometheus": "prometheus",
    "time": "time",  # GNU time: peak RSS in the benchmarks
    # The WASM toolchain (tests/rig/wasm.py, tools/build_modules.py): clang 14 and its wasm32 linker,
    # the WASI C library, and compiler-rt's wasm32 builtins.
    "clang": "clang",
    "lld": "wasm-ld",
    "wasi-libc": "/usr/lib/wasm32-wasi/libc.a",
    "libclang-rt-14-dev-wasm32": "/usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a",
    "bubblewrap": "bwrap",  # the subprocess module sandbox
    "age": "age",
}
JAVA_PACKAGE = "openjdk-17-jre-headless"
MAVEN_PACKAGE = "maven"
JAVA_MIN_MAJOR = 17


class InstallError(Exception):
    pass


def log(message: str) -> None:
    print(f"[rig] {message}", file=sys.stderr, flush=True)


# -- locating what is installed (used by the fixtures) ---------------------------------------------


def tool_path(name: str) -> Path | None:
    """The installed binary for a Go tool, if its stamp matches the pinned version."""
    path = BIN_DIR / name
    stamp = _read_stamps().get(name)
    if path.is_file() and os.access(path, os.X_OK) and stamp == GO_TOOLS[name][1]:
        return path
    return None


def kafka_classpath() -> str | None:
    """The broker classpath (``libs/*``), if the jars for the pinned pom are in place."""
    stamp = KAFKA_LIBS / ".pom.sha256"
    if (
        stamp.is_file()
        and stamp.read_text().strip() == _sha256(KAFKA_POM)
        and any(KAFKA_LIBS.glob("kafka_*.jar"))
    ):
        return str(KAFKA_LIBS / "*")
    return None


def java_path() -> Path | None:
    """A Java 17+ ``java``, if there is one."""
    java = shutil.which("java")
    if java is None:
        return None
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if match and int(match.group(1)) >= JAVA_MIN_MAJOR:
        return Path(java)
    return None


def sarif_schema_path() -> Path | None:
    return SARIF_SCHEMA if SARIF_SCHEMA.is_file() else None


def kubernetes_version() -> str:
    """The pinned Kubernetes version, as kubeconform's -kubernetes-version takes it (no "v")."""
    return KUBERNETES_MODULE[1].removeprefix("v")


def kubernetes_schemas_path() -> Path | None:
    """kubeconform's -schema-location for the pinned version, if made by this converter."""
    made = KUBERNETES_SCHEMAS / f"{KUBERNETES_MODULE[1]}-standalone-strict"
    stamp = made / ".stamp"
    if stamp.is_file() and stamp.read_text().strip() == _deploy_schemas().converter_digest():
        return KUBERNETES_SCHEMAS
    return None


def compose_schema_path() -> Path | None:
    return COMPOSE_SCHEMA if COMPOSE_SCHEMA.is_file() else None


def _deploy_schemas() -> Any:
    # Run as a script, this directory is on sys.path; imported by the fixtures, it is a package.
    return importlib.import_module("tests.rig.deploy_schemas" if __package__ else "deploy_schemas")


def command_path(command: str) -> Path | None:
    found = shutil.which(command)
    return Path(found) if found else None


def provided(what: str) -> bool:
    """Whether an APT_PACKAGES entry is there: a command on PATH, or a file matching an absolute path."""
    if what.startswith("/"):
        pattern = Path(what)
        return any(
            found.is_file() for found in Path(pattern.anchor).glob(str(pattern.relative_to(pattern.anchor)))
        )
    return command_path(what) is not None


def missing() -> dict[str, str]:
    """What is not installed yet -> the command that installs it."""
    this = f"python3 {Path(__file__).relative_to(Path.cwd()) if _under_cwd() else __file__}"
    todo: dict[str, str] = {}
    for package, what in APT_PACKAGES.items():
        if not provided(what):
            todo[package] = f"sudo {this} apt"
    if java_path() is None:
        todo["java17"] = f"sudo {this} apt"
    for name in GO_TOOLS:
        if tool_path(name) is None:
            todo[name] = f"{this} go"
    if kafka_classpath() is None:
        todo["kafka"] = f"{this} kafka"
    if sarif_schema_path() is None:
        todo["sarif"] = f"{this} sarif"
    if kubernetes_schemas_path() is None or compose_schema_path() is None:
        todo["deploy-schemas"] = f"{this} deploy"
    return todo


def _under_cwd() -> bool:
    try:
        Path(__file__).resolve().relative_to(Path.cwd())
    except ValueError:
        return False
    return True


# -- apt ---------------------------------------------------------------------------------------------


def install_apt() -> None:
    wanted = [pkg for pkg, what in APT_PACKAGES.items() if not provided(what)]
    if java_path() is None:
        wanted.append(JAVA_PACKAGE)
    if command_path("mvn") is None:
        wanted.append(MAVEN_PACKAGE)
    if not wanted:
        log(f"apt: {', '.join(APT_PACKAGES)}, Java 17 and Maven are present")
        disable_package_services([] if os.geteuid() == 0 else ["sudo", "-n"])
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if (
            command_path("sudo") is None
            or subprocess.run(["sudo", "-n", "true"], check=False).returncode != 0
        ):
            raise InstallError(f"apt: need root to install {' '.join(wanted)}; run: sudo {sys.argv[0]} apt")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt: installing {' '.join(wanted)}")
    _run([*prefix, "apt-get", "update", "-q"], env=env)
    # The packages' own services (a registry on :5000 with deletes on, Prometheus on :9090) must not
    # start: the tests start their own instances on free ports. policy-rc.d tells Debian so.
    policy = "/usr/sbin/policy-rc.d"
    created_policy = not Path(policy).exists()
    if created_policy:
        _run([*prefix, "sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {policy} && chmod 755 {policy}"])
    try:
        _run([*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted], env=env)
    finally:
        if created_policy:
            _run([*prefix, "rm", "-f", policy])
    disable_package_services(prefix)


PACKAGE_SERVICES = ("docker-registry", "prometheus")
"""Services the apt packages enable for boot, which the tests never use (they start their own)."""


def disable_package_services(prefix: list[str]) -> None:
    """Leave the packages' own services disabled, so that a reboot starts no registry on :5000 and no
    Prometheus on :9090. Debian's postinst enables them even when policy-rc.d stops them starting."""
    if command_path("systemctl") is None:
        return
    for unit in PACKAGE_SERVICES:
        state = subprocess.run(["systemctl", "is-enabled", unit], capture_output=True, text=True, check=False)
        if state.stdout.strip() == "enabled":
            log(f"apt: disabling the {unit} service (the tests start their own)")
            _run([*prefix, "systemctl", "disable", "--quiet", unit])


# -- Go tools ----------------------------------------------------------------------------------------


def _go_version(go: str) -> tuple[int, ...] | None:
    result = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    match = re.fullmatch(r"go(\d+)\.(\d+)(?:\.(\d+))?\S*", result.stdout.strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _go_binary() -> str:
    """A Go new enough for the pinned tools: the machine's, or a toolchain from the Go module proxy."""
    system = shutil.which("go")
    if system and (_go_version(system) or (0,)) >= GO_MIN_VERSION:
        return system
    local = RIG_HOME / "go" / GO_FALLBACK_TOOLCHAIN / "bin" / "go"
    if local.is_file():
        return str(local)
    _fetch_go_toolchain(local.parent.parent)
    return str(local)


def _go_arch() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise InstallError(f"go: no pinned Go toolchain for {machine}; install Go 1.26.7 or newer yourself")
    return arch


def _dirhash_h1(archive: zipfile.ZipFile) -> str:
    """The Go module "h1:" hash of a module zip (golang.org/x/mod/sumdb/dirhash Hash1)."""
    names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
    summary = "".join(f"{hashlib.sha256(archive.read(name)).hexdigest()}  {name}\n" for name in names)
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def _fetch_go_toolchain(root: Path) -> None:
    """Download the Go toolchain the way `GOTOOLCHAIN` does: a module zip served by the Go proxy,
    checked against the hash the Go checksum database records for it."""
    proxy = (os.environ.get("GOPROXY") or "https://proxy.golang.org").split(",")[0].split("|")[0]
    if proxy in ("direct", "off"):
        proxy = "https://proxy.golang.org"
    arch = _go_arch()
    version = f"v0.0.1-{GO_FALLBACK_TOOLCHAIN}.linux-{arch}"
    url = f"{proxy.rstrip('/')}/golang.org/toolchain/@v/{version}.zip"
    log(f"go: fetching {GO_FALLBACK_TOOLCHAIN} from {url}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        archive = Path(tmp) / "go.zip"
        with urllib.request.urlopen(url, timeout=300) as response, archive.open("wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out)
        prefix = f"golang.org/toolchain@{version}/"
        staging = Path(tmp) / "go"
        with zipfile.ZipFile(archive) as zf:
            actual = _dirhash_h1(zf)
            if actual != GO_TOOLCHAIN_H1[arch]:
                raise InstallError(
                    f"go: {url} has hash {actual}, expected {GO_TOOLCHAIN_H1[arch]}; refusing it"
                )
            for info in zf.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                rel = Path(info.filename[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise InstallError(f"go: refusing unsafe path in toolchain zip: {info.filename}")
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                # Module zips drop file modes; the go command marks bin/ and pkg/tool/ executable too.
                if rel.parts[0] == "bin" or rel.parts[:2] == ("pkg", "tool"):
                    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        staging.rename(root)


def install_go_tools() -> None:
    todo = [name for name in GO_TOOLS if tool_path(name) is None]
    if not todo:
        log("go: " + ", ".join(f"{n} {v}" for n, (_, v) in GO_TOOLS.items()) + " are present")
        return
    go = _go_binary()
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOMODCACHE": str(RIG_HOME / "go-mod"),
        "GOFLAGS": "-mod=mod -buildvcs=false",
        "CGO_ENABLED": "0",
    }
    stamps = _read_stamps()
    # The build cache is shared by the tools' builds and removed after them (about 1.6 GiB): the
    # binaries are what is kept, and the module cache above makes a rebuild need no download.
    with tempfile.TemporaryDirectory(dir=RIG_HOME, prefix="go-build-") as cache:
        for name in todo:
            package, version = GO_TOOLS[name]
            log(f"go: building {name} {version} (once; cached in {RIG_HOME})")
            with tempfile.TemporaryDirectory(dir=RIG_HOME) as gobin:
                _run([go, "install", f"{package}@{version}"], env={**env, "GOBIN": gobin, "GOCACHE": cache})
                built = [p for p in Path(gobin).iterdir() if p.is_file()]
                if len(built) != 1:
                    raise InstallError(
                        f"go: expected one binary for {package}, got {[p.name for p in built]}"
                    )
                built[0].replace(BIN_DIR / name)
            stamps[name] = version
            _write_stamps(stamps)


def _read_stamps() -> dict[str, str]:
    try:
        data = json.loads((BIN_DIR / ".versions.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_stamps(stamps: dict[str, str]) -> None:
    tmp = BIN_DIR / ".versions.json.tmp"
    tmp.write_text(json.dumps(stamps, indent=2, sort_keys=True))
    tmp.replace(BIN_DIR / ".versions.json")


# -- Kafka -------------------------------------------------------------------------------------------


def install_kafka() -> None:
    if kafka_classpath() is not None:
        log(f"kafka: {KAFKA_VERSION} jars are present")
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InstallError(f"kafka: Maven is missing; run: sudo {sys.argv[0]} apt")
    log(f"kafka: resolving {KAFKA_VERSION} and its dependencies from Maven Central")
    staging = KAFKA_LIBS.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    _run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            f"-Dmaven.repo.local={RIG_HOME / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
    )
    (staging / ".pom.sha256").write_text(_sha256(KAFKA_POM) + "\n")
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    staging.rename(KAFKA_LIBS)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- SARIF schema ------------------------------------------------------------------------------------


def install_sarif_schema() -> None:
    if sarif_schema_path() is not None:
        log("sarif: the SARIF 2.1.0 schema is present")
        return
    log(f"sarif: fetching {SARIF_TARBALL}")
    with urllib.request.urlopen(SARIF_TARBALL, timeout=120) as response:
        data = response.read()
    algorithm, _, expected = SARIF_INTEGRITY.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise InstallError(f"sarif: {SARIF_TARBALL} does not match its registry integrity hash; refusing it")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        member = archive.extractfile(SARIF_MEMBER)
        if member is None:
            raise InstallError(f"sarif: {SARIF_MEMBER} is missing from the package")
        schema = member.read()
    SARIF_SCHEMA.parent.mkdir(parents=True, exist_ok=True)
    tmp = SARIF_SCHEMA.with_suffix(".tmp")
    tmp.write_bytes(schema)
    tmp.replace(SARIF_SCHEMA)


# -- deploy/ schemas ---------------------------------------------------------------------------------


def install_deploy_schemas() -> None:
    schemas = _deploy_schemas()
    proxy = (os.environ.get("GOPROXY") or "https://proxy.golang.org").split(",")[0].split("|")[0]
    if proxy in ("direct", "off"):
        proxy = "https://proxy.golang.org"
    module, version, h1 = KUBERNETES_MODULE
    if kubernetes_schemas_path() is None:
        log(f"deploy: the Kubernetes {version} API schemas, from {module}@{version} ({proxy})")
        try:
            swagger = schemas.module_member(proxy, module, version, h1, schemas.SWAGGER_MEMBER, _dirhash_h1)
            target = KUBERNETES_SCHEMAS / f"{version}-standalone-strict"
            count = schemas.write_kubernetes_schemas(swagger, target, schemas.converter_digest())
        except (OSError, ValueError, KeyError, schemas.SchemaError) as exc:
            raise InstallError(f"deploy: Kubernetes schemas: {exc}") from exc
        log(f"deploy: {count} kinds' schemas in {target}")
    else:
        log(f"deploy: the Kubernetes {version} API schemas are present")
    module, version, h1 = COMPOSE_MODULE
    if compose_schema_path() is None:
        log(f"deploy: the Compose Specification's schema, from {module}@{version}")
        try:
            data = schemas.module_member(proxy, module, version, h1, schemas.COMPOSE_MEMBER, _dirhash_h1)
            schemas.write_compose_schema(data, COMPOSE_SCHEMA)
        except (OSError, ValueError, KeyError, schemas.SchemaError) as exc:
            raise InstallError(f"deploy: Compose schema: {exc}") from exc
    else:
        log("deploy: the Compose Specification's schema is present")


# -- driver ------------------------------------------------------------------------------------------


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        raise InstallError(f"command failed ({result.returncode}): {' '.join(cmd)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["all", "apt", "go", "kafka", "sarif", "deploy", "check"])
    args = parser.parse_args(argv)
    RIG_HOME.mkdir(parents=True, exist_ok=True)
    steps = {
        "apt": install_apt,
        "go": install_go_tools,
        "kafka": install_kafka,
        "sarif": install_sarif_schema,
        "deploy": install_deploy_schemas,
    }
    if args.step == "check":
        todo = missing()
        for what, command in todo.items():
            print(f"missing {what}: {command}")
        return 1 if todo else 0
    chosen = list(steps) if args.step == "all" else [args.step]
    failures = []
    for step in chosen:
        try:
            steps[step]()
        except InstallError as exc:
            log(f"error: {exc}")
            failures.append(step)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
