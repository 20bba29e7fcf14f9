"""The subprocess runtime (aion.modules.sandbox) with real processes: the example invoice module
answers, and programs that misbehave (tests/fixtures/sandbox/) end as the kind of failure they are,
reach nothing they must not, and leave no process behind. Every confinement test runs twice: with
bubblewrap, and with the unshare + setpriv + prlimit fallback forced."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aion.modules.abi import (
    MAX_OUTPUT_BYTES,
    Answer,
    Failure,
    FailureKind,
    Host,
    Limits,
    SecretGrant,
    request_bytes,
)
from aion.modules.package import build, read_manifest
from aion.modules.sandbox import ABI_ENV, MAX_HOST_LINE, Confinement, SubprocessRuntime
from tests.rig.plugin import unavailable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sandbox"
INVOICE_MODULE = Path(__file__).resolve().parents[2] / "examples" / "modules" / "invoice_fields"
NPROC = 24
CPU_SECOND = 1_000_000_000


def _needs_sandbox(confinement: Confinement) -> None:
    if os.geteuid() != 0:
        unavailable("the subprocess sandbox", "these tests run as root (aiond does)", "sudo -E pytest ...")
    if confinement is Confinement.BWRAP and shutil.which("bwrap", path="/usr/bin:/bin") is None:
        unavailable("bubblewrap", "bwrap is not installed", "sudo apt-get install bubblewrap")


@pytest.fixture(scope="module", params=[Confinement.BWRAP, Confinement.UNSHARE], ids=["bwrap", "fallback"])
def runtime(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SubprocessRuntime]:
    confinement: Confinement = request.param
    _needs_sandbox(confinement)
    made = SubprocessRuntime(
        fallback=confinement is Confinement.UNSHARE,
        nproc=NPROC,
        uid_nproc=NPROC,  # the host-wide limit as tight as one call's, so the fork bomb meets both
        scratch_root=tmp_path_factory.mktemp("sandbox"),
    )
    assert made.confinement is confinement
    problem = made.available()
    if problem is not None:
        unavailable(f"the {confinement} sandbox", problem, "sudo apt-get install bubblewrap util-linux")
    yield made
    made.close()
    if made.cgroups is not None:
        assert not [p for p in made.cgroups.parent.parent.iterdir() if p.name == made.cgroups.parent.name]


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def __call__(self, level: int, message: str) -> None:
        self.lines.append((level, message))


def host(declared: Sequence[str] = (), values: dict[str, str] | None = None) -> tuple[Host, Logs]:
    logs = Logs()
    return Host(SecretGrant(frozenset(declared), values or {}), logs), logs


def limits(*, timeout_s: float = 20.0, memory: int = 256 << 20, cpu_s: float = 20.0) -> Limits:
    return Limits(timeout_s=timeout_s, memory_bytes=memory, fuel=int(cpu_s * CPU_SECOND))


def call(
    runtime: SubprocessRuntime,
    *command: str,
    module: Path = FIXTURES,
    text: str = "",
    within: Limits | None = None,
    with_host: Host | None = None,
    network: bool = False,
) -> Answer | Failure:
    request = request_bytes(task_id="01JTEST", intent="invoice_ocr", step="complete", text=text)
    the_host = with_host if with_host is not None else host()[0]
    return asyncio.run(
        runtime.call(module, list(command), request, within or limits(), the_host, network=network)
    )


def answer(outcome: Answer | Failure) -> Answer:
    assert isinstance(outcome, Answer), outcome
    return outcome


def pids_with(token: str, *, uid: int | None = None) -> list[int]:
    """Processes whose command line holds ``token`` (and that run as ``uid``, when given: the
    module's own, not the chain's, whose arguments name it too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in (entry / "cmdline").read_bytes() and (
                    uid is None or entry.stat().st_uid == uid
                ):
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, reaped by nobody yet, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


_PF_EXITING = 0x4
"""The kernel's flag for a process in its exit path (``/proc/PID/stat``, field 9)."""


def exiting(pid: int) -> bool:
    """Gone, a zombie, or on its way out. Such a process may already show the root cgroup in a v1
    hierarchy (the kernel moves exiting tasks there), so its cgroup lines say nothing of the call's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] in ("Z", "X", "x") or bool(int(fields[6]) & _PF_EXITING)
    except (OSError, IndexError, ValueError):
        return True


def ancestors(pid: int) -> list[int]:
    """``pid`` and its parents, up to (not including) this test process."""
    chain = []
    while pid > 1 and pid != os.getpid():
        chain.append(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
    return chain


@contextlib.contextmanager
def watching(probe: Callable[[], None]) -> Iterator[None]:
    """Call ``probe`` every 20 ms in a thread while the body runs (the call runs on this thread)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.02):
            probe()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def assert_cleaned_up(runtime: SubprocessRuntime) -> None:
    """No process in any call's cgroup (empty ones are kept for later calls) and nothing in the
    fallback's mount point is left on the host."""
    if runtime.cgroups is not None:
        cgroups = [p for p in runtime.cgroups.parent.iterdir() if p.is_dir()]
        assert [p for p in cgroups if (p / "cgroup.procs").read_text().strip()] == []
    root = runtime.mount_point
    if root is not None:
        assert list(root.iterdir()) == []


