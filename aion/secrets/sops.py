"""The ``sops`` backend: one file encrypted with `sops <https://getsops.io>`_ for ``age`` recipients,
holding a flat mapping of secret names to text values::

    OPENAI_API_KEY: sk-...        # before encryption; `sops encrypt --age age1... --in-place FILE`
    ANTHROPIC_API_KEY: sk-ant-...

The file is decrypted by the real ``sops`` program (found on PATH), never by code of our own: the
encrypted bytes go to its standard input, the decrypted JSON comes back on its standard output, read
into memory only (never written to a file) and at most :data:`MAX_OUTPUT_BYTES` of it, within
:data:`DECRYPT_TIMEOUT_S` seconds. The age identity reaches sops only as ``SOPS_AGE_KEY_FILE`` in the
child's own environment, which holds nothing else of ours: no ``SOPS_AGE_KEY`` or key service of the
caller's, and a ``HOME`` with no SSH keys in it, so the one key given is the only one tried.

Decrypted values are kept in memory and used until the file changes: every :meth:`SopsSecrets.get`
compares the file's and the key file's (device, inode, mtime, size) with those of the bytes last
decrypted (one ``stat`` each, links followed, as a mounted Kubernetes secret swaps them), so a
rotated file takes effect on the next use, without a restart. The bytes decrypted are the bytes the
stamp was taken of (read through one open file), so a rotation half-seen never sticks.

sops's own messages are never shown: they can quote the file. Its failures are told apart by exit
code and kind (no matching key, a file altered since it was encrypted, not a sops file, not YAML or
JSON) and the error says how to see sops's own message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from aion.errors import InputError
from aion.inputs import human_size
from aion.secrets.base import (
    MAX_SECRET_BYTES,
    SecretMissing,
    SecretsUnavailable,
    check_name,
    kind_of,
    value_of,
)

MAX_FILE_BYTES = 1 << 20
"""The largest encrypted file read."""
MAX_OUTPUT_BYTES = 1 << 20
"""The most decrypted output read from sops; past it sops is stopped and the file refused."""
DECRYPT_TIMEOUT_S = 10.0
"""How long one decryption may take before sops is killed."""
RETRY_AFTER_FAILURE_S = 5.0
"""A file that failed to decrypt is not tried again for this long, unless it (or the key) changes."""
_STDERR_KEPT = 16 * 1024
_INPUT_TYPES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_NO_HOME = "/nonexistent"

Stamp = tuple[int, int, int, int]
"""(device, inode, mtime in ns, size) of a file."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    stamps: tuple[Stamp, Stamp]
    until: float
    why: str
    hint: str


class _Failed(Exception):
    """A decryption that did not give a mapping: why (never sops's words) and what to do."""

    def __init__(self, why: str, hint: str) -> None:
        super().__init__(why)
        self.why, self.hint = why, hint


