"""aion's Sigstore verifier: sigstore-python's ``Verifier``, with the parts of the Sigstore client
specification it gets wrong or leaves out done by aion.

sigstore-python does nearly all of verification (the certificate chain at the signing time, the
SCT, the identity policy, the inclusion proof and checkpoint, the signed entry timestamp, the
signature, the consistency of ``hashedrekord`` and ``dsse`` entries). What this class changes, each
only ever adding a check or doing one that sigstore-python refuses to do:

1. **Establishing the signing time** (``_establish_time``). The validity periods of a trusted root
   are closed intervals; sigstore-python treats a timestamp authority's end as excluded and refuses
   a timestamp made at that very second. Here a signed timestamp counts when it verifies with one of
   the root's timestamp authorities and its time lies in that authority's ``validFor``, both ends
   included. The log's integrated time counts when a signed entry timestamp binds it (checked later
   by sigstore-python), for ``intoto`` v0.0.2 entries too, and only when the trusted root has the
   log's key valid at that time (sigstore-python does not compare it with the key's ``validFor``).
2. **``intoto`` v0.0.2 log entries** (``verify_dsse``), which sigstore-python refuses: the envelope's
   signature is checked with the certificate's key, and the entry must record this very envelope
   (:func:`aion.trust.log_entries.check_intoto_v002`).

It relies on these internals of sigstore-python (4.x), which
``tests/unit/test_trust_sigstore_verifier.py`` checks are still there:
``Verifier._establish_time(bundle)``, ``Verifier._verify_common_signing_cert(bundle, policy)``,
``TimestampVerificationResult`` and ``TimestampSource`` (``sigstore._internal.timestamp``), and
``ClientTrustConfig._inner`` (:func:`aion.trust.trusted_roots.shipped`). A later version that
renames them fails that test: the overrides would silently stop being called, and while
sigstore-python's own behaviour refuses what rules 1 and 2 accept, it skips the log key's period.

Errors are sigstore-python's ``VerificationError`` (what its callers already catch) or aion's.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import TrustedRoot
from sigstore.verify import Verifier

from aion.trust import log_entries, trusted_roots
from aion.trust.bundles import pae
from aion.trust.keys import PublicKey

if TYPE_CHECKING:
    from rfc3161_client import TimeStampResponse
    from rfc3161_client.verify import Verifier as TimestampVerifier
    from sigstore._internal.timestamp import TimestampVerificationResult
    from sigstore.models import Bundle
    from sigstore.verify.policy import VerificationPolicy
    from sigstore_models.common.v1 import TimeRange
    from sigstore_models.trustroot.v1 import CertificateAuthority
    from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootModel

MAX_SIGNED_TIMESTAMPS = 32
"""Signed timestamps checked per bundle: each costs a chain verification per authority."""

LOGGED_TIME_KINDS = frozenset({("hashedrekord", "0.0.1"), ("dsse", "0.0.1"), log_entries.INTOTO_V002})
"""Rekor v1 entry kinds whose integrated time aion accepts, and whose bodies are checked."""


class SpecVerifier(Verifier):
    """A sigstore-python ``Verifier`` over ``root``, with aion's time and ``intoto`` rules."""

    def __init__(self, root: TrustedRootModel) -> None:
        super().__init__(trusted_root=TrustedRoot(root))
        self._root = root
        self._authorities = [_TimestampAuthority.of(ca) for ca in root.timestamp_authorities]

    def _establish_time(self, bundle: Bundle) -> list[TimestampVerificationResult]:
        from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult

        problems: list[str] = []
        # 1. Signed timestamps, each verified with a timestamp authority of the trusted root.
        times = [
            TimestampVerificationResult(source=TimestampSource.TIMESTAMP_AUTHORITY, time=time)
            for time in self._signed_timestamp_times(bundle, problems)
        ]
        # 2. The log's integrated time, bound by the signed entry timestamp sigstore-python checks
        #    with the log's key among the checks of the entry.
        entry = log_entries.LogEntry.from_bundle(json.loads(bundle.to_json()))
        if entry.integrated_time is not None and entry.has_promise:
            if (entry.kind, entry.version) not in LOGGED_TIME_KINDS:
                raise SigstoreVerificationError(
                    f"the integrated time of a {entry.kind}/{entry.version} log entry is not a source of time"
                )
            logged = datetime.fromtimestamp(entry.integrated_time, tz=UTC)
            self._require_log_key_valid(entry.log_key_id, logged)
            times.append(
                TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=logged)
            )
        if not times:
            raise SigstoreVerificationError(
                "no verified time of signing: "
                + ("; ".join(problems) or "no signed timestamp and no log time")
            )
        return times

    def _signed_timestamp_times(self, bundle: Bundle, problems: list[str]) -> list[datetime]:
        data = bundle.verification_material.timestamp_verification_data
        responses: list[TimeStampResponse] = data.rfc3161_timestamps if data is not None else []
        if not responses:
            return []
        if not self._authorities:
            raise SigstoreVerificationError(
                "the bundle has signed timestamps, but the trusted root names no timestamp authority"
            )
        if len(responses) > MAX_SIGNED_TIMESTAMPS:
            raise SigstoreVerificationError(
                f"the bundle has {len(responses)} signed timestamps, more than the {MAX_SIGNED_TIMESTAMPS} "
                "aion checks"
            )
        encoded = [response.as_bytes() for response in responses]
        if len(set(encoded)) != len(encoded):
            raise SigstoreVerificationError("the bundle has the same signed timestamp twice")
        times: list[datetime] = []
        for number, response in enumerate(responses, start=1):
            time = self._verified_time(response, bundle.signature, f"signed timestamp {number}", problems)
            if time is not None:
                times.append(time)
        return times

    def _verified_time(
        self, response: TimeStampResponse, signature: bytes, what: str, problems: list[str]
    ) -> datetime | None:
        from rfc3161_client import VerificationError as TimestampVerificationError

        time: datetime = response.tst_info.gen_time
        verified_by: list[_TimestampAuthority] = []
        for authority in self._authorities:
            try:
                authority.verifier().verify_message(response, signature)
            except TimestampVerificationError:
                continue
            if trusted_roots.within(authority.valid_for, time):
                return time
            verified_by.append(authority)
        if verified_by:
            problems.extend(
                f"{what} ({time.isoformat()}) is outside the validity period of the timestamp authority "
                f"{authority.name} ({trusted_roots.describe(authority.valid_for)})"
                for authority in verified_by
            )
        else:
            problems.append(f"{what} does not verify with any timestamp authority of the trusted root")
        return None

    def _require_log_key_valid(self, key_id: bytes, time: datetime) -> None:
        logs = [log for log in self._root.tlogs if log.log_id.key_id == key_id]
        if not logs:
            raise SigstoreVerificationError(
                "the log entry is from a transparency log the trusted root does not name"
            )
        if not any(trusted_roots.within(log.public_key.valid_for, time) for log in logs):
            periods = ", ".join(trusted_roots.describe(log.public_key.valid_for) for log in logs)
            raise SigstoreVerificationError(
                f"the transparency log's key was not valid at the entry's integrated time "
                f"{time.isoformat()} (the trusted root has it valid {periods})"
            )

    def verify_dsse(self, bundle: Bundle, policy: VerificationPolicy) -> tuple[str, bytes]:
        document = json.loads(bundle.to_json())
        entry = log_entries.LogEntry.from_bundle(document)
        if (entry.kind, entry.version) != log_entries.INTOTO_V002:
            return super().verify_dsse(bundle, policy)
        envelope = log_entries.Envelope.from_bundle(document)
        if envelope is None:
            raise SigstoreVerificationError("an intoto log entry, but the bundle has no DSSE envelope")
        # 1-6. The certificate, its chain at the verified times, its SCT, the identity policy, the
        #      inclusion proof, checkpoint and signed entry timestamp, the times within the certificate.
        self._verify_common_signing_cert(bundle, policy)
        # 7. The envelope's one signature, by the certificate's key, over PAE(payloadType, payload).
        certificate = bundle.signing_certificate
        if len(envelope.signatures) != 1 or not _certificate_key(certificate).verifies(
            envelope.signatures[0], pae(envelope.payload_type, envelope.payload)
        ):
            raise SigstoreVerificationError(
                "the DSSE envelope's signature does not verify with the certificate"
            )
        # 8. The log entry records this very envelope.
        log_entries.check_intoto_v002(entry.body, envelope, certificate)
        return envelope.payload_type, envelope.payload