# -- the invoice module -----------------------------------------------------------------------------

GERMAN_INVOICE = """ACME Werkzeuge GmbH
Industriestraße 4, 70173 Stuttgart

RECHNUNG
Rechnungsnummer: RE-2024-0042
Rechnungsdatum: 15.03.2024
Fällig am: 14.04.2024

Schrauben M4          200   24,00 €
Zwischensumme                24,00 €
MwSt 19%                      4,56 €
Gesamtbetrag                 28,56 €
"""

US_INVOICE = """Northwind Traders Inc.
123 Main St, Springfield

INVOICE
Invoice #: INV-10234
Invoice Date: 03/07/2024
Due Date: 04/06/2024
Bill To: Contoso Ltd

Subtotal: $1,150.00
Tax (8%): $92.00
Total (3 items): $1,242.00
Amount Due: $1,242.00
"""

LABELLED_INVOICE = """Invoice No. 2024/118
To: Client Co
From: Blue Harbor Design Studio
Date: 2 November 2024
Total: 1 250,00 EUR
"""


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        (GERMAN_INVOICE, ("RE-2024-0042", "2024-03-15", "28.56", "EUR", "ACME Werkzeuge GmbH")),
        (US_INVOICE, ("INV-10234", "2024-03-07", "1242.00", "USD", "Northwind Traders Inc.")),
        (LABELLED_INVOICE, ("2024/118", "2024-11-02", "1250.00", "EUR", "Blue Harbor Design Studio")),
    ],
    ids=["german", "us", "labelled"],
)
def test_the_invoice_module_answers_with_the_fields(
    runtime: SubprocessRuntime, text: str, fields: tuple[str, ...]
) -> None:
    the_host, logs = host()
    got = answer(
        call(runtime, "bundle/invoice_fields.py", module=INVOICE_MODULE, text=text, with_host=the_host)
    )
    names = ("invoice_number", "date", "total", "currency", "vendor")
    assert tuple(got.output[name] for name in names) == fields
    assert got.output["missing"] == []
    assert json.loads(got.text) == dict(zip(names, fields, strict=True))
    assert logs.lines == [(0, "found 5 of 5 fields")]
    assert_cleaned_up(runtime)


def test_the_invoice_module_declines_a_text_that_is_no_invoice(runtime: SubprocessRuntime) -> None:
    got = call(
        runtime, "bundle/invoice_fields.py", module=INVOICE_MODULE, text="Thanks for lunch. See you soon!"
    )
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.DECLINED
    assert got.message.startswith("INPUT_NOT_AN_INVOICE: ")


def test_the_invoice_manifest_validates_and_packages() -> None:
    _, manifest = read_manifest(INVOICE_MODULE)
    assert manifest["runtime"]["type"] == "subprocess"
    assert manifest["entrypoints"]["command"] == ["bundle/invoice_fields.py"]
    assert manifest["intents"] == ["invoice_ocr"]
    assert manifest["permissions"]["network"] == "deny"
    package = build(INVOICE_MODULE)
    assert (package.name, package.runtime) == ("invoice_fields", "subprocess")


