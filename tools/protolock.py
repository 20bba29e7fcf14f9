"""Keep aion.v1 wire-compatible: a field or enum number, once used, is never given another meaning.

``proto/fields.lock.json`` remembers every (message, number) -> "name: type" and (enum, number) -> name
the contract has ever had. Entries are only ever added. A change that gives a number another field
name, type or cardinality, or drops a field without ``reserved``, is reported by :func:`check` (run by
the test suite).

    python tools/protolock.py          # record new fields in the lock (what `nox -s proto` runs)
    python tools/protolock.py --check  # report violations and unrecorded fields; exit 1 if any
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "proto" / "fields.lock.json"
MODULES = sorted(p.stem for p in (ROOT / "proto" / "aion" / "v1").glob("*.proto"))

Lock = dict[str, dict[str, dict[str, str]]]

_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in vars(FieldDescriptor).items()
    if name.startswith("TYPE_") and isinstance(value, int)
}


def _field_signature(field: FieldDescriptor) -> str:
    """ "name: type", with "repeated" for lists; map fields show as their entry message."""
    if field.message_type is not None:
        kind = field.message_type.full_name
    elif field.enum_type is not None:
        kind = field.enum_type.full_name
    else:
        kind = _SCALARS[field.type]
    repeated = "repeated " if field.is_repeated else ""
    return f"{field.name}: {repeated}{kind}"


def _all_descriptors() -> tuple[list[Descriptor], list[EnumDescriptor]]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    messages: list[Descriptor] = []
    enums: list[EnumDescriptor] = []
    for name in MODULES:
        fd = importlib.import_module(f"aion.api.v1.{name}_pb2").DESCRIPTOR
        stack = list(fd.message_types_by_name.values())
        enums.extend(fd.enum_types_by_name.values())
        while stack:
            msg = stack.pop()
            if msg.GetOptions().map_entry:
                continue
            messages.append(msg)
            enums.extend(msg.enum_types)
            stack.extend(msg.nested_types)
    return messages, enums


def snapshot() -> Lock:
    """The contract as compiled now: numbers -> names, plus each message's reserved numbers."""
    messages, enums = _all_descriptors()
    lock: Lock = {"messages": {}, "enums": {}, "reserved": {}}
    for msg in sorted(messages, key=lambda m: m.full_name):
        fields = sorted(msg.fields, key=lambda f: f.number)
        lock["messages"][msg.full_name] = {str(f.number): _field_signature(f) for f in fields}
        proto = descriptor_pb2.DescriptorProto()
        msg.CopyToProto(proto)
        reserved = [n for r in proto.reserved_range for n in range(r.start, r.end)]
        if reserved:
            lock["reserved"][msg.full_name] = {str(n): "" for n in reserved}
    for enum in sorted(enums, key=lambda e: e.full_name):
        lock["enums"][enum.full_name] = {str(v.number): v.name for v in enum.values}
        proto_e = descriptor_pb2.EnumDescriptorProto()
        enum.CopyToProto(proto_e)
        reserved = [n for r in proto_e.reserved_range for n in range(r.start, r.end + 1)]
        if reserved:
            lock["reserved"][enum.full_name] = {str(n): "" for n in reserved}
    return lock


def check(history: Lock, current: Lock) -> list[str]:
    """Every way ``current`` gives a recorded number a new meaning or drops it without reserving it."""
    problems: list[str] = []
    for kind, noun in (("messages", "field"), ("enums", "value")):
        for owner, numbers in sorted(history.get(kind, {}).items()):
            now = current[kind].get(owner)
            if now is None:
                problems.append(f"{owner} was removed; deprecate it instead of deleting it")
                continue
            reserved = current.get("reserved", {}).get(owner, {})
            for number, name in sorted(numbers.items(), key=lambda item: int(item[0])):
                if number in now and now[number] != name:
                    problems.append(
                        f"{owner} {noun} {number} was {name!r} and is now {now[number]!r}: never change "
                        f"what a {noun} number means; reserve it and use a new one"
                    )
                elif number not in now and number not in reserved:
                    problems.append(
                        f"{owner} {noun} {number} ({name!r}) was removed without `reserved {number};`"
                    )
    return problems


def merge(history: Lock, current: Lock) -> Lock:
    """``history`` plus whatever ``current`` adds; nothing recorded is ever dropped."""
    merged: Lock = {"messages": {}, "enums": {}}
    for kind in ("messages", "enums"):
        owners = set(history.get(kind, {})) | set(current.get(kind, {}))
        for owner in sorted(owners):
            numbers = {**current.get(kind, {}).get(owner, {}), **history.get(kind, {}).get(owner, {})}
            merged[kind][owner] = dict(sorted(numbers.items(), key=lambda item: int(item[0])))
    return merged


def _load() -> Lock:
    if not LOCK.exists():
        return {"messages": {}, "enums": {}}
    data: Any = json.loads(LOCK.read_text(encoding="utf-8"))
    return data  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    history, current = _load(), snapshot()
    problems = check(history, current)
    for problem in problems:
        print(f"protolock: {problem}", file=sys.stderr)
    merged = merge(history, current)
    if args.check:
        if merged != history:
            print("protolock: new fields are not recorded; run `nox -s proto`", file=sys.stderr)
            return 1
        return 1 if problems else 0
    if problems:
        return 1
    LOCK.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
