"""``aionctl module sign --key`` signs as ``cosign sign --key`` does (cosign v3, Sigstore bundle referrer,
no transparency log), against a real registry and in image layouts: the real cosign verifies what aion
signed, aion's installer accepts it, and anything else (another key, an altered bundle) is refused."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from aion.trust.keys import load_public_key
from tests.integration.supply import (
    Signer,
    conforms,
    cosign_env,
    make_signer,
    snapshot,
    write_module,
    write_trust,
)
from tests.rig.daemon import aionctl, clean_env, program
from tests.rig.services import GoTools, OciRegistry

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@pytest.fixture(scope="module")
def cosign_keys(go_tools: GoTools, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A key pair made by ``cosign generate-key-pair`` (empty password, as cosign_env sets it)."""
    return make_signer(go_tools, tmp_path_factory.mktemp("cosign-keys"))


def push(module: Path, ref: str, env: dict[str, str] | None = None) -> str:
    result = aionctl("module", "push", str(module), ref, "--plain-http", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["digest"])


def sign(ref: str, key: Path, *extra: str, password: str | None = "", **kw: Any) -> dict[str, Any]:
    """``aionctl module sign``, which must succeed; its JSON document, checked against the schema."""
    result = run_sign(ref, key, *extra, password=password, **kw)
    assert result.returncode == 0, result.stderr
    return dict(conforms(json.loads(result.stdout), "output/module-sign"))


def run_sign(
    ref: str, key: Path, *extra: str, password: str | None = "", env: dict[str, str] | None = None
) -> Any:
    environ = dict(env or {})
    if password is not None:
        environ["AION_KEY_PASSWORD"] = password
    plain = () if ref.startswith("oci:") else ("--plain-http",)
    return aionctl("module", "sign", ref, "--key", str(key), *plain, "-o", "json", *extra, env=environ)


def install(ref: str, config: Path, store: Path) -> Any:
    plain = () if ref.startswith("oci:") else ("--plain-http",)
    return aionctl("install", ref, "--config", str(config), "--store", str(store), *plain, "-o", "json")


def cosign_verify(go_tools: GoTools, pub: Path, image: str, home: Path, *extra: str) -> Any:
    """``cosign verify --key PUB`` without a transparency log; not checked (tests assert on it)."""
    args = [
        "verify",
        "--key",
        str(pub),
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        *extra,
        image,
    ]
    return go_tools.run("cosign", *args, env=cosign_env(home), timeout=120, check=False)


def referrers(go_tools: GoTools, image: str) -> list[dict[str, Any]]:
    found = json.loads(go_tools.run("oras", "discover", "--plain-http", "--format", "json", image).stdout)
    return list(found["referrers"])


def pem_key(tmp_path: Path, kind: str, password: str = "") -> tuple[Path, Path]:
    """A private key made outside aion and cosign (with ``cryptography``), and its public key."""
    key: Any = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else None
    if kind in ("rsa", "rsa1"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "p521":
        key = ec.generate_private_key(ec.SECP521R1())
    elif key is None:
        key = ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if kind in ("sec1", "rsa1")
        else serialization.PrivateFormat.PKCS8
    )
    encryption: Any = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    private = tmp_path / f"{kind}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, encryption))
    public = tmp_path / f"{kind}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def keygen(prefix: Path, password: str = "") -> Any:
    return aionctl("module", "keygen", "--out", str(prefix), env={"AION_KEY_PASSWORD": password})


# -- interop: cosign verifies it, aion installs it ----------------------------------------------------