def test_concurrent_calls_each_get_their_own_answer(runtime: SubprocessRuntime) -> None:
    numbers = [f"INV-{n:04d}" for n in range(6)]

    async def both() -> list[Answer | Failure]:
        request = [
            request_bytes(
                task_id=n, intent="invoice_ocr", step="complete", text=f"Invoice No. {n}\nTotal: {i}.50 EUR"
            )
            for i, n in enumerate(numbers)
        ]
        return list(
            await asyncio.gather(
                *(
                    runtime.call(INVOICE_MODULE, ["bundle/invoice_fields.py"], r, limits(), host()[0])
                    for r in request
                )
            )
        )

    outcomes = asyncio.run(both())
    assert [answer(o).output["invoice_number"] for o in outcomes] == numbers
    assert [answer(o).output["total"] for o in outcomes] == [f"{i}.50" for i in range(6)]
    assert_cleaned_up(runtime)


# -- failures ---------------------------------------------------------------------------------------


def test_a_program_that_exits_non_zero_is_a_crash(runtime: SubprocessRuntime) -> None:
    got = call(runtime, "crash.py")
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.CRASH
    assert "status 3" in got.message
    assert "giving up on purpose" in got.message


def test_a_fork_bomb_is_bounded_and_leaves_nothing(runtime: SubprocessRuntime) -> None:
    token = "bomb-" + secrets.token_hex(6)
    host_forks: list[int] = []

    def probe() -> None:
        host_forks.append(subprocess.run(["/bin/true"], check=False).returncode)

    with watching(probe):
        got = answer(call(runtime, "fork_bomb.py", token, within=limits(timeout_s=20)))
    # It answered: the call ended with its first process, though it left the others sleeping.
    peak = got.output["peak"]
    assert peak > 4, "the bomb never got going"
    assert peak <= NPROC + 1, "its processes, and the namespace's init"
    assert host_forks
    assert set(host_forks) == {0}
    assert pids_with(token) == []
    assert_cleaned_up(runtime)


def test_calls_in_quick_succession_leave_nothing_behind(runtime: SubprocessRuntime) -> None:
    """More calls, back to back, than the sandbox user may have processes: each call's processes are
    gone (reaped, not left as zombies of the host's init) before the next needs their places."""
    before = _sandbox_zombies()
    for _ in range(NPROC + 8):
        got = call(runtime, "scratch.py")
        assert isinstance(got, Answer), got
    assert _sandbox_zombies() - before == set()


def _sandbox_zombies() -> set[str]:
    return {p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _zombie_sandbox(p)}


def _zombie_sandbox(proc: Path) -> bool:
    try:
        status = (proc / "status").read_text()
    except OSError:
        return False
    return "State:\tZ" in status and ("Name:\tbwrap" in status or "Name:\tunshare" in status)


def test_each_call_gets_a_pids_cgroup_of_its_own(runtime: SubprocessRuntime) -> None:
    if runtime.cgroups is None:
        pytest.skip("no pids cgroup can be created here: processes are bounded by RLIMIT_NPROC only")
    token = "cgroup-" + secrets.token_hex(6)
    seen: set[str] = set()

    def probe() -> None:
        for pid in pids_with(token, uid=runtime.uid):
            with contextlib.suppress(OSError):
                lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if not exiting(pid):
                    seen.update(lines)

    with watching(probe):
        got = call(runtime, "spin.py", token, within=limits(timeout_s=1))
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.TIMEOUT
    hierarchy = "0::" if runtime.cgroups.v2 else "pids:"
    paths = {line.split(":", 2)[2] for line in seen if hierarchy in line}
    assert len(paths) == 1, seen
    assert Path(paths.pop()).parent.name == runtime.cgroups.parent.name
    assert_cleaned_up(runtime)


def test_an_endless_loop_times_out_and_its_processes_are_gone(runtime: SubprocessRuntime) -> None:
    token = "spin-" + secrets.token_hex(6)
    chains: set[int] = set()
    groups: set[int] = set()

    def probe() -> None:
        for pid in pids_with(token):
            chain = ancestors(pid)
            chains.update(chain)
            if chain:
                groups.add(chain[-1])  # the chain's first process leads its own process group

    with watching(probe):
        got = call(runtime, "spin.py", token, within=limits(timeout_s=1.5, cpu_s=60))
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.TIMEOUT
    assert len(pids_with(token)) == 0
    assert len(chains) >= 3, "the module, its setsid child and the chain were seen"
    assert [pid for pid in chains if alive(pid)] == []
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
    assert_cleaned_up(runtime)


