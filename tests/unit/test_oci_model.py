"""Manifests from a registry are attacker-controlled input: anything malformed is a refusal
(VerificationError), never a crash."""

from __future__ import annotations

import json

import pytest

from aion.errors import VerificationError
from aion.oci.model import Digest, Manifest, Reference

GOOD_LAYER = {"mediaType": "application/wasm", "digest": "sha256:" + "ab" * 32, "size": 8}


def parse(document: object) -> Manifest:
    raw = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return Manifest.parse(raw, Digest.of(raw), "m")


def test_a_good_manifest_parses() -> None:
    manifest = parse({"schemaVersion": 2, "layers": [GOOD_LAYER], "annotations": {"a": "b"}})
    assert manifest.layers[0].size == 8
    assert manifest.annotations == {"a": "b"}


@pytest.mark.parametrize(
    "document",
    [
        {"layers": 5},
        {"layers": [{**GOOD_LAYER, "digest": 5}]},
        {"layers": [{**GOOD_LAYER, "digest": "sha256:xyz"}]},
        {"layers": [{**GOOD_LAYER, "size": -1}]},
        {"layers": [{**GOOD_LAYER, "size": True}]},
        {"layers": [{**GOOD_LAYER, "annotations": ["x"]}]},
        {"layers": [{**GOOD_LAYER, "annotations": {"title": 5}}]},
        {"annotations": "x"},
        {"mediaType": 5},
        {"manifests": {"a": 1}},
        {"subject": "sha256:" + "ab" * 32},
        [1, 2],
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
    ],
)
def test_malformed_manifests_are_refused(document: object) -> None:
    with pytest.raises(VerificationError):
        parse(document)


@pytest.mark.parametrize(
    ("text", "name"),
    [("oci:/srv/mirror/../../etc/x:1", "oci:/etc/x"), ("oci:/srv/mirror/./m", "oci:/srv/mirror/m")],
)
def test_layout_paths_are_normalised_before_rules_see_them(text: str, name: str) -> None:
    assert Reference.parse(text).name == name
