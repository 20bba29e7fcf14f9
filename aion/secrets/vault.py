"""The ``vault`` backend: HashiCorp Vault's KV version 2 secrets engine, through ``hvac``.

Layout: all of aion's secrets are the keys of **one** KV v2 secret, ``MOUNT/PATH`` (default
``secret/aion``), one key per secret name::

    vault kv put -mount=secret aion OPENAI_API_KEY=sk-... ANTHROPIC_API_KEY=sk-ant-...
    vault kv patch -mount=secret aion OPENAI_API_KEY=sk-new...     # rotation: read within the cache TTL

so one read (``GET /v1/MOUNT/data/PATH``) answers every name, a policy needs one path
(``path "secret/data/aion" { capabilities = ["read"] }``), and rotating a key is one new version.
A name that is not a key of the latest version is missing; a value that is not text is unusable.

Authentication, one of:

- a **token** read from a file (``--vault-token-file``; what Vault Agent's token sink writes): read
  again whenever the file changes, renewed while it is renewable and two thirds of its TTL have
  passed;
- **AppRole**: ``role_id`` and ``secret_id`` read from two files at each login; the token it gives is
  renewed the same way, and when it cannot be renewed (or is refused) a new login is made.

Values are kept in memory for ``cache_ttl`` seconds (or the response's lease, if shorter), then read
again, so a rotation takes effect within that time and without a restart. When Vault cannot be
reached or cannot serve (down, sealed, overloaded), values read less than ``stale_for`` seconds ago
are still used (with a warning naming no value), so a short Vault outage does not fail every
provider call; past that, with nothing read yet, or when Vault *refuses* (a revoked token, a policy
taken away), a get fails with :class:`SecretsUnavailable`.

Every request has a short timeout, goes only to the address given (no proxy from the environment,
no redirects, which would carry the token elsewhere), verifies TLS against the system's CAs or the
CA file given, and reads neither ``VAULT_TOKEN`` nor ``~/.vault-token``. Vault's own answers are
never repeated in errors: errors say what failed, by status, and what to do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aion.errors import InputError, UsageError
from aion.inputs import human_size, read_bounded
from aion.secrets.base import (
    MAX_SECRET_BYTES,
    SecretMissing,
    SecretsUnavailable,
    check_name,
    kind_of,
    value_of,
)
from aion.secrets.select import check_addr, check_location

log = logging.getLogger("aion.secrets")

DEFAULT_MOUNT = "secret"
DEFAULT_PATH = "aion"
DEFAULT_CACHE_TTL_S = 60.0
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_STALE_FOR_S = 300.0
RETRY_AFTER_FAILURE_S = 2.0
"""After a failed read, the next get waits this long before asking Vault again (stale values meanwhile)."""
MAX_CREDENTIAL_BYTES = 4096
"""The largest token, role_id or secret_id file read."""
APPROLE_MOUNT = "approle"

_T = TypeVar("_T")


class _Failed(Exception):
    """A Vault request that failed: why (in our words) and what to do."""

    def __init__(self, why: str, hint: str, *, denied: bool = False, outage: bool = False) -> None:
        super().__init__(why)
        self.why, self.hint, self.denied, self.outage = why, hint, denied, outage
        """``outage``: Vault could not be reached or could not serve (not: it answered no)."""


class VaultSecrets:
    """The ``vault`` backend: the keys of the KV v2 secret ``mount``/``path`` at ``addr``. Give
    ``token_file``, or ``role_id_file`` and ``secret_id_file`` (AppRole). ``ca_cert`` verifies Vault's
    certificate (default: the system's CAs). Safe to share between threads: one request at a time."""

    def __init__(
        self,
        addr: str,
        *,
        mount: str = DEFAULT_MOUNT,
        path: str = DEFAULT_PATH,
        token_file: str | Path | None = None,
        role_id_file: str | Path | None = None,
        secret_id_file: str | Path | None = None,
        approle_mount: str = APPROLE_MOUNT,
        ca_cert: str | Path | None = None,
        cache_ttl: float = DEFAULT_CACHE_TTL_S,
        timeout: float = DEFAULT_TIMEOUT_S,
        stale_for: float = DEFAULT_STALE_FOR_S,
    ) -> None:
        approle = role_id_file is not None or secret_id_file is not None
        if token_file is not None and approle:
            raise UsageError(
                "give a Vault token file or AppRole's role_id and secret_id files, not both",
                hint="--vault-token-file, or --vault-role-id-file with --vault-secret-id-file",
            )
        if approle and (role_id_file is None or secret_id_file is None):
            raise UsageError(
                "AppRole needs both the role_id file and the secret_id file",
                hint="give --vault-role-id-file and --vault-secret-id-file",
            )
        if token_file is None and not approle:
            raise UsageError(
                "the vault backend needs credentials: a token file, or AppRole's role_id and secret_id files",
                hint="give --vault-token-file, or --vault-role-id-file and --vault-secret-id-file",
            )
        self.addr = check_addr(addr, "the Vault address")
        self.mount = check_location(mount, "the Vault mount")
        self.path = check_location(path, "the Vault path")
        self.token_file = Path(token_file) if token_file is not None else None
        self.role_id_file = Path(role_id_file) if role_id_file is not None else None
        self.secret_id_file = Path(secret_id_file) if secret_id_file is not None else None
        self.approle_mount = check_location(approle_mount, "the AppRole mount")
        self.ca_cert = Path(ca_cert) if ca_cert is not None else None
        self.cache_ttl, self.timeout, self.stale_for = cache_ttl, timeout, stale_for
        self._lock = threading.Lock()
        self._client: Any = None
        self._token_stamp: tuple[int, int, int, int] | None = None
        self._has_token = False
        self._renewable = False
        self._renew_at = self._expires_at = float("inf")
        self._values: dict[str, str] | None = None
        self._unusable: dict[str, str] = {}
        self._absent = False
        """True when there is no secret at mount/path at all (so every name is missing)."""
        self._fetched_at = 0.0
        self._fresh_until = 0.0
        self.reads = 0
        """How many times the secret has been read from Vault (the cache's effect)."""
        self.logins = 0
        self.renewals = 0

    def __repr__(self) -> str:
        how = f"token_file={str(self.token_file)!r}" if self.token_file else "approle"
        return f"VaultSecrets(addr={self.addr!r}, secret={self.where!r}, {how})"

    @property
    def where(self) -> str:
        return f"{self.mount}/{self.path}"

    def describe(self) -> str:
        return f"Vault {self.addr}, KV v2 secret {self.where}"

    # -- the interface ---------------------------------------------------------------------------------

    def get(self, name: str) -> str:
        check_name(name, hint=f"a secret name is one key of the Vault secret {self.where}")
        with self._lock:
            self._current(name)
            value = self._values.get(name) if self._values is not None else None
            unusable = self._unusable.get(name)
            absent = self._absent
        if value is not None:
            return value
        if unusable is not None:
            raise SecretMissing(
                name,
                f"secret {name!r} in Vault {self.where} is {unusable}, not a text value",
                hint=f"store it as a string: vault kv patch -mount={self.mount} {self.path} {name}=...",
            )
        why = f"there is no secret {self.where} in Vault" if absent else f"it is not a key of {self.where}"
        raise SecretMissing(
            name,
            f"secret {name!r} is not set in Vault ({why}; {self.addr})",
            hint=f"add it: vault kv patch -mount={self.mount} {self.path} {name}=... "
            f"(kv put to create {self.where})",
        )

    # -- the cache ---------------------------------------------------------------------------------------

    def _current(self, name: str) -> None:
        """Make the cached values current, or fail naming ``name``; stale values are used while Vault
        cannot be reached, for at most ``stale_for`` seconds after they were read."""
        now = time.monotonic()
        if self._values is not None and now < self._fresh_until:
            return
        try:
            self._fetch()
        except _Failed as exc:
            age = now - self._fetched_at
            if exc.outage and self._values is not None and age < self.stale_for:
                self._fresh_until = now + min(RETRY_AFTER_FAILURE_S, self.cache_ttl)
                log.warning("secrets: %s; using the values of %s read %.0f s ago", exc.why, self.where, age)
                return
            raise SecretsUnavailable(
                name, f"secret {name!r} cannot be read from Vault: {exc.why}", hint=exc.hint
            ) from None

    def _fetch(self) -> None:
        self._authenticate()
        try:
            answer = self._call(self._read)
        except _Failed as exc:
            if not exc.denied:
                raise
            # A revoked or expired token: one more try with fresh credentials, then the refusal.
            self._has_token, self._token_stamp = False, None
            self._authenticate()
            answer = self._call(self._read)
        now = time.monotonic()
        self.reads += 1
        if answer is None:
            self._values, self._unusable, self._absent = {}, {}, True
            lease = 0
        else:
            data = answer.get("data") if isinstance(answer, dict) else None
            inner = data.get("data") if isinstance(data, dict) else None
            if not isinstance(inner, dict):
                raise _Failed(
                    f"{self.where} at {self.addr} did not answer as a KV version 2 secret",
                    f"check that {self.mount} is a KV v2 mount (vault secrets list -detailed)",
                )
            values: dict[str, str] = {}
            unusable: dict[str, str] = {}
            for key, raw in inner.items():
                value = value_of(raw)
                if value is None:
                    unusable[str(key)] = kind_of(raw)
                elif len(value.encode("utf-8")) > MAX_SECRET_BYTES:
                    unusable[str(key)] = f"larger than {human_size(MAX_SECRET_BYTES)}"
                else:
                    values[str(key)] = value
            self._values, self._unusable, self._absent = values, unusable, False
            lease = int(answer.get("lease_duration") or 0)
        ttl = min(self.cache_ttl, lease) if lease > 0 else self.cache_ttl
        self._fetched_at, self._fresh_until = now, now + ttl

    def _read(self, client: Any) -> Any:
        """The latest version of the secret; None when there is none (or it was deleted)."""
        import hvac.exceptions  # type: ignore[import-untyped]

        try:
            return client.secrets.kv.v2.read_secret_version(
                path=self.path, mount_point=self.mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None

    # -- credentials -------------------------------------------------------------------------------------

    def _authenticate(self) -> None:
        """A token that Vault should accept: the token file's (read again when it changed), or an
        AppRole login's; renewed after two thirds of its TTL while it is renewable."""
        now = time.monotonic()
        if self.token_file is not None:
            stamp = self._stamp(self.token_file, "the Vault token file")
            if stamp != self._token_stamp or not self._has_token:
                token = self._credential(self.token_file, "the Vault token file")
                self._connect().token = token
                self._token_stamp, self._has_token = stamp, True
                self._learn_ttl()
        elif not self._has_token or (not self._renewable and now >= self._renew_at):
            # A token that cannot be renewed is replaced at two thirds of its TTL, before it expires.
            self._login()
            return
        if self._renewable and now >= self._renew_at:
            self._renew()

    def _learn_ttl(self) -> None:
        """How long the token file's token lives and whether it renews (lookup-self); a token whose
        policies do not allow lookup-self is used as it is."""
        try:
            answer = self._call(lambda client: client.auth.token.lookup_self())
        except _Failed as exc:
            if exc.denied:
                self._renewable, self._renew_at, self._expires_at = False, float("inf"), float("inf")
                return
            raise
        data = answer.get("data") if isinstance(answer, dict) else None
        data = data if isinstance(data, dict) else {}
        self._set_ttl(int(data.get("ttl") or 0), bool(data.get("renewable")))

    def _set_ttl(self, ttl: int, renewable: bool) -> None:
        now = time.monotonic()
        if ttl <= 0:  # a token that does not expire (a root token, say)
            self._renewable, self._renew_at, self._expires_at = False, float("inf"), float("inf")
            return
        self._renewable = renewable
        self._renew_at, self._expires_at = now + ttl * 2 / 3, now + ttl

    def _login(self) -> None:
        assert self.role_id_file is not None
        assert self.secret_id_file is not None
        role_id = self._credential(self.role_id_file, "the AppRole role_id file")
        secret_id = self._credential(self.secret_id_file, "the AppRole secret_id file")
        client = self._connect()
        client.token = ""
        answer = self._call(
            lambda c: c.auth.approle.login(
                role_id=role_id, secret_id=secret_id, use_token=True, mount_point=self.approle_mount
            ),
            login=True,
        )
        auth = answer.get("auth") if isinstance(answer, dict) else None
        if not isinstance(auth, dict) or not auth.get("client_token"):
            raise _Failed(
                f"the AppRole login at {self.addr} gave no token", "check the AppRole's token settings"
            )
        self.logins += 1
        self._has_token = True
        self._set_ttl(int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))

    def _renew(self) -> None:
        try:
            answer = self._call(lambda client: client.auth.token.renew_self())
        except _Failed as exc:
            if self.token_file is None:
                log.info("secrets: renewing the AppRole token failed (%s); logging in again", exc.why)
                self._login()
            else:
                log.warning("secrets: renewing the token of %s failed: %s", self.token_file, exc.why)
                self._renewable = False
            return
        self.renewals += 1
        auth = answer.get("auth") if isinstance(answer, dict) else None
        auth = auth if isinstance(auth, dict) else {}
        lease = int(auth.get("lease_duration") or 0)
        if lease < 1:  # renewed up to its max TTL: it is about to expire, not immortal
            if self.token_file is None:
                self._login()
            else:
                self._renewable = False
            return
        self._set_ttl(lease, bool(auth.get("renewable")))

    def _stamp(self, path: Path, what: str) -> tuple[int, int, int, int]:
        try:
            info = path.stat()
        except OSError as exc:
            raise _Failed(f"{what} {path} cannot be read ({exc.strerror})", "check the path") from None
        return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)

    def _credential(self, path: Path, what: str) -> str:
        try:
            raw = read_bounded(path, MAX_CREDENTIAL_BYTES, what=what)
        except InputError as exc:
            raise _Failed(exc.message, exc.hint or "check the file") from None
        text = raw.decode("utf-8", "replace").strip()
        if not text or any(c.isspace() or not c.isprintable() for c in text):
            raise _Failed(f"{what} {path} does not hold one credential", "write just the value, on one line")
        return text

    # -- talking to Vault --------------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._client is None:
            import hvac
            import requests

            verify: str | bool = str(self.ca_cert) if self.ca_cert is not None else True
            session = requests.Session()
            session.trust_env = False  # no proxy, no .netrc, no CA bundle from the environment
            # On the session too: hvac prefers a given session's own verify over its argument.
            session.verify = verify
            self._client = hvac.Client(
                url=self.addr,
                token="",
                verify=verify,
                timeout=self.timeout,
                allow_redirects=False,
                session=session,
            )
        return self._client

    def _call(self, request: Callable[[Any], _T], *, login: bool = False) -> _T:
        """``request(client)``, with every failure turned into a :class:`_Failed` in our words."""
        import hvac.exceptions
        import requests

        client = self._connect()
        where = f"Vault at {self.addr}"
        refusals = (hvac.exceptions.InvalidRequest, hvac.exceptions.Unauthorized) if login else ()
        try:
            return request(client)
        except requests.exceptions.SSLError:
            raise _Failed(
                f"the TLS certificate of {where} cannot be verified",
                "give the CA that signed it with --vault-ca-cert (AIOND_VAULT_CA_CERT)",
                outage=True,
            ) from None
        except requests.exceptions.Timeout:
            raise _Failed(
                f"{where} did not answer within {self.timeout:g} s",
                "check that Vault is up and reachable",
                outage=True,
            ) from None
        except requests.exceptions.RequestException:
            raise _Failed(
                f"cannot connect to {where}", "check --vault-addr and that Vault is up", outage=True
            ) from None
        except refusals:
            raise _Failed(
                f"{where} refused the AppRole login (role_id or secret_id not valid, or expired)",
                f"write a current secret_id to {self.secret_id_file} "
                "(vault write -f auth/approle/role/ROLE/secret-id)",
            ) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            hint = (
                f"give the token a policy that may read {self.mount}/data/{self.path}, and check that it "
                "has not expired or been revoked"
            )
            raise _Failed(f"{where} denied access to {self.where}", hint, denied=True) from None
        except hvac.exceptions.VaultDown:
            raise _Failed(
                f"{where} is sealed or unavailable (503)", "unseal it, or wait", outage=True
            ) from None
        except hvac.exceptions.RateLimitExceeded:
            raise _Failed(
                f"{where} is rate-limiting aion (429)", "raise the quota, or wait", outage=True
            ) from None
        except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway) as exc:
            raise _Failed(
                f"{where} failed the request ({type(exc).__name__})", "see Vault's own log", outage=True
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise _Failed(
                f"{where} failed the request ({type(exc).__name__})", "see Vault's own log"
            ) from None
        except (ValueError, KeyError, TypeError):  # not JSON, or not the shape Vault answers with
            raise _Failed(f"{where} did not answer as Vault does", "check --vault-addr") from None


__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "DEFAULT_MOUNT",
    "DEFAULT_PATH",
    "DEFAULT_TIMEOUT_S",
    "VaultSecrets",
    "check_addr",
    "check_location",
]