@pytest.mark.parametrize("confinement", [Confinement.BWRAP, Confinement.UNSHARE], ids=["bwrap", "fallback"])
def test_what_a_module_leaves_running_is_gone_when_the_call_returns(
    confinement: Confinement, tmp_path: Path
) -> None:
    _needs_sandbox(confinement)
    # No pids cgroup: the PID namespace alone must take the child along.
    runtime = SubprocessRuntime(
        fallback=confinement is Confinement.UNSHARE, cgroup=False, scratch_root=tmp_path
    )
    assert runtime.available() is None
    assert runtime.cgroups is None
    for _ in range(5):
        token = "linger-" + secrets.token_hex(6)
        assert answer(call(runtime, "linger.py", token)).text == "answered"
        assert [pid for pid in pids_with(token) if alive(pid)] == []


def test_a_cancelled_call_leaves_nothing(runtime: SubprocessRuntime) -> None:
    token = "cancel-" + secrets.token_hex(6)
    started: list[int] = []

    async def cancel_once_running() -> None:
        request = request_bytes(task_id="t", intent="x", step="complete", text="")
        running = asyncio.create_task(
            runtime.call(FIXTURES, ["spin.py", token], request, limits(), host()[0])
        )
        while not pids_with(token, uid=runtime.uid):
            await asyncio.sleep(0.01)
        started.extend(pids_with(token, uid=runtime.uid))
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(asyncio.wait_for(cancel_once_running(), 20))
    assert started
    assert [pid for pid in pids_with(token) if alive(pid)] == []
    assert_cleaned_up(runtime)


def test_cpu_past_the_rlimit_is_fuel(runtime: SubprocessRuntime) -> None:
    got = call(runtime, "cpu_burn.py", within=limits(timeout_s=30, cpu_s=1))
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.FUEL
    assert "1 s of CPU time" in got.message


def test_a_memory_bomb_stops_at_the_limit(runtime: SubprocessRuntime) -> None:
    memory = 64 << 20
    got = call(runtime, "memory_bomb.py", within=limits(memory=memory))
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.OOM
    assert str(memory) in got.message
    reached = int(got.message.rsplit("MemoryError after ", 1)[1].split()[0])
    assert 0 < reached < 64, "it stopped at its limit, not later"


def test_output_over_the_limit_is_a_bad_output_at_once(runtime: SubprocessRuntime) -> None:
    got = call(runtime, "flood.py", within=limits(timeout_s=60))
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.BAD_OUTPUT  # not a timeout: the host stopped it, not the clock
    assert str(MAX_OUTPUT_BYTES) in got.message
    assert_cleaned_up(runtime)


# -- what a module can reach ------------------------------------------------------------------------


def test_no_network_unless_the_manifest_allows_it(runtime: SubprocessRuntime) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = str(server.getsockname()[1])
        server.settimeout(0)
        denied = answer(call(runtime, "network.py", port))
        assert denied.text.startswith("refused: "), denied.text
        with pytest.raises(BlockingIOError):
            server.accept()
        allowed = answer(call(runtime, "network.py", port, network=True))
        assert allowed.text == "connected"
        server.settimeout(5)
        peer, _ = server.accept()
        with peer:
            assert peer.recv(100) == b"hello from the sandbox\n"


def test_etc_shadow_is_out_of_reach(runtime: SubprocessRuntime) -> None:
    got = answer(call(runtime, "shadow.py"))
    assert got.text.startswith("denied: ")
    assert got.output["etc"] == []
    with_network = answer(call(runtime, "shadow.py", network=True))
    assert with_network.text.startswith("denied: ")
    assert "shadow" not in with_network.output["etc"]
    assert "passwd" not in with_network.output["etc"]


