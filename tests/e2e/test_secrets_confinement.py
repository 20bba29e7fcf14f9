"""aiond reads API keys only from its own --secrets-dir: a config set uploaded by an admin cannot point it
at another directory, or at another file by the secret's name, and have that file sent to a provider.
A real aiond, a real stand-in provider that accepts a call only when it carries the file's content,
and sets uploaded with the real aionctl."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aion.api.v1 import common_pb2, tasks_pb2
from tests.e2e.test_tasks import submit, write_config
from tests.integration.supply import conforms
from tests.rig.daemon import Aiond, aionctl
from tests.rig.providers import StandIn

HOST_FILE = "host-file-content-not-a-key-7f3a9c"
"""What a file of the host outside the secrets directory holds."""
CLOUD = ("openai", "azure", "hf")


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, stand_in: StandIn) -> Iterator[Aiond]:
    """aiond with --secrets-dir TMP/secrets (the keys write_config makes), on a set that names it too."""
    config = write_config(tmp_path, stand_in)
    d = Aiond(tmp_path, config_dir=config, extra_args=["--secrets-dir", str(tmp_path / "secrets")]).start()
    yield d
    d.stop()


def upload(daemon: Aiond, root: Path, secrets: dict[str, Any], key_names: dict[str, str]) -> Any:
    """Apply a copy of the daemon's set whose models.yml says ``secrets`` and names the providers'
    keys ``key_names``; returns the finished aionctl run."""
    target = root / "upload"
    shutil.copytree(daemon.config_dir, target)
    models = yaml.safe_load((target / "models.yml").read_text())
    models["secrets"] = secrets
    for provider, name in key_names.items():
        models["providers"][provider]["api_key_secret"] = name
    (target / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    return aionctl("policy", "apply", str(target), "-o", "json", env=daemon.aionctl_env())


def test_a_secrets_directory_in_an_uploaded_set_is_never_read(
    daemon: Aiond, stand_in: StandIn, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "hostname").write_text(HOST_FILE + "\n")
    # The stand-in accepts only the host file's content: a call it authorizes carried that file.
    stand_in.api_key = HOST_FILE
    applied = upload(
        daemon,
        tmp_path,
        {"backend": "files", "directory": str(host)},
        dict.fromkeys(CLOUD, "hostname"),
    )
    assert applied.returncode == 0, applied.stderr
    assert conforms(json.loads(applied.stdout), "output/policy")["activated"] is True

    task = submit(daemon, "summarize", "hello", route=common_pb2.ROUTE_API).task

    assert [r for r in stand_in.requests if r.authorized] == []
    assert task.status != tasks_pb2.TASK_STATUS_OK
    cloud = [a for a in task.attempts if a.target.provider in CLOUD]
    assert cloud, "the api route tried no cloud model"
    assert {a.error.code for a in cloud} == {"SECRET_MISSING"}
    # Looked for where aiond keeps keys, and nowhere else.
    assert all(str(tmp_path / "secrets") in a.error.message for a in cloud)
    assert not any(str(host) in a.error.message for a in cloud)


def test_a_link_in_the_secrets_directory_that_leads_out_is_not_followed(
    daemon: Aiond, stand_in: StandIn, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "hostname").write_text(HOST_FILE + "\n")
    (tmp_path / "secrets" / "OPENAI_API_KEY").unlink()
    (tmp_path / "secrets" / "OPENAI_API_KEY").symlink_to(host / "hostname")
    stand_in.api_key = HOST_FILE

    task = submit(daemon, "summarize", "hello", route=common_pb2.ROUTE_API).task

    assert [r for r in stand_in.requests if r.authorized] == []
    (openai,) = [a for a in task.attempts if a.target.provider == "openai"]
    assert openai.error.code == "SECRET_MISSING"
    assert "leads out of the directory" in openai.error.message


@pytest.mark.parametrize(
    ("directory", "name"),
    [("/", "etc/passwd"), ("/", "../etc/passwd"), ("/etc", "../etc/passwd"), ("/etc", ".."), ("/", ".")],
)
def test_a_secret_name_that_is_not_a_plain_name_is_refused_at_apply(
    daemon: Aiond, tmp_path: Path, directory: str, name: str
) -> None:
    refused = upload(daemon, tmp_path, {"backend": "files", "directory": directory}, {"openai": name})
    assert refused.returncode == 1, refused.stderr
    body = conforms(json.loads(refused.stdout), "output/policy")
    assert body["activated"] is False
    (finding,) = [
        f for f in body["findings"] if f["location"]["jsonPointer"] == "/providers/openai/api_key_secret"
    ]
    assert (finding["ruleId"], finding["severity"]) == ("AION100", "error")
    assert finding["location"]["file"].endswith("models.yml")
    assert finding["location"]["line"] > 0
    assert finding["location"]["column"] > 0
    status = json.loads(aionctl("policy", "status", "-o", "json", env=daemon.aionctl_env("viewer")).stdout)
    assert status["active"]["number"] == 1


def test_apply_warns_that_another_secrets_directory_is_not_read_naming_both(
    daemon: Aiond, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    applied = upload(daemon, tmp_path, {"backend": "files", "directory": str(elsewhere)}, {})
    assert applied.returncode == 0, applied.stderr
    body = conforms(json.loads(applied.stdout), "output/policy")
    (finding,) = [f for f in body["findings"] if f["ruleId"] == "AION209"]
    assert finding["severity"] == "warning"
    assert finding["location"]["jsonPointer"] == "/secrets/directory"
    assert finding["location"]["line"] > 0
    assert str(elsewhere) in finding["message"]
    assert str(tmp_path / "secrets") in finding["message"]
