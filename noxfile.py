"""Task runner for aion. `nox -l` lists the sessions; README says which two a newcomer needs.

Every session installs what it needs into its own virtualenv (pip caches downloads under ~/.cache/pip);
`tests` also installs the real services the suite runs against (tests/rig/install.py, cached under
~/.cache/aion-rig). With CI=true a service that cannot be installed fails the run.
"""

from __future__ import annotations

import os

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _groups(*names: str) -> list[str]:
    return [req for name in names for req in nox.project.dependency_groups(PYPROJECT, name)]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@nox.session
def tests(session: nox.Session) -> None:
    """The full suite against real services (registry, Kafka, Prometheus, Go peers)."""
    # Idempotent; exit 1 means something could not be installed (for example apt without root). In CI
    # that is fatal; locally the affected tests skip and say how to install what they need.
    session.run("python", "tests/rig/install.py", "all", success_codes=[0] if _in_ci() else [0, 1])
    session.install("-e", ".", *_groups("test"))
    # Two pytest-xdist workers, each test file in one of them (and the files that share the Kafka
    # broker all in one: see KAFKA_FILES in tests/rig/plugin.py). Later options win: `-- -n 0` runs
    # in one process.
    session.run("pytest", "-n", "2", "--dist", "loadfile", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """The unit tests only, with a short property-test run: the fast inner loop (no services)."""
    session.install("-e", ".", *_groups("test"))
    session.run("pytest", "tests/unit", "-q", *session.posargs, env={"AION_FUZZ_SCALE": "0.1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*_groups("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict (configured in pyproject.toml) on the packages, tests, tools and benchmarks."""
    session.install("-e", ".", *_groups("typecheck"))
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Start aiond on examples/ and drive it with aionctl."""
    session.install("-e", ".")
    session.run("python", "tools/demo.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, side by side with their baselines; figures go to benchmarks/RESULTS.md."""
    session.install("-e", ".", *_groups("bench"))
    session.run("python", "benchmarks/startup.py")
    session.run("python", "benchmarks/completion.py")
    session.run("python", "benchmarks/validate.py")
    session.run("python", "benchmarks/install.py")
    session.run("python", "benchmarks/policy.py")
    session.run("python", "benchmarks/routing.py")
    session.run("python", "benchmarks/tasks.py")
    session.run("python", "benchmarks/modules.py")
    session.run("python", "benchmarks/delivery.py")


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate aion/api/v1 from proto/ and record new field numbers in proto/fields.lock.json."""
    session.install("-e", ".", *_groups("proto"))
    session.run("python", "tools/protogen.py")
    session.run("python", "tools/protolock.py")


@nox.session
def completions(session: nox.Session) -> None:
    """Regenerate the shell completion scripts in completions/ and README's CLI reference."""
    session.install("-e", ".")
    session.run("python", "tools/completions.py")
    session.run("python", "tools/readme_help.py")
