"""The files secret backend: values read, stripped and refreshed on rotation; bad names, odd files,
links that lead out of the directory and missing secrets refused with errors that name the secret but
never show a value."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aion.config.model import build_models
from aion.errors import ConfigError, InputError
from aion.exitcodes import ExitCode
from aion.providers.secrets import (
    MAX_NAME_CHARS,
    MAX_SECRET_BYTES,
    FileSecrets,
    SecretMissing,
    SecretNameInvalid,
    check_name,
    secrets_from,
)

VALUE = "sk-live-abcdef0123456789"


def write(path: Path, text: str, *, mtime_ns: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_value_is_read_and_stripped(tmp_path: Path) -> None:
    write(tmp_path / "OPENAI_API_KEY", f"  {VALUE}\n")
    assert FileSecrets(tmp_path).get("OPENAI_API_KEY") == VALUE


def test_a_missing_secret_names_itself_and_is_an_input_error(tmp_path: Path) -> None:
    secrets = FileSecrets(tmp_path)
    with pytest.raises(SecretMissing) as info:
        secrets.get("HF_TOKEN")
    assert isinstance(info.value, InputError)
    assert info.value.exit_code == ExitCode.INPUT
    assert info.value.name == "HF_TOKEN"
    assert "HF_TOKEN" in info.value.message
    assert str(tmp_path) in info.value.message
    assert info.value.hint is not None


def test_a_missing_directory_is_a_missing_secret(tmp_path: Path) -> None:
    with pytest.raises(SecretMissing, match="OPENAI_API_KEY"):
        FileSecrets(tmp_path / "absent").get("OPENAI_API_KEY")


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_an_empty_secret_is_missing(tmp_path: Path, content: str) -> None:
    write(tmp_path / "KEY", content)
    with pytest.raises(SecretMissing, match="empty"):
        FileSecrets(tmp_path).get("KEY")


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "KEY"
    secrets = FileSecrets(tmp_path)
    write(path, "first-value", mtime_ns=1_000_000_000_000_000_000)
    assert secrets.get("KEY") == "first-value"
    # Same size, so only the modification time tells the two apart.
    write(path, "other-value", mtime_ns=1_000_000_001_000_000_000)
    assert secrets.get("KEY") == "other-value"


def test_a_replaced_file_is_read_again_even_with_the_same_mtime(tmp_path: Path) -> None:
    path = tmp_path / "KEY"
    secrets = FileSecrets(tmp_path)
    write(path, "first-value", mtime_ns=1_000_000_000_000_000_000)
    assert secrets.get("KEY") == "first-value"
    fresh = tmp_path / "KEY.new"
    write(fresh, "other-value", mtime_ns=1_000_000_000_000_000_000)
    fresh.replace(path)  # a new inode: the usual atomic rotation
    assert secrets.get("KEY") == "other-value"


def test_kubernetes_style_rotation_through_links(tmp_path: Path) -> None:
    """A mounted Kubernetes secret: KEY -> ..data/KEY, ..data -> a timestamped directory, swapped."""
    for version, value in (("..v1", "first-value"), ("..v2", "second-value-longer")):
        (tmp_path / version).mkdir()
        write(tmp_path / version / "KEY", value)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "KEY").symlink_to("..data/KEY")
    secrets = FileSecrets(tmp_path)
    assert secrets.get("KEY") == "first-value"
    (tmp_path / "..data.tmp").symlink_to("..v2")
    (tmp_path / "..data.tmp").replace(tmp_path / "..data")
    assert secrets.get("KEY") == "second-value-longer"


def test_a_deleted_secret_is_not_served_from_the_cache(tmp_path: Path) -> None:
    write(tmp_path / "KEY", VALUE)
    secrets = FileSecrets(tmp_path)
    assert secrets.get("KEY") == VALUE
    (tmp_path / "KEY").unlink()
    with pytest.raises(SecretMissing):
        secrets.get("KEY")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "...",
        "../KEY",
        "a/b",
        "/etc/passwd",
        "..data",
        ".hidden",
        "a\\b",
        "a\x00b",
        "a b",
        "KEY\n",
        "etc/passwd",
        "x" * (MAX_NAME_CHARS + 1),
    ],
)
def test_names_that_are_not_plain_file_names_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "inner").mkdir()
    write(tmp_path / "KEY", VALUE)
    with pytest.raises(SecretNameInvalid) as info:
        FileSecrets(tmp_path / "inner").get(name)
    assert isinstance(info.value, InputError)


@pytest.mark.parametrize(
    "name", ["OPENAI_API_KEY", "hf-token", "key.v2", "_x", "0", "a..b", "x" * MAX_NAME_CHARS]
)
def test_plain_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@given(st.text(max_size=300))
def test_an_accepted_name_always_stays_in_the_directory(name: str) -> None:
    directory = Path("/run/secrets/aion")
    try:
        check_name(name)
    except SecretNameInvalid:
        return
    path = directory / name
    assert path.parent == directory
    assert path.name == name
    assert not name.startswith(".")


def test_a_directory_in_place_of_a_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "KEY").mkdir()
    with pytest.raises(SecretMissing, match="regular file"):
        FileSecrets(tmp_path).get("KEY")


def test_a_fifo_in_place_of_a_secret_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "KEY")
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            FileSecrets(tmp_path).get("KEY")
        except SecretMissing as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert len(outcome) == 1
    assert "regular file" in str(outcome[0])


def test_an_oversized_secret_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "KEY", "k" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretMissing, match="larger than 64 KiB"):
        FileSecrets(tmp_path).get("KEY")


def test_errors_and_reprs_never_show_a_value(tmp_path: Path) -> None:
    secret = "sk-\xff-not-utf8-" + VALUE
    (tmp_path / "KEY").write_bytes(secret.encode("latin-1"))
    secrets = FileSecrets(tmp_path)
    with pytest.raises(SecretMissing) as info:
        secrets.get("KEY")
    shown = f"{info.value}\n{info.value!r}\n{info.value.diagnostics()}\n{secrets!r}"
    assert VALUE not in shown
    assert "UTF-8" in shown
    write(tmp_path / "OTHER", VALUE)
    assert secrets.get("OTHER") == VALUE
    assert VALUE not in repr(secrets)


@pytest.mark.parametrize("target", ["file", "directory", "relative"])
def test_a_link_that_leads_out_of_the_directory_is_refused(tmp_path: Path, target: str) -> None:
    """A link in the directory to any other file of the host (directly, through a linked directory, or
    climbing out with ..) must not make that file a key sent to a provider."""
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "shadow", VALUE)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    if target == "file":
        (secrets / "KEY").symlink_to(outside / "shadow")
    elif target == "directory":  # Kubernetes' shape, KEY -> ..data/KEY, with ..data leading out
        (secrets / "..data").symlink_to(outside)
        (secrets / "KEY").symlink_to("..data/shadow")
    else:
        (secrets / "KEY").symlink_to("../outside/shadow")
    with pytest.raises(SecretMissing, match="leads out of the directory") as info:
        FileSecrets(secrets).get("KEY")
    assert VALUE not in f"{info.value}\n{info.value.diagnostics()}"
    assert str(outside) not in info.value.message  # task errors reach every viewer


def test_a_linked_secrets_directory_is_followed(tmp_path: Path) -> None:
    """The directory itself may be a link (a mount point behind one); what counts is where it leads."""
    real = tmp_path / "real"
    real.mkdir()
    write(real / "KEY", VALUE)
    (tmp_path / "secrets").symlink_to(real)
    assert FileSecrets(tmp_path / "secrets").get("KEY") == VALUE


def test_a_link_loop_is_refused_without_hanging(tmp_path: Path) -> None:
    (tmp_path / "KEY").symlink_to("OTHER")
    (tmp_path / "OTHER").symlink_to("KEY")
    with pytest.raises(SecretMissing, match="cannot be read"):
        FileSecrets(tmp_path).get("KEY")


def test_the_backend_named_in_models_yml(tmp_path: Path) -> None:
    write(tmp_path / "KEY", VALUE)
    models = build_models({"tiers": {}, "secrets": {"backend": "files", "directory": str(tmp_path)}})
    backend = secrets_from(models)
    assert isinstance(backend, FileSecrets)
    assert backend.get("KEY") == VALUE
    default = secrets_from(build_models({"tiers": {}}))
    assert isinstance(default, FileSecrets)
    assert default.directory == Path("/run/secrets/aion")


def test_an_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    models = build_models({"tiers": {}, "secrets": {"backend": "vault", "directory": str(tmp_path)}})
    with pytest.raises(ConfigError, match="vault") as info:
        secrets_from(models)
    assert "files" in info.value.message
