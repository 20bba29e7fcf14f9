"""Registry credentials and the auth challenges of the distribution protocol.

Credentials, first found wins:

1. ``AION_REGISTRY_USERNAME`` and ``AION_REGISTRY_PASSWORD`` (CI secrets), only for the registries
   named in ``AION_REGISTRY_HOST`` (host[:port], comma-separated): a secret is never offered to a
   registry it was not meant for;
2. the docker client's ``config.json`` (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``auths.<registry>.auth`` (base64 ``user:password``), ``username``/``password``, or
   ``identitytoken`` (an OAuth2 refresh token). Credential helpers are not run.

A registry answers 401 with a ``WWW-Authenticate`` challenge: ``Basic`` means resend with the
credentials; ``Bearer realm=...,service=...,scope=...`` means fetch a token from the realm (with the
credentials, if any) and resend with it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from aion.errors import RegistryError

_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None

    def __repr__(self) -> str:  # never print secrets, not even in a traceback
        return f"Credentials(username={self.username!r}, password=***, identity_token=***)"


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    params: Mapping[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header, or None when there is none we understand."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        return None
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


def credentials_for(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    hosts = {h.strip() for h in env.get("AION_REGISTRY_HOST", "").split(",") if h.strip()}
    if (
        registry in hosts
        and env.get("AION_REGISTRY_USERNAME")
        and env.get("AION_REGISTRY_PASSWORD") is not None
    ):
        return Credentials(env["AION_REGISTRY_USERNAME"], env["AION_REGISTRY_PASSWORD"])
    config_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    path = config_dir / "config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read registry credentials from {path}: {exc}") from exc
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = (
        DOCKER_HUB_KEYS
        if registry in DOCKER_HUB_KEYS
        else (registry, f"https://{registry}", f"http://{registry}")
    )
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            return _entry(entry, path, key)
    return None


def _entry(entry: dict[str, object], path: Path, key: str) -> Credentials | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(identity_token=token)
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(str(entry["username"]), str(entry["password"]))
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path}: auths[{key!r}].auth is not base64 of user:password") from exc
        if sep:
            return Credentials(username, password)
    return None


__all__ = ["Challenge", "Credentials", "credentials_for", "parse_challenge"]
