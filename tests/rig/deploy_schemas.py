"""The schemas that deploy/ is checked against, made at rig install time so that tests need no network.

- Kubernetes: the API's OpenAPI v2 document (``api/openapi-spec/swagger.json``) as the
  ``k8s.io/kubernetes`` module ships it through the Go module proxy, turned into one JSON Schema per
  kind in the layout kubeconform reads (``vX.Y.Z-standalone-strict/KIND-GROUP-VERSION.json``).
- Compose: ``schema/compose-spec.json`` of the ``github.com/compose-spec/compose-go/v2`` module, the
  Compose Specification's schema as the reference implementation embeds it.

Both module zips are checked against the "h1:" hashes that the Go checksum database records for them
(pinned in tests/rig/install.py) before anything is read from them.

Each kind's schema is standalone: the definitions it reaches are copied into its ``definitions`` and
referenced locally (recursive types such as a CRD's JSONSchemaProps stay finite). It is strict, as
the API server is with ``fieldValidation=Strict``: every object with declared properties refuses
others, ``apiVersion`` and ``kind`` must be the ones the file is for, and the two types the API's
JSON decoder reads in two forms (IntOrString and Quantity) accept both. Optional fields may be null,
which the API server reads as absent. Only the standard library is used: this runs before any
virtualenv exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SWAGGER_MEMBER = "api/openapi-spec/swagger.json"
COMPOSE_MEMBER = "schema/compose-spec.json"
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # swagger.json is about 4 MiB; anything far larger is not it
DRAFT = "http://json-schema.org/draft-07/schema#"

# The two types the API server decodes from a string or a number (apimachinery's custom unmarshalers).
TWO_FORMS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
}
REF_PREFIX = "#/definitions/"


class SchemaError(Exception):
    pass


# -- fetching ----------------------------------------------------------------------------------------


def module_member(
    proxy: str, module: str, version: str, h1: str, member: str, dirhash: Callable[[zipfile.ZipFile], str]
) -> bytes:
    """One file of a Go module, from the module proxy's zip, after the zip's hash is checked."""
    url = f"{proxy.rstrip('/')}/{_escape(module)}/@v/{version}.zip"
    with tempfile.TemporaryFile() as archive:
        with urllib.request.urlopen(url, timeout=300) as response:  # noqa: S310 - the Go proxy's https URL
            shutil.copyfileobj(response, archive)
        archive.seek(0)
        with zipfile.ZipFile(archive) as zf:
            actual = dirhash(zf)
            if actual != h1:
                raise SchemaError(f"{url} has hash {actual}, expected {h1}; refusing it")
            info = zf.getinfo(f"{module}@{version}/{member}")
            if info.file_size > MAX_MEMBER_BYTES:
                raise SchemaError(f"{member} in {url} is {info.file_size} bytes, over {MAX_MEMBER_BYTES}")
            return zf.read(info)


def _escape(module: str) -> str:
    """The module proxy's case encoding: an upper-case letter is '!' and its lower case."""
    return "".join(f"!{c.lower()}" if c.isupper() else c for c in module)


# -- Kubernetes: OpenAPI v2 -> kubeconform's per-kind schemas ---------------------------------------


def kind_file(group: str, version: str, kind: str) -> str:
    """kubeconform's name for a kind's schema: ``deployment-apps-v1.json``, ``service-v1.json``,
    ``networkpolicy-networking-v1.json`` (the group's first label only)."""
    suffix = f"-{group.partition('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
    return f"{kind.lower()}{suffix}.json"


def _schema(node: Any) -> Any:
    """One schema node, converted: local refs kept, the doc-only keys dropped, strictness added."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: _schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_schema(sub) for sub in value]
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("additionalProperties", False)
        required = set(out.get("required", ()))
        for name, sub in out["properties"].items():
            if name not in required and isinstance(sub.get("type"), str):
                sub["type"] = [sub["type"], "null"]
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def kubernetes_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name -> standalone strict schema, for every kind the API serves."""
    definitions = swagger.get("definitions")
    if not isinstance(definitions, dict) or not definitions:
        raise SchemaError("swagger.json has no definitions")
    converted = {name: TWO_FORMS.get(name) or _schema(body) for name, body in definitions.items()}
    reaches: dict[str, set[str]] = {}
    for name, body in converted.items():
        found: set[str] = set()
        _refs(body, found)
        missing = found - converted.keys()
        if missing:
            raise SchemaError(f"{name} refers to undefined {sorted(missing)}")
        reaches[name] = found

    def closure(root: str) -> list[str]:
        seen, todo = {root}, [root]
        while todo:
            for ref in reaches[todo.pop()]:
                if ref not in seen:
                    seen.add(ref)
                    todo.append(ref)
        return sorted(seen - {root})

    files: dict[str, dict[str, Any]] = {}
    for name, body in definitions.items():
        for gvk in body.get("x-kubernetes-group-version-kind", ()):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            api_version = f"{group}/{version}" if group else version
            schema = json.loads(json.dumps(converted[name]))
            props = schema.get("properties", {})
            if "apiVersion" in props and "kind" in props:
                props["apiVersion"] = {"enum": [api_version]}
                props["kind"] = {"enum": [kind]}
            schema["$schema"] = DRAFT
            schema["definitions"] = {ref: converted[ref] for ref in closure(name)}
            filename = kind_file(group, version, kind)
            if filename in files:
                # Two groups with one first label: kubeconform could not tell them apart either.
                raise SchemaError(f"two kinds map to {filename}; the layout cannot hold both")
            files[filename] = schema
    if not files:
        raise SchemaError("swagger.json declares no kinds (x-kubernetes-group-version-kind)")
    return files


def write_kubernetes_schemas(swagger_bytes: bytes, target: Path, stamp: str) -> int:
    """Write every kind's schema into ``target`` (replaced whole, by one rename); returns the count."""
    files = kubernetes_schemas(json.loads(swagger_bytes))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        for filename, schema in files.items():
            (staging / filename).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
        (staging / ".stamp").write_text(stamp + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(files)


def write_compose_schema(schema_bytes: bytes, target: Path) -> None:
    schema = json.loads(schema_bytes)
    if not isinstance(schema, dict) or "services" not in schema.get("properties", {}):
        raise SchemaError(f"{COMPOSE_MEMBER} does not look like the Compose Specification's schema")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(schema_bytes)
    tmp.replace(target)


def converter_digest() -> str:
    """Changes whenever this file does, so the rig remakes the schemas after a change here."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