@pytest.mark.parametrize("key_kind", ["cosign", "aionctl-keygen", "pkcs8", "pkcs8-encrypted", "sec1", "p384"])
def test_cosign_verifies_and_aion_installs_what_aionctl_signed(
    oci_registry: OciRegistry, go_tools: GoTools, cosign_keys: Signer, tmp_path: Path, key_kind: str
) -> None:
    password = ""
    if key_kind == "cosign":
        key, pub = cosign_keys.key, cosign_keys.pub
    elif key_kind == "aionctl-keygen":
        password = "correct horse"
        assert keygen(tmp_path / "release", password).returncode == 0
        key, pub = tmp_path / "release.key", tmp_path / "release.pub"
    else:
        password = "s3cret" if key_kind == "pkcs8-encrypted" else ""
        key, pub = pem_key(tmp_path, key_kind.removesuffix("-encrypted"), password)
    repo = f"{oci_registry.host}/sign/{key_kind}"
    digest = push(write_module(tmp_path / "mod"), f"{repo}:1.3.0")

    signed = sign(f"{repo}:1.3.0", key, password=password)

    fingerprint = load_public_key(pub).fingerprint
    assert (signed["digest"], signed["signer"], signed["ref"]) == (digest, fingerprint, f"{repo}:1.3.0")
    attached = referrers(go_tools, f"{repo}@{digest}")
    assert [(r["digest"], r["artifactType"]) for r in attached] == [(signed["referrer"], BUNDLE_TYPE)]

    # cosign signs with a P-384 key over SHA-384 (so does aion), and verifies with SHA-256 unless told.
    digest_algorithm = ("--signature-digest-algorithm", "sha384") if key_kind == "p384" else ()
    verified = cosign_verify(go_tools, pub, f"{repo}:1.3.0", tmp_path, *digest_algorithm)
    assert verified.returncode == 0, verified.stderr
    payloads = json.loads(verified.stdout)
    assert [p["critical"]["image"]["docker-manifest-digest"] for p in payloads] == [digest]

    config = write_trust(tmp_path / "cfg", {"rules": [{"match": repo, "keys": [str(pub)]}]})
    result = install(f"{repo}:1.3.0", config, tmp_path / "store")
    assert result.returncode == 0, result.stderr
    body = conforms(json.loads(result.stdout), "output/module-install")
    assert (body["digest"], body["method"], body["signer"]) == (digest, "sigstore-key", fingerprint)


def test_signature_has_the_shape_cosign_gives_it(
    oci_registry: OciRegistry, go_tools: GoTools, cosign_keys: Signer, tmp_path: Path
) -> None:
    """The same digest signed with the same key by cosign and by aionctl: the referrer manifests and
    the bundles agree in everything but the signature bytes and the time."""
    repo = f"{oci_registry.host}/sign/shape"
    digest = push(write_module(tmp_path / "mod"), f"{repo}:1.3.0")
    cosign_keys.sign(f"{repo}@{digest}")
    ours = sign(f"{repo}@{digest}", cosign_keys.key)["referrer"]
    (theirs,) = [r["digest"] for r in referrers(go_tools, f"{repo}@{digest}") if r["digest"] != ours]

    def fetch(referrer: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        raw = go_tools.run("oras", "manifest", "fetch", "--plain-http", f"{repo}@{referrer}").stdout
        manifest = json.loads(raw)
        layer = manifest["layers"][0]["digest"]
        bundle = json.loads(
            go_tools.run("oras", "blob", "fetch", "--plain-http", "--output", "-", f"{repo}@{layer}").stdout
        )
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        return manifest, bundle, statement

    def masked(manifest: dict[str, Any]) -> dict[str, Any]:
        manifest = json.loads(json.dumps(manifest))
        manifest["layers"][0]["digest"] = manifest["layers"][0]["size"] = "*"
        manifest["annotations"]["org.opencontainers.image.created"] = "*"
        return manifest

    def sigless(bundle: dict[str, Any]) -> dict[str, Any]:
        bundle = json.loads(json.dumps(bundle))
        bundle["dsseEnvelope"]["payload"] = "*"
        bundle["dsseEnvelope"]["signatures"] = [sorted(s) for s in bundle["dsseEnvelope"]["signatures"]]
        return bundle

    cosign_manifest, cosign_bundle, cosign_statement = fetch(theirs)
    aion_manifest, aion_bundle, aion_statement = fetch(ours)
    assert masked(aion_manifest) == masked(cosign_manifest)
    assert aion_manifest["artifactType"] == aion_manifest["layers"][0]["mediaType"] == BUNDLE_TYPE
    assert aion_manifest["subject"]["digest"] == digest
    assert sigless(aion_bundle) == sigless(cosign_bundle)
    assert "tlogEntries" not in aion_bundle["verificationMaterial"]
    assert aion_statement == cosign_statement
    assert aion_statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}


