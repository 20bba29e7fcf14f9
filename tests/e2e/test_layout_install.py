"""Installing from an image-layout directory (``oci:PATH``), the air-gapped path: the files of a layout
are input like a registry's answers, so links and special files in it are refused, not followed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.supply import quarantine_reasons, write_module, write_trust
from tests.rig.daemon import aionctl


def layout_with_module(tmp_path: Path) -> tuple[Path, str, Path]:
    layout = tmp_path / "layout"
    made = aionctl(
        "module", "package", str(write_module(tmp_path / "mod")), "--to", f"oci:{layout}", "-o", "json"
    )
    assert made.returncode == 0, made.stderr
    config = write_trust(tmp_path / "cfg", {"rules": [{"match": "oci:/nowhere/**", "keys": ["k.pub"]}]})
    return layout, json.loads(made.stdout)["digest"], config


def install(tmp_path: Path, layout: Path, config: Path) -> tuple[int, str]:
    result = aionctl(
        "install", f"oci:{layout}:1.3.0", "--config", str(config), "--store", str(tmp_path / "store")
    )
    return result.returncode, result.stderr


def test_an_unsigned_layout_is_refused_like_a_registry(tmp_path: Path) -> None:
    layout, _, config = layout_with_module(tmp_path)
    code, err = install(tmp_path, layout, config)
    assert code == 1
    assert f"oci:{layout}: no trust rule covers this repository" in err
    (reason,) = quarantine_reasons(tmp_path / "store")
    assert (reason["step"], reason["digest"]) == ("policy", None), "refused before reading the layout"


@pytest.mark.parametrize("swap", ["symlink-to-dev-zero", "fifo"])
def test_special_files_in_a_layout_are_not_read(tmp_path: Path, swap: str) -> None:
    layout, digest, _ = layout_with_module(tmp_path)
    manifest = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    manifest.unlink()
    if swap == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.symlink_to("/dev/zero")
    covering = write_trust(
        tmp_path / "covering", {"rules": [{"match": f"oci:{tmp_path}/**", "keys": ["k.pub"]}]}
    )
    code, err = install(tmp_path, layout, covering)
    assert code == 3, err
    assert f"cannot read {digest}" in err
    assert "Traceback" not in err
