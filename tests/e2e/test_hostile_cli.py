"""aionctl and config reading under hostile input, through the real programs: devices, FIFOs and
oversized files wherever a file is named, symbolic links out of a directory that is applied, numbers
out of range, empty addresses, and requests larger than the daemon's message cap.

Every aionctl here runs with its address space capped, so that a read that is not bounded fails its
test with MemoryError instead of taking the machine down, and with a deadline, so that one that
blocks on a FIFO fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.procs import free_port

MEMORY_CAP = 2 << 30


def run(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - mirrors subprocess.run
) -> subprocess.CompletedProcess[str]:
    """The real aionctl, with its memory capped and a deadline; never raises on a non-zero exit."""
    return aionctl(*args, env=env, input=input, timeout=60, memory_cap=MEMORY_CAP)


def ctl(daemon: Aiond, *args: str, role: str = "admin", input: str | None = None) -> Any:  # noqa: A002
    return run(*args, env=daemon.aionctl_env(role), input=input)


def refused(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """``result`` exited with ``code``, said each needle on stderr, and printed no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    for leak in ("Traceback", "internal error", "MemoryError", "OverflowError", "RESOURCE_EXHAUSTED"):
        assert leak not in result.stderr, result.stderr


def nobody_listens() -> dict[str, str]:
    """Addresses where nothing answers: a command that read its files and went on would exit 5."""
    return {"AION_ADDR": f"127.0.0.1:{free_port()}", "AION_HTTP_ADDR": f"127.0.0.1:{free_port()}"}


def config_copy(root: Path, name: str = "config") -> Path:
    """The example config set, without the example modules' sources (examples/modules/)."""
    target = root / name
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("modules"))
    return target


def versions(daemon: Aiond) -> list[Any]:
    result = ctl(daemon, "policy", "history", "-o", "json", role="viewer")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["versions"])


def stored_files(daemon: Aiond, number: int) -> dict[str, bytes]:
    from aion.api.v1 import policies_pb2, policies_pb2_grpc

    with daemon.channel("viewer") as channel:
        reply = policies_pb2_grpc.PolicyServiceStub(channel).GetPolicyVersion(
            policies_pb2.GetPolicyVersionRequest(number=number, include_files=True), timeout=10
        )
    return {f.path: bytes(f.content) for f in reply.files}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Aiond]:
    """An aiond on a writable copy of the example config."""
    d = Aiond(tmp_path, config_dir=config_copy(tmp_path, "daemon-config")).start()
    yield d
    d.stop()


# -- item 8: every read of a user-named file is bounded ------------------------------------------------


def _files(root: Path) -> dict[str, str]:
    fifo = root / "fifo"
    os.mkfifo(fifo)
    (root / "big.token").write_text("a" * 5000)
    (root / "big.pem").write_bytes(b"#" * (1024 * 1024 + 1))
    return {"fifo": str(fifo), "big_token": str(root / "big.token"), "big_pem": str(root / "big.pem")}


FIVE_MIB = "x" * (5 << 20)
SUBMIT, EXPLAIN = "task submit summarize", "route explain summarize"
STDIN_TOO_LARGE = "--input (standard input) is larger than 4 MiB, the limit"

# (command line, standard input, what stderr must say)
READS = {
    "token-file device": (
        "status --token-file /dev/zero",
        None,
        "--token-file /dev/zero is a character device",
    ),
    "token-file FIFO": ("status --token-file {fifo}", None, "--token-file {fifo} is a FIFO"),
    "token-file large": ("status --token-file {big_token}", None, "is larger than 4 KiB, the limit"),
    "tls-ca device": ("status --tls-ca /dev/zero", None, "the TLS CA file /dev/zero is a character device"),
    "tls-ca FIFO, HTTP": ("health --tls-ca {fifo}", None, "the TLS CA file {fifo} is a FIFO"),
    "tls-ca large": ("health --tls-ca {big_pem}", None, "is larger than 1 MiB, the limit"),
    "tls-key FIFO": ("status --tls-cert {big_pem} --tls-key {fifo}", None, "client key {fifo} is a FIFO"),
    "task input device": (f"{SUBMIT} --input /dev/zero", None, "--input /dev/zero is a character device"),
    "task input FIFO": (f"{SUBMIT} --input {{fifo}}", None, "--input {fifo} is a FIFO"),
    "task input stdin": (f"{SUBMIT} --input -", FIVE_MIB, STDIN_TOO_LARGE),
    "route input stdin": (f"{EXPLAIN} --input -", FIVE_MIB, STDIN_TOO_LARGE),
    "route input FIFO": (f"{EXPLAIN} --input {{fifo}}", None, "--input {fifo} is a FIFO"),
    "route input device": (f"{EXPLAIN} --input /dev/zero", None, "--input /dev/zero is a character device"),
}


@pytest.mark.parametrize("case", list(READS))
def test_a_named_file_that_is_a_device_a_fifo_or_too_large_is_refused_with_exit_3(
    case: str, tmp_path: Path
) -> None:
    names = _files(tmp_path)
    command, stdin, message = READS[case]
    result = run(*command.format(**names).split(), env=nobody_listens(), input=stdin)
    refused(result, 3, message.format(**names))


