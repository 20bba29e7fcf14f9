"""The test rig's OCI registry is a real distribution 2.8: blobs go in and come out by digest."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from tests.rig.services import OciRegistry


def with_digest(location: str, digest: str) -> httpx.URL:
    """The upload location (which carries the registry's upload state) plus the digest parameter."""
    return httpx.URL(location).copy_merge_params({"digest": digest})


def test_push_and_pull_a_blob_by_digest(oci_registry: OciRegistry) -> None:
    data = os.urandom(256 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repo = "rig/smoke"
    with httpx.Client(base_url=oci_registry.url, timeout=10) as client:
        start = client.post(f"/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202
        location = start.headers["Location"]
        put = client.put(
            with_digest(location, digest), content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert put.status_code == 201, put.text
        assert put.headers["Docker-Content-Digest"] == digest

        head = client.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == len(data)
        pulled = client.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True)
        assert pulled.status_code == 200
        assert hashlib.sha256(pulled.content).hexdigest() == digest.removeprefix("sha256:")


def test_a_wrong_digest_is_refused(oci_registry: OciRegistry) -> None:
    with httpx.Client(base_url=oci_registry.url, timeout=10) as client:
        location = client.post("/v2/rig/smoke/blobs/uploads/").headers["Location"]
        wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
        put = client.put(with_digest(location, wrong), content=b"payload")
        assert put.status_code == 400
        assert put.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_deletes_are_enabled(oci_registry: OciRegistry) -> None:
    data = b"to be deleted"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=oci_registry.url, timeout=10) as client:
        location = client.post("/v2/rig/delete/blobs/uploads/").headers["Location"]
        assert client.put(with_digest(location, digest), content=data).status_code == 201
        assert client.delete(f"/v2/rig/delete/blobs/{digest}").status_code == 202
        assert client.head(f"/v2/rig/delete/blobs/{digest}").status_code == 404


def test_the_packages_own_services_are_left_disabled(oci_registry: OciRegistry) -> None:
    """The rig installs docker-registry and prometheus for their programs only: a reboot must start
    neither (Debian enables both for boot when it installs them)."""
    import shutil
    import subprocess

    from tests.rig.install import PACKAGE_SERVICES

    if shutil.which("systemctl") is None:
        pytest.skip("no systemctl on this host: nothing can be enabled for boot")
    for unit in PACKAGE_SERVICES:
        state = subprocess.run(["systemctl", "is-enabled", unit], capture_output=True, text=True, check=False)
        assert state.stdout.strip() != "enabled", f"{unit} is enabled for boot"
