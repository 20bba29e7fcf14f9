"""PolicyService: apply, reload, roll back and read policy versions, on top of :mod:`aiond.policy.store`.

Errors reach the caller through the error table (:mod:`aion.errors`): a config set with errors is
INVALID_ARGUMENT, with its findings in the binary trailer ``aion-activation-bin`` (the serialized
response message, since a failed call has no response body); a stale ``expected_active_tag`` is
ABORTED; nothing to roll back to is FAILED_PRECONDITION; an unknown version is NOT_FOUND; a malformed
request is INVALID_ARGUMENT.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from aion.api.v1 import common_pb2, policies_pb2, policies_pb2_grpc
from aion.config.findings import Finding
from aion.config.wire import finding_from_dict, finding_message
from aion.errors import ConflictError, UsageError
from aiond.policy.store import (
    HISTORY_PAGE_MAX,
    ActivationRefused,
    Outcome,
    PolicyStore,
    RollbackRefused,
    Target,
)
from aiond.security.auth import current_principal
from aiond.state.backend import StoredVersion

_R = TypeVar("_R", policies_pb2.ApplyPolicyResponse, policies_pb2.ReloadPolicyResponse)
_Refusal = TypeVar("_Refusal", ActivationRefused, RollbackRefused)

SERVICE_NAME = policies_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
ACTIVATION_TRAILER = "aion-activation-bin"
MAX_VERSION = 2**62
"""Version numbers the store can hold (SQLite integers); a number above is a malformed request."""
TRAILER_BYTES = 4096
"""Most bytes of findings sent in the trailer (base64 adds a third; gRPC's soft metadata limit is 8 KiB)."""


def timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when.astimezone(dt.UTC))
    return stamp


def version_message(version: StoredVersion, active_number: int | None) -> policies_pb2.PolicyVersion:
    return policies_pb2.PolicyVersion(
        number=version.number,
        tag=version.tag,
        author=version.author,
        created_at=timestamp(version.created_at),
        source=version.source,
        active=version.number == active_number,
        description=version.description,
    )