def test_a_context_token_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "prod.token"
    os.mkfifo(fifo)
    config = tmp_path / "client.yaml"
    config.write_text(
        f"current-context: prod\ncontexts:\n  - name: prod\n    addr: 127.0.0.1:{free_port()}\n"
        f"    token-file: {fifo}\n"
    )
    result = run("status", env={"AION_CLIENT_CONFIG": str(config)})
    refused(result, 3, f"context 'prod': token-file {fifo} is a FIFO, not a regular file")


def test_bounded_reads_still_read_what_they_should(daemon: Aiond, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(daemon.tokens["viewer"] + "\n")
    env = daemon.aionctl_env("")
    assert run("policy", "status", "--token-file", str(token), env=env).returncode == 0
    explained = run(
        "route", "explain", "summarize", "--input", "-", "-o", "json", "--token-file", str(token),
        env=env, input="x" * 1000,
    )  # fmt: skip
    assert explained.returncode == 0, explained.stderr


# -- item 9: FIFOs in a config directory ------------------------------------------------------------


def test_validate_reports_a_fifo_in_a_directory_as_a_finding_and_refuses_one_named(tmp_path: Path) -> None:
    config = config_copy(tmp_path)
    os.mkfifo(config / "extra.yml")
    walked = run("validate", "-o", "json", str(config))
    assert walked.returncode == 1, walked.stderr
    findings = json.loads(walked.stdout)["findings"]
    fifo = [f for f in findings if f["rule"] == "AION012"]
    assert len(fifo) == 1, findings
    assert (fifo[0]["file"], fifo[0]["line"], fifo[0]["severity"]) == (str(config / "extra.yml"), 0, "error")
    assert "a FIFO, not a regular file" in fifo[0]["message"]
    named = run("validate", str(config / "extra.yml"))
    refused(named, 3, f"{config / 'extra.yml'} is a FIFO, not a regular file", "pipe it to standard input")
    explained = run("explain", "AION012")
    assert explained.returncode == 0
    assert explained.stdout.startswith("AION012 not-a-file (error)")


def test_a_fifo_refuses_apply_before_sending_and_a_reload_with_a_finding(
    daemon: Aiond, tmp_path: Path
) -> None:
    local = config_copy(tmp_path)
    (local / "models.yml").unlink()
    os.mkfifo(local / "models.yml")
    refused(
        ctl(daemon, "policy", "apply", str(local)), 3, f"{local / 'models.yml'} is a FIFO", "nothing was sent"
    )
    os.mkfifo(daemon.config_dir / "extra.yml")
    reload = ctl(daemon, "policy", "reload", "-o", "json", role="operator")
    assert reload.returncode == 1, reload.stderr
    rules = [f["ruleId"] for f in json.loads(reload.stdout)["findings"]]
    assert "AION012" in rules
    assert [int(v["number"]) for v in versions(daemon)] == [1]
    assert ctl(daemon, "health").returncode == 0


# -- item 5: policy apply reads only what is inside DIR, and only config files ---------------------------


def test_apply_refuses_a_link_out_of_the_directory(daemon: Aiond, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "provider-keys.yml"
    secret.parent.mkdir()
    secret.write_text("openai: sk-secret\n")
    local = config_copy(tmp_path)
    (local / "keys.yml").symlink_to(secret)
    refused(
        ctl(daemon, "policy", "apply", str(local)), 3, f"{local / 'keys.yml'} is a symbolic link to {secret}"
    )
    (local / "keys.yml").unlink()
    (local / "shared").symlink_to(secret.parent, target_is_directory=True)
    diff = ctl(daemon, "policy", "diff", str(local), role="viewer")
    refused(diff, 3, f"{local / 'shared'} is a symbolic link to {secret.parent}")
    refused(ctl(daemon, "policy", "apply", str(local)), 3, f"outside {local}")
    assert [int(v["number"]) for v in versions(daemon)] == [1]
    assert not any(b"sk-secret" in content for content in stored_files(daemon, 1).values())


ONCALL_RUNBOOK = """\
apiVersion: aion/v1
kind: Runbook
metadata: {name: oncall}
steps:
  - {name: check, action: health}
"""


def test_apply_follows_links_inside_and_sends_only_recognised_files(daemon: Aiond, tmp_path: Path) -> None:
    local = config_copy(tmp_path)
    (local / "shared").mkdir()
    (local / "models.yml").rename(local / "shared" / "models.yml")
    (local / "models.yml").symlink_to(Path("shared") / "models.yml")
    policies = local / "policies.yml"
    policies.write_text(policies.read_text().replace("default_usd: 0.02", "default_usd: 0.0123"))
    (local / "notes.yml").write_text("owner: platform-team\n")
    (local / "oncall.yaml").write_text(ONCALL_RUNBOOK)  # a runbook: read on its own, so left out quietly
    applied = ctl(daemon, "policy", "apply", str(local), "-o", "json")
    assert applied.returncode == 0, applied.stderr
    assert applied.stderr == (
        f"left out {local / 'notes.yml'}: not recognised as an aion config file "
        "(by name or top-level kind:)\n"
    )
    stored = stored_files(daemon, 2)
    assert sorted(stored) == ["intents.yml", "models.yml", "modules.yml", "policies.yml"]
    assert stored["models.yml"] == (EXAMPLES / "models.yml").read_bytes()
    quiet = ctl(daemon, "-q", "policy", "diff", str(local), role="viewer")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


# -- item 10: numbers are range-checked --------------------------------------------------------------

OUT_OF_RANGE = [
    ("validate", "--max-file-size", "100000000000000"),
    ("validate", "--max-file-size", "9223372036854775808"),
    ("validate", "--max-file-size", "0"),
    ("validate", "--jobs", "99999999999999999999"),
    ("validate", "--jobs", "-1"),
    ("events tail", "--limit", "99999999999999999999"),
    ("events tail", "--after", "18446744073709551616"),
    ("policy history", "--limit", "0"),
    ("route explain summarize", "--input-bytes", "99999999999999999999999"),
    ("route explain summarize", "--latency-ms", "-5"),
    ("status", "--timeout", "nan"),
    ("status", "--timeout", "1e400"),
    ("task submit summarize", "--max-message-bytes", "9223372036854775808"),
    ("policy apply .", "--max-message-bytes", "10"),
]


@pytest.mark.parametrize(("command", "option", "value"), OUT_OF_RANGE)
def test_a_number_out_of_range_is_a_usage_error_naming_the_option(
    command: str, option: str, value: str
) -> None:
    result = run(*command.split(), option, value, env=nobody_listens())
    refused(result, 2, f"error: {option}: ")
    assert re.search(
        r"is outside -?[\d.]+\.\.-?[\d.]+|is (below|above) the (least|greatest) value", result.stderr
    ), result.stderr


# -- item 12: an empty address is a usage error --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--addr", ""),
        ("policy", "status", "--addr", " "),
        ("health", "--http-addr", ""),
        ("route", "explain", "summarize", "--addr", ""),
    ],
    ids=["status", "policy status", "health http", "route explain"],
)
def test_an_empty_address_is_a_usage_error_naming_the_flag(args: tuple[str, ...]) -> None:
    flag = next(a for a in args if a.startswith("--"))
    refused(run(*args, env=nobody_listens()), 2, f"{flag} is empty")