def test_cosign_signs_with_a_key_aionctl_made(
    oci_registry: OciRegistry, go_tools: GoTools, tmp_path: Path
) -> None:
    """``module keygen`` writes cosign's own key format: cosign signs with it, cosign and aion verify."""
    made = keygen(tmp_path / "team", "pa55")
    assert made.returncode == 0, made.stderr
    key, pub = tmp_path / "team.key", tmp_path / "team.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert load_public_key(pub).fingerprint in made.stdout
    repo = f"{oci_registry.host}/sign/keygen"
    digest = push(write_module(tmp_path / "mod"), f"{repo}:1.3.0")

    go_tools.run(
        "cosign", "sign", "--key", str(key), "--tlog-upload=false", "--use-signing-config=false",
        "--allow-http-registry", "-y", f"{repo}@{digest}",
        env={**cosign_env(tmp_path), "COSIGN_PASSWORD": "pa55"}, timeout=120,
    )  # fmt: skip

    assert cosign_verify(go_tools, pub, f"{repo}@{digest}", tmp_path).returncode == 0
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": repo, "keys": [str(pub)]}]})
    result = install(f"{repo}:1.3.0", config, tmp_path / "store")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "sigstore-key"


def test_keygen_never_overwrites_and_needs_a_password_off_a_terminal(tmp_path: Path) -> None:
    assert keygen(tmp_path / "k").returncode == 0
    before = (tmp_path / "k.key").read_bytes()
    again = keygen(tmp_path / "k")
    assert again.returncode == 3
    assert f"{tmp_path / 'k.key'} exists; refusing to overwrite a key" in again.stderr
    assert (tmp_path / "k.key").read_bytes() == before
    (tmp_path / "only.pub").write_text("someone's public key\n")
    half = keygen(tmp_path / "only")
    assert half.returncode == 3
    assert not (tmp_path / "only.key").exists(), "either both files are written or neither"
    bare = aionctl("module", "keygen", "--out", str(tmp_path / "nopass"))
    assert bare.returncode == 3
    assert "AION_KEY_PASSWORD" in bare.stderr
    assert not (tmp_path / "nopass.key").exists()
    assert "Traceback" not in again.stderr + half.stderr + bare.stderr


# -- image layouts --------------------------------------------------------------------------------------


def test_sign_in_an_image_layout_then_install_from_it(
    go_tools: GoTools, cosign_keys: Signer, tmp_path: Path
) -> None:
    layout = tmp_path / "mirror"
    packaged = aionctl(
        "module", "package", str(write_module(tmp_path / "mod")), "--to", f"oci:{layout}", "-o", "json"
    )
    assert packaged.returncode == 0, packaged.stderr
    digest = json.loads(packaged.stdout)["digest"]

    signed = sign(f"oci:{layout}:1.3.0", cosign_keys.key)

    assert signed["digest"] == digest
    index = json.loads((layout / "index.json").read_text())
    assert {"digest": signed["referrer"], "artifactType": BUNDLE_TYPE}.items() <= next(
        m for m in index["manifests"] if m["digest"] == signed["referrer"]
    ).items()
    found = json.loads(
        go_tools.run("oras", "discover", "--oci-layout", "--format", "json", f"{layout}@{digest}").stdout
    )
    assert [r["artifactType"] for r in found["referrers"]] == [BUNDLE_TYPE]

    config = write_trust(
        tmp_path / "cfg", {"rules": [{"match": f"oci:{tmp_path}/**", "keys": [str(cosign_keys.pub)]}]}
    )
    result = install(f"oci:{layout}:1.3.0", config, tmp_path / "store")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["digest"], body["method"]) == (digest, "sigstore-key")
    assert body["signer"] == signed["signer"]