class PolicyServicer(policies_pb2_grpc.PolicyServiceServicer):
    def __init__(self, store: PolicyStore) -> None:
        self._store = store

    def _active_number(self) -> int | None:
        active = self._store.active
        return active.version.number if active else None

    async def ApplyPolicy(
        self, request: policies_pb2.ApplyPolicyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policies_pb2.ApplyPolicyResponse:
        files = [(f.path, bytes(f.content)) for f in request.files]
        try:
            outcome = await self._store.apply(
                files,
                principal=current_principal.get().name,
                description=request.source,
                dry_run=request.dry_run,
                expected_tag=request.expected_active_tag or None,
            )
        except ActivationRefused as exc:
            raise with_refusal(self._store, exc, policies_pb2.ApplyPolicyResponse) from None
        return policies_pb2.ApplyPolicyResponse(activation=activation(self._store, outcome))

    async def ReloadPolicy(
        self, request: policies_pb2.ReloadPolicyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policies_pb2.ReloadPolicyResponse:
        try:
            outcome = await self._store.reload(
                principal=current_principal.get().name, dry_run=request.dry_run
            )
        except ActivationRefused as exc:
            raise with_refusal(self._store, exc, policies_pb2.ReloadPolicyResponse) from None
        return policies_pb2.ReloadPolicyResponse(activation=activation(self._store, outcome))

    async def RollbackPolicy(
        self, request: policies_pb2.RollbackPolicyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policies_pb2.RollbackPolicyResponse:
        which = request.WhichOneof("target")
        if which == "number" and not 1 <= request.number <= MAX_VERSION:
            raise UsageError(f"version numbers run from 1 to {MAX_VERSION}")
        if which == "tag" and not request.tag.strip():
            raise UsageError("an empty tag names no version", hint="give a tag, or no target")
        target = Target(
            number=request.number if which == "number" else None, tag=request.tag if which == "tag" else None
        )
        try:
            new, previous = await self._store.rollback(target, principal=current_principal.get().name)
        except RollbackRefused as exc:  # its findings travel as a refused apply's do
            raise with_refusal(self._store, exc, policies_pb2.ApplyPolicyResponse) from None
        return policies_pb2.RollbackPolicyResponse(
            version=version_message(new, new.number), previous=version_message(previous, new.number)
        )

    async def ListPolicyVersions(
        self, request: policies_pb2.ListPolicyVersionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policies_pb2.ListPolicyVersionsResponse:
        before = None
        if request.page_token:
            if not re.fullmatch(r"[0-9]{1,18}", request.page_token):
                raise UsageError("page_token is not one this server gave")
            before = int(request.page_token)
        limit = min(request.page_size or 50, HISTORY_PAGE_MAX - 1)
        versions = self._store.history(limit=limit + 1, before=before)
        page, more = versions[:limit], len(versions) > limit
        active = self._active_number()
        return policies_pb2.ListPolicyVersionsResponse(
            versions=[version_message(v, active) for v in page],
            next_page_token=str(page[-1].number) if more and page else "",
        )

    async def GetPolicyVersion(
        self, request: policies_pb2.GetPolicyVersionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policies_pb2.GetPolicyVersionResponse:
        which = request.WhichOneof("selector")
        if which is None:
            active = self._store.active
            if active is None:
                raise ConflictError("no policy version is active")
            version = active.version
        else:
            if which == "number" and not 1 <= request.number <= MAX_VERSION:
                raise UsageError(f"version numbers run from 1 to {MAX_VERSION}")
            version = self._store.find(
                Target(
                    number=request.number if which == "number" else None,
                    tag=request.tag if which == "tag" else None,
                )
            )
        files = self._store.files(version.number) if request.include_files else []
        return policies_pb2.GetPolicyVersionResponse(
            version=version_message(version, self._active_number()),
            files=[common_pb2.ConfigFile(path=p, content=c) for p, c in files],
        )

    async def GetPolicyStatus(
        self, request: policies_pb2.GetPolicyStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policies_pb2.GetPolicyStatusResponse:
        return status_message(self._store)


def activation(store: PolicyStore, outcome: Outcome) -> policies_pb2.Activation:
    """The Activation message for an apply or reload that was not refused."""
    active = store.active.version.number if store.active else None
    message = policies_pb2.Activation(
        activated=outcome.activated,
        unchanged=outcome.unchanged,
        findings=[finding_message(f) for f in _worst_first(outcome.findings)],
    )
    if outcome.version is not None:
        message.version.CopyFrom(version_message(outcome.version, active))
    else:  # a dry run of new content: only the tag it would have
        message.version.CopyFrom(policies_pb2.PolicyVersion(tag=outcome.tag))
    if outcome.previous is not None:
        message.previous.CopyFrom(version_message(outcome.previous, active))
    return message


def refusal(
    store: PolicyStore, exc: ActivationRefused | RollbackRefused, response: type[_R], *, max_bytes: int = 0
) -> _R:
    """The response message of a refused apply or reload: not activated, the findings worst first, and
    the version that stays active as ``previous``. With ``max_bytes``, only the findings that fit in
    that many bytes are kept, and a last note says how many more there were (a gRPC trailer must stay
    well under the 8 KiB metadata limit). Linear in the findings, whose number the validator already
    bounds (:data:`aiond.policy.validation.MAX_FINDINGS`)."""
    message = policies_pb2.Activation(activated=False)
    active = store.active
    if active is not None:
        message.previous.CopyFrom(version_message(active.version, active.version.number))
    budget = max_bytes - message.ByteSize() - _NOTE_BYTES if max_bytes else None
    left_out = exc.omitted
    for finding in _worst_first(exc.findings):
        built = finding_message(finding)
        size = built.ByteSize() + 3  # the field's tag and length prefix
        if budget is not None and size > budget:
            left_out += 1
            budget = -1  # what follows is counted, never built
            continue
        if budget is not None:
            budget -= size
        message.findings.append(built)
    if left_out:
        message.findings.append(
            common_pb2.Finding(
                rule_id="AION000",
                severity=common_pb2.SEVERITY_INFO,
                message=f"{left_out} more findings are not shown here",
                location=common_pb2.Location(),
                hint="run `aionctl validate` on the config set to see every finding",
            )
        )
    return response(activation=message)


_NOTE_BYTES = 160
"""Room kept for the closing note of :func:`refusal`."""


def with_refusal(store: PolicyStore, exc: _Refusal, response: type[_R]) -> _Refusal:
    """``exc``, carrying its refusal message in the ``aion-activation-bin`` trailer (a failed call has
    no response body), for the error interceptor to send."""
    exc.trailers = (
        (ACTIVATION_TRAILER, refusal(store, exc, response, max_bytes=TRAILER_BYTES).SerializeToString()),
    )
    return exc


def status_message(store: PolicyStore) -> policies_pb2.GetPolicyStatusResponse:
    reply = policies_pb2.GetPolicyStatusResponse(config_dir=str(store.config_dir))
    active = store.active
    if active is not None:
        reply.active.CopyFrom(version_message(active.version, active.version.number))
        reply.last_activation_at.CopyFrom(timestamp(active.activated_at))
    error = store.last_error
    if error is not None:
        reply.last_error.CopyFrom(
            policies_pb2.ActivationError(
                at=timestamp(dt.datetime.fromisoformat(error["at"])),
                source=error.get("source", ""),
                message=error.get("message", ""),
                findings=[finding_message(finding_from_dict(f)) for f in error.get("findings", [])],
            )
        )
    return reply


def _worst_first(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -f.severity.rank)


def add_to_server(server: grpc.aio.Server, store: PolicyStore) -> str:
    policies_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(store), server)
    return SERVICE_NAME