# -- item 14: exit codes --------------------------------------------------------------------------------


def test_diff_with_only_one_version_exits_6_like_rollback(daemon: Aiond) -> None:
    refused(ctl(daemon, "policy", "diff", role="viewer"), 6, "no version before the active one")
    refused(ctl(daemon, "policy", "rollback"), 6, "nothing to roll back to")


def big_intents(count: int) -> str:
    return "".join(
        f"intent_{i}:\n  description: {'generated ' * 20}\n  default_route: auto\n"
        f"  candidates: [local, api]\n  privacy: allow-api\n  tiers_allowed: [tier0, tier1]\n"
        for i in range(count)
    )


def test_an_apply_above_the_message_cap_is_refused_before_sending(daemon: Aiond, tmp_path: Path) -> None:
    local = config_copy(tmp_path)
    intents = local / "intents.yml"
    intents.write_text(intents.read_text() + big_intents(20_000))
    assert intents.stat().st_size > 4 << 20
    result = ctl(daemon, "policy", "apply", str(local))
    refused(result, 3, "policy apply: the request is ", "larger than the daemon's message limit of 4 MiB")
    size = int(re.search(r"the request is (\d+) bytes", result.stderr).group(1))  # type: ignore[union-attr]
    assert size > intents.stat().st_size
    assert [int(v["number"]) for v in versions(daemon)] == [1]


@pytest.fixture
def small_cap_daemon(tmp_path: Path) -> Iterator[Aiond]:
    """An aiond whose message cap (64 KiB) is below what aionctl assumes (4 MiB)."""
    d = Aiond(tmp_path, config_dir=config_copy(tmp_path, "daemon-config"),
              extra_args=["--grpc-max-message-bytes", "65536"]).start()  # fmt: skip
    yield d
    d.stop()


def test_a_daemon_that_refuses_a_request_as_too_large_gives_exit_3_with_the_sizes(
    small_cap_daemon: Aiond, tmp_path: Path
) -> None:
    local = config_copy(tmp_path)
    intents = local / "intents.yml"
    intents.write_text(intents.read_text() + big_intents(200))
    applied = ctl(small_cap_daemon, "policy", "apply", str(local))
    refused(
        applied,
        3,
        "policy apply: the request is ",
        "larger than the daemon's message limit of 64 KiB (65536 bytes)",
    )
    submitted = ctl(small_cap_daemon, "task", "submit", "summarize", "--text", "x" * 100_000, role="operator")
    refused(submitted, 3, "task submit: the request is ", "64 KiB (65536 bytes)")
    assert [int(v["number"]) for v in versions(small_cap_daemon)] == [1]