class SopsSecrets:
    """The ``sops`` backend over ``file`` (``.yaml``, ``.yml`` or ``.json``), decrypted with the age
    identity in ``age_key_file``. ``binary`` is the sops program (default: ``sops`` on PATH). Safe to
    share between threads: one decryption runs at a time, and a reader that finds the file changed
    waits for it rather than starting another."""

    def __init__(
        self,
        file: str | Path,
        age_key_file: str | Path,
        *,
        binary: str | Path | None = None,
        timeout: float = DECRYPT_TIMEOUT_S,
    ) -> None:
        self.file = Path(file)
        self.age_key_file = Path(age_key_file)
        self.timeout = timeout
        input_type = _INPUT_TYPES.get(self.file.suffix.lower())
        if input_type is None:
            raise InputError(
                f"the sops file {self.file} must end in .yaml, .yml or .json (it says which format sops "
                "decrypts)",
                hint="rename it, for example to secrets.enc.yaml",
            )
        self._input_type = input_type
        found = str(binary) if binary is not None else shutil.which("sops")
        if found is None:
            raise InputError(
                "the sops backend needs the sops program, and there is none on PATH",
                hint="install sops 3.x (https://getsops.io) where aiond can find it on PATH",
            )
        self.binary = found
        self._lock = threading.Lock()
        self._stamps: tuple[Stamp, Stamp] | None = None
        self._values: dict[str, str] = {}
        self._unusable: dict[str, str] = {}
        """Names whose value is not text (or is empty, or too long) -> what it is instead."""
        self._failure: _Failure | None = None
        self.decryptions = 0
        """How many times sops has run (the cache's effect, for tests and diagnostics)."""

    def __repr__(self) -> str:
        return f"SopsSecrets(file={str(self.file)!r}, age_key_file={str(self.age_key_file)!r})"

    def describe(self) -> str:
        return f"sops file {self.file} (age key {self.age_key_file})"

    # -- the interface ---------------------------------------------------------------------------------

    def get(self, name: str) -> str:
        check_name(name, hint="a secret name is a top-level key of the sops file")
        with self._lock:
            self._refresh(name)
            value = self._values.get(name)
            unusable = self._unusable.get(name)
        if value is not None:
            return value
        if unusable is not None:
            raise SecretMissing(
                name,
                f"secret {name!r} in {self.file} is {unusable}, not a text value",
                hint=f"make it a string: sops edit {self.file}",
            )
        raise SecretMissing(
            name,
            f"secret {name!r} is not set in {self.file}",
            hint=f"add it as a top-level key: sops edit {self.file}",
        )

    # -- keeping the decrypted values current ------------------------------------------------------------

    def _unavailable(self, name: str, why: str, hint: str) -> SecretsUnavailable:
        return SecretsUnavailable(name, f"secret {name!r} cannot be read: {why}", hint=hint)

    def _stamp(self, name: str, path: Path, what: str) -> Stamp:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise self._unavailable(name, f"{what} {path} does not exist", "check the path") from None
        except OSError as exc:
            raise self._unavailable(
                name, f"{what} {path} cannot be read ({exc.strerror})", "check its permissions"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise self._unavailable(name, f"{what} {path} is not a regular file", "give a file")
        return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)

    def _refresh(self, name: str) -> None:
        stamps = (
            self._stamp(name, self.file, "the sops file"),
            self._stamp(name, self.age_key_file, "the age key file"),
        )
        if stamps == self._stamps:
            return
        failure = self._failure
        if failure is not None and failure.stamps == stamps and time.monotonic() < failure.until:
            raise self._unavailable(name, failure.why, failure.hint)
        data, file_stamp = self._read(name)
        try:
            document = self._decrypt(data)
        except _Failed as exc:
            self._failure = _Failure(
                (file_stamp, stamps[1]), time.monotonic() + RETRY_AFTER_FAILURE_S, exc.why, exc.hint
            )
            raise self._unavailable(name, exc.why, exc.hint) from None
        values: dict[str, str] = {}
        unusable: dict[str, str] = {}
        for key, raw in document.items():
            value = value_of(raw)
            if value is None:
                unusable[key] = kind_of(raw)
            elif len(value.encode("utf-8")) > MAX_SECRET_BYTES:
                unusable[key] = f"larger than {human_size(MAX_SECRET_BYTES)}"
            else:
                values[key] = value
        self._values, self._unusable = values, unusable
        self._stamps, self._failure = (file_stamp, stamps[1]), None

    def _read(self, name: str) -> tuple[bytes, Stamp]:
        """The file's bytes and the stamp of exactly those bytes (one open file for both)."""
        try:
            fd = os.open(self.file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise self._unavailable(
                name, f"the sops file {self.file} cannot be opened ({exc.strerror})", "check its permissions"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._unavailable(
                    name, f"the sops file {self.file} is not a regular file", "give a file"
                )
            chunks, size = [], 0
            while size <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise self._unavailable(
                name, f"the sops file {self.file} cannot be read ({exc.strerror})", "check the disk"
            ) from None
        finally:
            os.close(fd)
        if size > MAX_FILE_BYTES:
            raise self._unavailable(
                name,
                f"the sops file {self.file} is larger than {human_size(MAX_FILE_BYTES)}, the limit",
                "keep only the secrets aion needs in it",
            )
        return b"".join(chunks), (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)

    def _decrypt(self, data: bytes) -> dict[str, Any]:
        """The decrypted top-level mapping of ``data``; :class:`_Failed` saying why not."""
        env = {
            "SOPS_AGE_KEY_FILE": str(self.age_key_file),
            "HOME": _NO_HOME,
            "XDG_CONFIG_HOME": _NO_HOME,
            "PATH": os.defpath,
        }
        argv = [self.binary, "decrypt", "--input-type", self._input_type, "--output-type", "json"]
        self.decryptions += 1
        try:
            code, out, err = run_bounded(argv, data, env=env, timeout=self.timeout, limit=MAX_OUTPUT_BYTES)
        except TimeoutError:  # before OSError, of which it is a kind
            raise _Failed(
                f"sops did not decrypt {self.file} within {self.timeout:g} s", "check the machine's load"
            ) from None
        except OSError as exc:
            raise _Failed(
                f"sops ({self.binary}) cannot be run ({exc.strerror or type(exc).__name__})",
                "check that sops is installed and executable",
            ) from None
        except OverflowError:
            raise _Failed(
                f"sops's output for {self.file} is larger than {human_size(MAX_OUTPUT_BYTES)}, the limit",
                "keep only the secrets aion needs in it",
            ) from None
        if code != 0:
            raise _Failed(
                self._why(code, err),
                f"see sops's own message: SOPS_AGE_KEY_FILE={self.age_key_file} sops decrypt {self.file} "
                ">/dev/null",
            )
        try:
            document = json.loads(out)
        except ValueError:
            raise _Failed(f"sops's output for {self.file} is not JSON", "check the sops version") from None
        if not isinstance(document, dict):
            raise _Failed(
                f"{self.file} does not hold a mapping of secret names to values ({kind_of(document)})",
                "write one top-level key per secret",
            )
        return document

    def _why(self, code: int, err: bytes) -> str:
        """sops's failure in our words: its exit code and message say which kind it is, but its
        message is never repeated (it can quote the file)."""
        said = err.decode("utf-8", "replace")
        if code == 128 or "Failed to get the data key" in said:
            return (
                f"no key in the age key file {self.age_key_file} is a recipient of {self.file}, or the key "
                "file cannot be used"
            )
        if code in (21, 23, 24, 25, 51, 52) or "message authentication failed" in said or "MAC" in said:
            return f"{self.file} was altered or damaged since it was encrypted (it does not authenticate)"
        if "metadata not found" in said:
            return f"{self.file} is not encrypted with sops (it has no sops metadata)"
        if "cannot unmarshal !!" in said and "into map" in said:
            return f"{self.file} does not hold a mapping of secret names to values"
        if "unmarshal" in said or said.startswith(("yaml:", "Error unmarshalling")):
            return f"{self.file} is not valid {self._input_type.upper()}"
        return f"sops could not decrypt {self.file} (exit {code})"


def run_bounded(
    argv: list[str], data: bytes, *, env: dict[str, str], timeout: float, limit: int
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` with ``data`` on its standard input; its exit code, standard output (at most
    ``limit`` bytes: past that it is killed and :class:`OverflowError` raised) and the start of its
    standard error. Killed and :class:`TimeoutError` raised past ``timeout`` seconds."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
        close_fds=True,
        start_new_session=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    err = bytearray()
    timed_out = threading.Event()

    def feed() -> None:
        with contextlib.suppress(OSError):  # it may exit (or be killed) before reading all of it
            stdin.write(data)
        with contextlib.suppress(OSError):
            stdin.close()

    def drain() -> None:
        while chunk := stderr.read(4096):
            if len(err) < _STDERR_KEPT:
                err.extend(chunk[: _STDERR_KEPT - len(err)])

    def expire() -> None:
        timed_out.set()
        with contextlib.suppress(OSError):
            process.kill()

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    timer = threading.Timer(timeout, expire)
    for thread in threads:
        thread.start()
    timer.start()
    out = bytearray()
    over = False
    try:
        fd = stdout.fileno()
        while chunk := os.read(fd, 65536):
            out.extend(chunk)
            if len(out) > limit:
                over = True
                with contextlib.suppress(OSError):
                    process.kill()
                break
        code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        for thread in threads:
            thread.join(timeout=1)
        for stream in (stdout, stderr):
            with contextlib.suppress(OSError):
                stream.close()
    if timed_out.is_set():
        raise TimeoutError
    if over:
        raise OverflowError
    return code, bytes(out), bytes(err)


__all__ = ["DECRYPT_TIMEOUT_S", "MAX_FILE_BYTES", "MAX_OUTPUT_BYTES", "SopsSecrets", "run_bounded"]
