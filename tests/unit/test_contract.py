"""The aion.v1 contract: generated code is current, and the API design rules hold."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from tests.rig.generated import assert_current

REPO = Path(__file__).resolve().parents[2]
PROTO_MODULES = ["admin", "backup", "common", "events", "modules", "policies", "router", "tasks"]


def files() -> list[FileDescriptor]:
    return [importlib.import_module(f"aion.api.v1.{name}_pb2").DESCRIPTOR for name in PROTO_MODULES]


def test_every_proto_file_has_generated_code() -> None:
    protos = sorted(p.stem for p in (REPO / "proto" / "aion" / "v1").glob("*.proto"))
    assert protos == PROTO_MODULES


def test_generated_code_is_current() -> None:
    assert_current("protogen.py", "stale generated code; run `nox -s proto`")


def test_staleness_check_detects_an_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import protogen
    finally:
        sys.path.remove(str(REPO / "tools"))
    generated = protogen.generate(tmp_path)
    assert protogen.stale_files(generated) == []
    tampered = dict(generated)
    tampered["admin_pb2.py"] += b"\n# edited by hand\n"
    assert protogen.stale_files(tampered) == ["admin_pb2.py"]


def _enums(fd: FileDescriptor) -> list[EnumDescriptor]:
    out = list(fd.enum_types_by_name.values())
    stack: list[Descriptor] = list(fd.message_types_by_name.values())
    while stack:
        msg = stack.pop()
        out.extend(msg.enum_types)
        stack.extend(msg.nested_types)
    return out


def _screaming(name: str) -> str:
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()


@pytest.mark.parametrize("fd", files(), ids=lambda fd: fd.name)
def test_enums_start_with_an_unspecified_zero(fd: FileDescriptor) -> None:
    for enum in _enums(fd):
        zero = enum.values_by_number[0]
        assert zero.name == f"{_screaming(enum.name)}_UNSPECIFIED", enum.full_name
        prefix = _screaming(enum.name) + "_"
        assert all(v.name.startswith(prefix) for v in enum.values), (
            f"{enum.full_name} values need the {prefix} prefix"
        )


@pytest.mark.parametrize("fd", files(), ids=lambda fd: fd.name)
def test_each_rpc_has_its_own_request_and_response(fd: FileDescriptor) -> None:
    for service in fd.services_by_name.values():
        assert service.name.endswith("Service"), service.full_name
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request", method.full_name
            assert method.output_type.name == f"{method.name}Response", method.full_name


def test_request_and_response_messages_are_not_shared() -> None:
    used: dict[str, str] = {}
    for fd in files():
        for service in fd.services_by_name.values():
            for method in service.methods:
                for message in (method.input_type, method.output_type):
                    assert message.full_name not in used, (
                        f"{message.full_name} used by {used.get(message.full_name)}"
                    )
                    used[message.full_name] = method.full_name


def test_the_contract_covers_what_later_work_needs() -> None:
    expected = {
        "aion.v1.TaskService": {"SubmitTask", "GetTask", "WatchTask", "CancelTask"},
        "aion.v1.RouterService": {"ExplainRoute"},
        "aion.v1.PolicyService": {
            "ApplyPolicy", "ReloadPolicy", "RollbackPolicy",
            "ListPolicyVersions", "GetPolicyVersion", "GetPolicyStatus",
        },
        "aion.v1.ModuleService": {
            "ListModules", "InstallModule", "GetModule",
            "SetModuleParallelism", "VerifyModules", "RemoveModule",
        },
        "aion.v1.AdminService": {
            "GetStatus", "ListBreakers", "SetBreakerState", "ListIntentModes", "SetIntentMode", "WhoAmI",
            "ListTokens", "RotateToken",
        },
        "aion.v1.EventService": {"TailEvents"},
        "aion.v1.BackupService": {"CreateBackup"},
    }  # fmt: skip
    actual = {
        service.full_name: {m.name for m in service.methods}
        for fd in files()
        for service in fd.services_by_name.values()
    }
    assert actual == expected


# -- field numbers are never reused ------------------------------------------------------------------


def test_field_lock_is_current() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import protolock
    finally:
        sys.path.remove(str(REPO / "tools"))
    committed = json.loads((REPO / "proto" / "fields.lock.json").read_text())
    assert protolock.check(committed, protolock.snapshot()) == []
    assert protolock.merge(committed, protolock.snapshot()) == committed, (
        "run `nox -s proto` to record new fields"
    )


def test_field_lock_catches_a_reused_number() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import protolock
    finally:
        sys.path.remove(str(REPO / "tools"))
    current = protolock.snapshot()
    assert current["messages"]["aion.v1.GetTaskRequest"] == {"1": "task_id: string"}
    assert current["messages"]["aion.v1.Decision"]["4"] == "fallback_chain: repeated aion.v1.Target"

    def history_with(owner: str, number: str, signature: str) -> dict[str, Any]:
        history: dict[str, Any] = json.loads(json.dumps(current))
        history["messages"][owner][number] = signature
        return history

    # Field 1 of GetTaskRequest once had another name: the current contract reuses its number.
    renamed = history_with("aion.v1.GetTaskRequest", "1", "old_task_ref: string")
    assert protolock.check(renamed, current) == [
        "aion.v1.GetTaskRequest field 1 was 'old_task_ref: string' and is now 'task_id: string': "
        "never change what a field number means; reserve it and use a new one"
    ]
    # Same name, another type: as breaking on the wire as a new name.
    assert len(protolock.check(history_with("aion.v1.GetTaskRequest", "1", "task_id: int64"), current)) == 1
    # A removed field that is not reserved is caught too.
    assert protolock.check(history_with("aion.v1.GetTaskRequest", "9", "gone: string"), current) == [
        "aion.v1.GetTaskRequest field 9 ('gone: string') was removed without `reserved 9;`"
    ]