def test_the_environment_is_the_abi_s_only(
    runtime: SubprocessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "canary-" + secrets.token_hex(8)
    monkeypatch.setenv("AION_TEST_CANARY", canary)
    got = answer(call(runtime, "environment.py"))
    assert got.output["environ"] == ABI_ENV
    assert canary not in json.dumps(got.output)
    assert got.output["ids"] == [runtime.uid, runtime.uid, runtime.gid, runtime.gid, []]
    assert got.output["cwd"] == "/module"
    assert got.output["fds"][:4] == [0, 1, 2, 3]
    assert len(got.output["fds"]) == 5  # and the one that lists them
    assert set(got.output["status"].values()) == {"0000000000000000", "1"}
    assert got.output["status"]["NoNewPrivs"] == "1"
    assert len(got.output["processes"]) <= 3, "a PID namespace of its own"
    init = got.output["init"]
    assert ("bwrap" in init[0]) if runtime.confinement is Confinement.BWRAP else (init[1] == "-c")


def test_nothing_is_writable_but_the_scratch_directory(runtime: SubprocessRuntime) -> None:
    own = (FIXTURES / "writes.py").read_bytes()
    places = ["/", "/tmp", "/usr", "/usr/bin", "/dev", "/dev/shm", "/proc", "/module", "/etc", "/scratch"]
    got = answer(call(runtime, "writes.py", *places))
    results = got.output["results"]
    assert results.pop("/scratch") == "written"
    assert results.pop("own file").startswith("failed: ")
    assert {place: result for place, result in results.items() if not result.startswith("failed: ")} == {}
    assert (FIXTURES / "writes.py").read_bytes() == own
    assert not (FIXTURES / "written-by-module").exists()


def test_the_scratch_directory_is_fresh_for_every_call(runtime: SubprocessRuntime) -> None:
    first = answer(call(runtime, "scratch.py"))
    second = answer(call(runtime, "scratch.py"))
    assert first.output["before"] == second.output["before"] == []
    assert_cleaned_up(runtime)


# -- host calls -------------------------------------------------------------------------------------


def test_secrets_over_the_host_call_socket(runtime: SubprocessRuntime) -> None:
    value = "sk-live-" + secrets.token_hex(12)
    the_host, logs = host(["API_KEY", "STYLE"], {"API_KEY": value})
    before = time.time_ns()
    got = answer(call(runtime, "host_calls.py", "API_KEY", "STYLE", "UNDECLARED", with_host=the_host))
    replies = got.output["replies"]
    assert replies["STYLE"] == {"result": -2}
    assert replies["UNDECLARED"] == {"result": -1}
    assert replies["API_KEY"] == {"value": "[redacted]"}
    assert got.output["sha256"] == {"API_KEY": hashlib.sha256(value.encode()).hexdigest()}
    assert value not in got.text
    assert value not in json.dumps(got.output)
    assert "API_KEY=[redacted]" in got.text
    assert [level for level, _ in logs.lines] == [2, 2, 2]
    assert value not in " ".join(message for _, message in logs.lines)
    assert "[redacted]" in logs.lines[0][1]
    assert before <= got.output["now"] <= time.time_ns()


def test_host_calls_that_are_not_calls_get_errors_and_a_long_line_closes_the_socket(
    runtime: SubprocessRuntime,
) -> None:
    got = answer(call(runtime, "bad_host_calls.py"))
    replies: list[Any] = got.output["replies"]
    assert [set(r) for r in replies[:5]] == [{"error"}] * 5
    assert "unknown call" in replies[2]["error"]
    assert isinstance(replies[5]["value"], int)
    assert MAX_HOST_LINE < 20000
    assert got.output["after_long"] in ("closed", "closed: Broken pipe", "closed: Connection reset by peer")


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("../fixtures/sandbox/crash.py", "without '..'"),
        ("/usr/bin/python3", "relative path inside the module"),
        ("missing.py", "is not in"),
        ("README.md", "readable and executable"),
    ],
)
def test_a_command_outside_the_module_or_not_a_program_does_not_start(
    runtime: SubprocessRuntime, command: str, expected: str
) -> None:
    got = call(runtime, command)
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.UNAVAILABLE
    assert expected in got.message


def test_a_module_directory_the_sandbox_user_cannot_enter_is_named(
    runtime: SubprocessRuntime, tmp_path: Path
) -> None:
    module = tmp_path / "module"
    shutil.copytree(FIXTURES, module)
    module.chmod(0o700)
    got = call(runtime, "crash.py", module=module)
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.UNAVAILABLE
    assert str(module) in got.message
    assert "chmod o+rx" in got.message
    module.chmod(0o755)
    reachable = call(runtime, "crash.py", module=module)
    assert isinstance(reachable, Failure)
    assert reachable.kind is FailureKind.CRASH  # it ran: a parent only root may enter is no obstacle


def test_available_says_what_is_missing(tmp_path: Path) -> None:
    _needs_sandbox(Confinement.UNSHARE)
    not_a_cgroup = SubprocessRuntime(cgroup=tmp_path)
    problem = not_a_cgroup.available()
    assert problem is not None
    assert str(tmp_path) in problem
    got = call(not_a_cgroup, "crash.py")
    assert isinstance(got, Failure)
    assert got.kind is FailureKind.UNAVAILABLE
    assert str(tmp_path) in got.message