# -- fail closed ------------------------------------------------------------------------------------------


def test_another_key_is_refused_at_install_and_by_cosign(
    oci_registry: OciRegistry, go_tools: GoTools, cosign_keys: Signer, tmp_path: Path
) -> None:
    repo = f"{oci_registry.host}/sign/other-key"
    digest = push(write_module(tmp_path / "mod"), f"{repo}:1.3.0")
    sign(f"{repo}:1.3.0", cosign_keys.key)
    _, other = pem_key(tmp_path, "pkcs8")
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": repo, "keys": [str(other)]}]})
    store = tmp_path / "store"
    before = snapshot(store)

    result = install(f"{repo}:1.3.0", config, store)

    assert result.returncode == 1, result.stdout
    assert f"{repo}@{digest}: not signed by a trusted signer" in result.stderr
    assert "no DSSE signature verifies with a trusted key" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(store) == before
    assert cosign_verify(go_tools, other, f"{repo}@{digest}", tmp_path).returncode != 0


@pytest.mark.parametrize("tamper", ["payload", "signature", "subject"])
def test_an_altered_bundle_is_refused(
    oci_registry: OciRegistry, go_tools: GoTools, cosign_keys: Signer, tmp_path: Path, tamper: str
) -> None:
    """A bundle aionctl made, altered, then attached alone (with oras) to the same module elsewhere."""
    module = write_module(tmp_path / "mod")
    genuine = f"{oci_registry.host}/sign/genuine-{tamper}"
    digest = push(module, f"{genuine}:1.3.0")
    layer = json.loads(
        go_tools.run(
            "oras",
            "manifest",
            "fetch",
            "--plain-http",
            f"{genuine}@{sign(f'{genuine}:1.3.0', cosign_keys.key)['referrer']}",
        ).stdout
    )["layers"][0]["digest"]
    bundle = json.loads(
        go_tools.run("oras", "blob", "fetch", "--plain-http", "--output", "-", f"{genuine}@{layer}").stdout
    )
    envelope = bundle["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    if tamper == "payload":
        statement["predicate"] = {"approved": True}
    elif tamper == "subject":
        statement["subject"][0]["digest"]["sha256"] = "0" * 64
    if tamper == "signature":
        signature = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
        signature[-1] ^= 1
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    else:
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    work = tmp_path / "tampered"
    work.mkdir()
    (work / "bundle.json").write_text(json.dumps(bundle))
    repo = f"{oci_registry.host}/sign/tampered-{tamper}"
    assert push(module, f"{repo}:1.3.0") == digest
    go_tools.run(
        "oras", "attach", "--plain-http", "--artifact-type", BUNDLE_TYPE, f"{repo}@{digest}",
        f"bundle.json:{BUNDLE_TYPE}", cwd=work,
    )  # fmt: skip
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": repo, "keys": [str(cosign_keys.pub)]}]})
    store = tmp_path / "store"

    result = install(f"{repo}:1.3.0", config, store)

    assert result.returncode == 1, result.stdout
    assert "not signed by a trusted signer" in result.stderr
    assert "no DSSE signature verifies with a trusted key" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (store / "aion.lock").exists()
    assert cosign_verify(go_tools, cosign_keys.pub, f"{repo}@{digest}", tmp_path).returncode != 0


# -- bad keys, registry errors ---------------------------------------------------------------------------


def _bad_key(tmp_path: Path, case: str, cosign_keys: Signer) -> tuple[Path, str | None, str]:
    """A key file that cannot sign, the password given (None: none), and what the error must say."""
    if case == "missing":
        return tmp_path / "nope.key", "", "cannot open: No such file or directory"
    if case == "directory":
        return tmp_path, "", "is a directory, not a regular file"
    if case == "public-key":
        return cosign_keys.pub, "", "is a public key, not a private key"
    if case == "not-pem":
        (tmp_path / "junk.key").write_text("this is not a key\n")
        return tmp_path / "junk.key", "", "not a PEM private key"
    if case == "corrupt-pem":
        (tmp_path / "corrupt.key").write_text(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        return tmp_path / "corrupt.key", "", "the PEM private key cannot be read"
    if case in ("rsa", "rsa1", "ed25519", "p521"):
        label = {"ed25519": "Ed25519", "p521": "ECDSA secp521r1"}.get(case, "RSA")
        return pem_key(tmp_path, case)[0], "", f"the key is {label}; only ECDSA P-256 and P-384 keys can sign"
    if case == "pkcs8-no-password":
        return pem_key(tmp_path, "pkcs8", "s3cret")[0], None, "is encrypted, and no password was given"
    if case == "pkcs8-wrong-password":
        return pem_key(tmp_path, "pkcs8", "s3cret")[0], "wrong", "cannot decrypt the key: wrong password"
    if case == "cosign-wrong-password":
        return cosign_keys.key, "wrong", "cannot decrypt the key: wrong password"
    if case == "cosign-no-password":
        return cosign_keys.key, None, "is encrypted, and no password was given"
    assert case == "cosign-corrupt"
    text = cosign_keys.key.read_text().splitlines()
    text[1] = text[1][:-4] + ("AAAA" if not text[1].endswith("AAAA") else "BBBB")
    (tmp_path / "cosign-corrupt.key").write_text("\n".join(text) + "\n")
    return tmp_path / "cosign-corrupt.key", "", "not a readable cosign private key"


@pytest.mark.parametrize(
    "case",
    [
        "missing", "directory", "public-key", "not-pem", "corrupt-pem", "rsa", "rsa1", "ed25519", "p521",
        "pkcs8-no-password", "pkcs8-wrong-password", "cosign-wrong-password", "cosign-no-password",
        "cosign-corrupt",
    ],
)  # fmt: skip
def test_a_key_that_cannot_sign_is_named_with_exit_3(cosign_keys: Signer, tmp_path: Path, case: str) -> None:
    layout = tmp_path / "layout"
    assert (
        aionctl("module", "package", str(write_module(tmp_path / "mod")), "--to", f"oci:{layout}").returncode
        == 0
    )
    before = (layout / "index.json").read_bytes()
    key, password, message = _bad_key(tmp_path, case, cosign_keys)

    result = run_sign(f"oci:{layout}:1.3.0", key, password=password)

    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"error: --key {key}"), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert (layout / "index.json").read_bytes() == before, "nothing is attached"


def test_sign_needs_a_key_and_a_module(cosign_keys: Signer, tmp_path: Path) -> None:
    no_key = aionctl("module", "sign", f"oci:{tmp_path}")
    assert no_key.returncode == 2
    assert "--key" in no_key.stderr
    missing = run_sign(f"oci:{tmp_path / 'empty'}:1.0", cosign_keys.key)
    assert missing.returncode == 3
    assert "is not an OCI image layout" in missing.stderr
    assert "Traceback" not in no_key.stderr + missing.stderr


@pytest.mark.parametrize("oci_registry_auth", ["htpasswd", "token"], indirect=True)
def test_registry_credentials_are_used_and_their_absence_is_an_auth_error(
    oci_registry_auth: OciRegistry, go_tools: GoTools, cosign_keys: Signer, tmp_path: Path
) -> None:
    registry = oci_registry_auth
    repo = f"{registry.host}/sign/private"
    credentials = {
        "AION_REGISTRY_HOST": registry.host,
        "AION_REGISTRY_USERNAME": registry.username,
        "AION_REGISTRY_PASSWORD": registry.password,
    }
    digest = push(write_module(tmp_path / "mod"), f"{repo}:1.3.0", env=credentials)

    anonymous = run_sign(f"{repo}:1.3.0", cosign_keys.key)
    wrong = run_sign(f"{repo}:1.3.0", cosign_keys.key, env={**credentials, "AION_REGISTRY_PASSWORD": "nope"})

    for refused in (anonymous, wrong):
        assert refused.returncode == 4, refused.stderr
        assert refused.stderr.startswith(f"error: {registry.host}: "), refused.stderr
        assert "hint: set AION_REGISTRY_HOST" in refused.stderr
        assert "Traceback" not in refused.stderr
    signed = sign(f"{repo}:1.3.0", cosign_keys.key, env=credentials)
    assert signed["digest"] == digest
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    env = {**cosign_env(tmp_path), "DOCKER_CONFIG": str(docker)}
    verified = go_tools.run(
        "cosign", "verify", "--key", str(cosign_keys.pub), "--insecure-ignore-tlog=true",
        "--allow-http-registry", f"{repo}@{digest}", env=env, timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr


def on_terminal(args: list[str], answers: list[str], *, timeout: float = 60.0) -> tuple[int, str]:
    """Run aionctl on a pseudo-terminal (no AION_KEY_PASSWORD), typing ``answers`` one per prompt;
    its exit code and everything it wrote there."""
    import pty
    import select
    import time

    env = clean_env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: aionctl, with the terminal as stdin, stdout and stderr
        os.execve(program("aionctl"), ["aionctl", *args], env)  # noqa: S606 - no shell, on purpose
    seen, since, pending = b"", b"", list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen, since = seen + chunk, since + chunk
                if pending and since.rstrip().endswith(b":"):  # a prompt, since the last answer
                    os.write(fd, pending.pop(0).encode() + b"\n")
                    since = b""
        else:
            os.kill(pid, 9)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_the_password_is_asked_on_a_terminal(cosign_keys: Signer, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    packaged = aionctl("module", "package", str(write_module(tmp_path / "mod")), "--to", f"oci:{layout}")
    assert packaged.returncode == 0, packaged.stderr
    key, _ = pem_key(tmp_path, "pkcs8", "typed-secret")

    code, screen = on_terminal(["module", "sign", f"oci:{layout}:1.3.0", "--key", str(key)], ["typed-secret"])
    assert code == 0, screen
    assert f"Password for --key {key}:" in screen
    assert "typed-secret" not in screen, "the password is not echoed"
    assert "signed oci:" in screen

    code, screen = on_terminal(["module", "keygen", "--out", str(tmp_path / "made")], ["pw", "other"])
    assert code == 2, screen
    assert "the passwords differ; nothing was written" in screen
    assert not (tmp_path / "made.key").exists()
    code, screen = on_terminal(["module", "keygen", "--out", str(tmp_path / "made")], ["pw", "pw"])
    assert code == 0, screen
    signed = sign(f"oci:{layout}:1.3.0", tmp_path / "made.key", password="pw")
    assert signed["signer"] == load_public_key(tmp_path / "made.pub").fingerprint


def test_a_key_openssl_ecparam_made_signs(tmp_path: Path) -> None:
    """``openssl ecparam -genkey`` writes the curve's parameters before the SEC1 key."""
    layout = tmp_path / "layout"
    packaged = aionctl("module", "package", str(write_module(tmp_path / "mod")), "--to", f"oci:{layout}")
    assert packaged.returncode == 0, packaged.stderr
    key, pub = pem_key(tmp_path, "sec1")
    parameters = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    key.write_text(parameters + key.read_text())

    signed = sign(f"oci:{layout}", key)

    assert signed["signer"] == load_public_key(pub).fingerprint
