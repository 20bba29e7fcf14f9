"""The JSON documents aion prints and serves: proto messages in a shape scripts can use.

protobuf's own JSON mapping writes 64-bit integers as strings (``"number": "3"``) and enums as their
full constant names (``"ROUTE_HYBRID"``), which every script then has to fix up. Here a message
becomes a document whose fields are named as in that mapping (lowerCamelCase) but where:

- integers of every width are JSON numbers;
- an enum value is the short word the text output shows: the constant without its type's prefix, in
  lower case with hyphens (``ROUTE_HYBRID`` -> ``hybrid``, ``INTENT_MODE_LOCAL_ONLY`` ->
  ``local-only``); the zero value ``*_UNSPECIFIED`` is ``null``;
- timestamps are RFC 3339 strings in UTC, bytes are base64, ``google.protobuf.Struct`` is plain JSON;
- every field is present (with its default) except unset message fields and unset members of a
  oneof, which are left out.

:func:`document` adds ``apiVersion`` and ``kind``, which every document aion prints carries. The
documents' shapes are the schemas under ``schemas/output/``.
"""

from __future__ import annotations

import base64
import re
from functools import cache
from typing import Any, TypeAlias

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

API_VERSION = "aion/v1"

_Field: TypeAlias = Any
"""A field descriptor: protobuf's stubs type the pure-Python and the upb descriptors apart."""

_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
    }
)


def document(kind: str, body: Message | dict[str, Any]) -> dict[str, Any]:
    """A document of ``kind``: apiVersion, kind, then the body (a message is converted)."""
    fields = to_dict(body) if isinstance(body, Message) else body
    return {"apiVersion": API_VERSION, "kind": kind, **fields}


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as a JSON-ready dict (see the module's docstring)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        entry = _map_entry(field)
        if entry is not None:
            entries = getattr(message, field.name).items()
            value_field = entry.fields_by_name["value"]
            out[field.json_name] = {str(k): _value(value_field, v) for k, v in entries}
        elif _is_repeated(field):
            out[field.json_name] = [_value(field, v) for v in getattr(message, field.name)]
        elif field.has_presence and not message.HasField(field.name):
            continue  # an unset message, oneof member or optional scalar
        else:
            out[field.json_name] = _value(field, getattr(message, field.name))
    return out


def enum_word(enum: EnumDescriptor, number: int) -> str | None:
    """The short word of an enum value (None for its zero value, or a number this version does not
    know)."""
    return _words(enum).get(number)


def _value(field: _Field, value: Any) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        if value.DESCRIPTOR.full_name in _WELL_KNOWN:
            return json_format.MessageToDict(value)
        return to_dict(value)
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return enum_word(field.enum_type, value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE) and value != value:  # noqa: PLR0124
        return None  # NaN has no JSON spelling
    return value


def _is_repeated(field: _Field) -> bool:
    return bool(field.is_repeated)


def _map_entry(field: _Field) -> Descriptor | None:
    """The entry type of a map field; None for any other field."""
    entry: Descriptor | None = field.message_type
    if _is_repeated(field) and entry is not None and entry.GetOptions().map_entry:
        return entry
    return None


@cache
def _words(enum: EnumDescriptor) -> dict[int, str]:
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return {
        value.number: value.name.removeprefix(prefix).lower().replace("_", "-")
        for value in enum.values
        if value.number != 0
    }


__all__ = ["API_VERSION", "document", "enum_word", "to_dict"]