@dataclasses.dataclass(frozen=True, slots=True)
class _TimestampAuthority:
    """A timestamp authority of the trusted root: its chain (leaf first) and validity period."""

    name: str
    chain: tuple[x509.Certificate, ...]
    valid_for: TimeRange

    @classmethod
    def of(cls, authority: CertificateAuthority) -> _TimestampAuthority:
        chain = tuple(x509.load_der_x509_certificate(c.raw_bytes) for c in authority.cert_chain.certificates)
        name = authority.uri or authority.subject.common_name or authority.subject.organization or "(unnamed)"
        return cls(name, chain, authority.valid_for)

    def verifier(self) -> TimestampVerifier:
        from rfc3161_client import VerificationError as TimestampVerificationError
        from rfc3161_client import VerifierBuilder

        # A chain needs the signing certificate and a root; one with less verifies nothing.
        if len(self.chain) < 2:
            raise TimestampVerificationError("the authority's certificate chain is incomplete")
        builder = VerifierBuilder().tsa_certificate(self.chain[0]).add_root_certificate(self.chain[-1])
        for intermediate in self.chain[1:-1]:
            builder = builder.add_intermediate_certificate(intermediate)
        return builder.build()


def _certificate_key(certificate: x509.Certificate) -> PublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise SigstoreVerificationError("the signing certificate's key is neither ECDSA nor Ed25519")
    return PublicKey(key, "the signing certificate")


__all__ = ["LOGGED_TIME_KINDS", "MAX_SIGNED_TIMESTAMPS", "SpecVerifier"]
