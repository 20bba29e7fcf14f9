"""aion's Sigstore verifier on real conformance bundles, with the trusted root or the bundle changed
in the test: the rules aion adds to sigstore-python's verifier, each at its edges.

- a trusted root's validity periods are closed intervals, for the log's key and for a timestamp
  authority, and the log's key must be valid at the entry's integrated time;
- a bundle must not carry a root CA in its certificate chain;
- an ``intoto`` v0.0.2 entry verifies only when it records exactly the bundle's envelope.

The bundles are the suite's (``tests/fixtures/sigstore-conformance``); only trusted roots, which are
not signed, and parts of a bundle that its signatures do not cover are changed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import inspect
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore.verify import Verifier

from aion.errors import VerificationError
from aion.trust import keyless, log_entries, trusted_roots
from aion.trust.sigstore_verifier import SpecVerifier
from tests.rig.daemon import REPO

CASES = REPO / "tests" / "fixtures" / "sigstore-conformance" / "bundle-verify"
IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def verify(
    case: str,
    *,
    bundle: dict[str, Any] | None = None,
    root: dict[str, Any] | None = None,
    tmp_path: Path | None = None,
) -> None:
    """Verify ``case``'s bundle (or ``bundle``) against its trusted root (or ``root``), else production's."""
    trusted_root = CASES / case / "trusted_root.json"
    if root is not None:
        assert tmp_path is not None
        trusted_root = tmp_path / "trusted_root.json"
        trusted_root.write_text(json.dumps(root))
    raw = (
        json.dumps(bundle).encode()
        if bundle is not None
        else (CASES / case / "bundle.sigstore.json").read_bytes()
    )
    artifact = CASES / case / "artifact"
    sha256 = hashlib.sha256((artifact if artifact.exists() else CASES / "a.txt").read_bytes()).digest()
    keyless.verify_blob_bundle(
        raw,
        sha256=sha256,
        verifier_=keyless.verifier(trusted_root=trusted_root if trusted_root.exists() else None),
        policy=keyless.exact_identity(IDENTITY, ISSUER),
        what="bundle B",
    )


def rfc3339(time: datetime) -> str:
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The log's key: valid at the integrated time, both ends of its period included.

TLOG_CASE = "trust-root-tlog-validity-end-inclusive"
INTEGRATED = datetime.fromtimestamp(1689177396, tz=UTC)  # the case bundle's integrated time


def with_log_key_valid(start: datetime, end: datetime | None) -> dict[str, Any]:
    root = load(CASES / TLOG_CASE / "trusted_root.json")
    key_id = load(CASES / TLOG_CASE / "bundle.sigstore.json")["verificationMaterial"]["tlogEntries"][0][
        "logId"
    ]
    (log,) = [log for log in root["tlogs"] if log["logId"] == key_id]
    log["publicKey"]["validFor"] = {"start": rfc3339(start), **({"end": rfc3339(end)} if end else {})}
    return root


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (INTEGRATED - timedelta(days=1), INTEGRATED),
        (INTEGRATED, INTEGRATED + timedelta(days=1)),
        (INTEGRATED, INTEGRATED),
        (INTEGRATED - timedelta(days=1), None),
    ],
    ids=["ends-at-the-time", "starts-at-the-time", "only-that-second", "no-end"],
)
def test_a_log_key_valid_at_the_integrated_time_verifies(
    tmp_path: Path, start: datetime, end: datetime | None
) -> None:
    verify(TLOG_CASE, root=with_log_key_valid(start, end), tmp_path=tmp_path)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (INTEGRATED - timedelta(days=1), INTEGRATED - timedelta(seconds=1)),
        (INTEGRATED + timedelta(seconds=1), None),
    ],
    ids=["ended-a-second-before", "starts-a-second-after"],
)
def test_a_log_key_not_valid_at_the_integrated_time_is_refused(
    tmp_path: Path, start: datetime, end: datetime | None
) -> None:
    # sigstore-python alone accepts these: it never compares the log key's period with the entry.
    with pytest.raises(VerificationError, match="the transparency log's key was not valid at the entry's"):
        verify(TLOG_CASE, root=with_log_key_valid(start, end), tmp_path=tmp_path)


def test_an_entry_from_a_log_the_trusted_root_does_not_name_is_refused(tmp_path: Path) -> None:
    root = load(CASES / TLOG_CASE / "trusted_root.json")
    for log in root["tlogs"]:
        log["logId"]["keyId"] = base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(VerificationError, match="from a transparency log the trusted root does not name"):
        verify(TLOG_CASE, root=root, tmp_path=tmp_path)


# A timestamp authority: its signed time counts within its period, both ends included.

TSA_CASE = "trust-root-tsa-validity-end-inclusive"
SIGNED_AT = datetime(2025, 6, 12, 12, 2, 20, tzinfo=UTC)  # the case's RFC 3161 genTime


def with_authority_valid(start: datetime, end: datetime | None) -> dict[str, Any]:
    root = load(CASES / TSA_CASE / "trusted_root.json")
    (authority,) = root["timestampAuthorities"]
    authority["validFor"] = {"start": rfc3339(start), **({"end": rfc3339(end)} if end else {})}
    return root


@pytest.mark.parametrize(
    ("start", "end"),
    [(SIGNED_AT - timedelta(days=1), SIGNED_AT), (SIGNED_AT, None), (SIGNED_AT, SIGNED_AT)],
    ids=["ends-at-the-time", "starts-at-the-time", "only-that-second"],
)
def test_a_timestamp_at_either_end_of_its_authoritys_period_verifies(
    tmp_path: Path, start: datetime, end: datetime | None
) -> None:
    verify(TSA_CASE, root=with_authority_valid(start, end), tmp_path=tmp_path)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (SIGNED_AT - timedelta(days=1), SIGNED_AT - timedelta(seconds=1)),
        (SIGNED_AT + timedelta(seconds=1), None),
    ],
    ids=["ended-a-second-before", "starts-a-second-after"],
)
def test_a_timestamp_outside_its_authoritys_period_is_refused_saying_so(
    tmp_path: Path, start: datetime, end: datetime | None
) -> None:
    with pytest.raises(
        VerificationError, match="outside the validity period of the timestamp authority"
    ) as raised:
        verify(TSA_CASE, root=with_authority_valid(start, end), tmp_path=tmp_path)
    assert "2025-06-12T12:02:20+00:00" in raised.value.message


def test_a_timestamp_with_no_authority_in_the_trusted_root_is_refused(tmp_path: Path) -> None:
    root = load(CASES / TSA_CASE / "trusted_root.json")
    root["timestampAuthorities"] = []
    with pytest.raises(VerificationError, match="the trusted root names no timestamp authority"):
        verify(TSA_CASE, root=root, tmp_path=tmp_path)


# A root CA inside the bundle.


def fulcio_root() -> x509.Certificate:
    (authority, *_) = trusted_roots.shipped(staging=False).certificate_authorities
    return x509.load_der_x509_certificate(authority.cert_chain.certificates[-1].raw_bytes)


def test_a_bundle_carrying_a_root_ca_is_refused() -> None:
    bundle = load(CASES / "happy-path-v0.2" / "bundle.sigstore.json")
    verify("happy-path-v0.2", bundle=bundle)
    der = base64.b64encode(fulcio_root().public_bytes(Encoding.DER)).decode()
    bundle["verificationMaterial"]["x509CertificateChain"]["certificates"].append({"rawBytes": der})
    # sigstore-python alone only logs a warning and verifies this bundle.
    with pytest.raises(VerificationError, match="its certificate chain includes a root CA"):
        verify("happy-path-v0.2", bundle=bundle)


# intoto v0.0.2 entries.

INTOTO_CASE = "intoto-with-custom-trust-root"


def test_an_intoto_bundle_whose_payload_was_changed_is_refused() -> None:
    # The timestamps cover the signature and the signed entry timestamp covers the logged entry, so
    # only the envelope's own signature check notices a payload swapped in the bundle.
    bundle = load(CASES / INTOTO_CASE / "bundle.sigstore.json")
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicateType"] = "https://example.com/forged/v1"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationError, match="the DSSE envelope's signature does not verify"):
        verify(INTOTO_CASE, bundle=bundle)


def test_an_intoto_bundle_about_another_artifact_is_refused() -> None:
    document = load(CASES / INTOTO_CASE / "bundle.sigstore.json")
    with pytest.raises(VerificationError, match="valid but for another artifact"):
        keyless.verify_blob_bundle(
            json.dumps(document).encode(),
            sha256=hashlib.sha256(b"something else").digest(),
            verifier_=keyless.verifier(trusted_root=CASES / INTOTO_CASE / "trusted_root.json"),
            policy=keyless.exact_identity(IDENTITY, ISSUER),
            what="bundle B",
        )


def intoto_parts() -> tuple[dict[str, Any], log_entries.Envelope, x509.Certificate]:
    document = load(CASES / INTOTO_CASE / "bundle.sigstore.json")
    body = json.loads(log_entries.LogEntry.from_bundle(document).body)
    envelope = log_entries.Envelope.from_bundle(document)
    assert envelope is not None
    chain = document["verificationMaterial"]["x509CertificateChain"]["certificates"]
    return body, envelope, x509.load_der_x509_certificate(base64.b64decode(chain[0]["rawBytes"]))


def test_the_real_intoto_entry_records_its_envelope() -> None:
    body, envelope, certificate = intoto_parts()
    log_entries.check_intoto_v002(json.dumps(body).encode(), envelope, certificate)


def other_certificate() -> str:
    document = load(CASES / "happy-path-v0.2" / "bundle.sigstore.json")
    der = base64.b64decode(
        document["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"]
    )
    return base64.b64encode(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)).decode()


def change_payload_hash(content: dict[str, Any]) -> None:
    content["payloadHash"]["value"] = "00" * 32


def change_payload_type(content: dict[str, Any]) -> None:
    content["envelope"]["payloadType"] = "text/plain"


def add_a_signature(content: dict[str, Any]) -> None:
    content["envelope"]["signatures"].append(copy.deepcopy(content["envelope"]["signatures"][0]))


def change_the_signature(content: dict[str, Any]) -> None:
    inner = bytearray(base64.b64decode(base64.b64decode(content["envelope"]["signatures"][0]["sig"])))
    inner[-1] ^= 1
    content["envelope"]["signatures"][0]["sig"] = base64.b64encode(base64.b64encode(bytes(inner))).decode()


def change_the_certificate(content: dict[str, Any]) -> None:
    content["envelope"]["signatures"][0]["publicKey"] = other_certificate()


def use_another_hash_algorithm(content: dict[str, Any]) -> None:
    content["payloadHash"]["algorithm"] = "sha512"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (change_payload_hash, "for another payload"),
        (change_payload_type, "for another payload type"),
        (add_a_signature, "exactly one signature"),
        (change_the_signature, "holds another signature than the envelope"),
        (change_the_certificate, "signed with another certificate"),
        (use_another_hash_algorithm, "records no SHA-256 payload hash"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_an_intoto_entry_that_records_anything_else_is_refused(change: Any, message: str) -> None:
    body, envelope, certificate = intoto_parts()
    change(body["spec"]["content"])
    with pytest.raises(VerificationError, match=message):
        log_entries.check_intoto_v002(json.dumps(body).encode(), envelope, certificate)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "is not JSON"),
        (json.dumps({"kind": "intoto", "apiVersion": "0.0.1", "spec": {}}).encode(), "not an intoto v0.0.2"),
        (json.dumps({"kind": "intoto", "apiVersion": "0.0.2", "spec": {}}).encode(), "holds no envelope"),
    ],
)
def test_a_malformed_intoto_entry_is_refused(body: bytes, message: str) -> None:
    _, envelope, certificate = intoto_parts()
    with pytest.raises(VerificationError, match=message):
        log_entries.check_intoto_v002(body, envelope, certificate)


# Validity periods, and the sigstore-python internals the verifier builds on.


def test_periods_are_closed_intervals() -> None:
    from sigstore_models.common.v1 import TimeRange

    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    period = TimeRange(start=start, end=end)
    assert trusted_roots.within(period, start)
    assert trusted_roots.within(period, end)
    assert not trusted_roots.within(period, start - timedelta(microseconds=1))
    assert not trusted_roots.within(period, end + timedelta(microseconds=1))
    assert trusted_roots.within(TimeRange(start=start), datetime(2999, 1, 1, tzinfo=UTC))
    assert trusted_roots.within(None, start)


def test_the_sigstore_internals_the_verifier_overrides_are_still_there() -> None:
    # If sigstore-python renames these, SpecVerifier's rules silently stop applying: fail here instead.
    assert list(inspect.signature(Verifier._establish_time).parameters) == ["self", "bundle"]
    assert list(inspect.signature(Verifier._verify_common_signing_cert).parameters) == [
        "self",
        "bundle",
        "policy",
    ]
    assert SpecVerifier._establish_time is not Verifier._establish_time
    assert {source.name for source in TimestampSource} >= {"TIMESTAMP_AUTHORITY", "TRANSPARENCY_SERVICE"}
    result = TimestampVerificationResult(source=TimestampSource.TIMESTAMP_AUTHORITY, time=SIGNED_AT)
    assert result.time == SIGNED_AT
    # trusted_roots.shipped() takes the production root's model from the client config.
    assert trusted_roots.shipped(staging=False).tlogs
