"""Generate aion's Python gRPC code from proto/aion/v1 into aion/api/v1, or check that it is current.

    python tools/protogen.py          # regenerate (what `nox -s proto` runs)
    python tools/protogen.py --check  # exit 1 and list the files that differ (what the tests run)

protoc writes imports that follow the proto package path (``from aion.v1 import common_pb2``); the
generated code lives one level deeper (``aion.api.v1``) so that the ``aion`` namespace holds only
hand-written code at its top. The rewrite below is a plain prefix substitution on import lines.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "aion" / "v1"
OUT_DIR = ROOT / "aion" / "api" / "v1"
# Hand-written files in OUT_DIR that generation must leave alone.
KEEP = {"__init__.py"}

_IMPORT_REWRITES = (
    (re.compile(r"^from aion\.v1 import ", re.MULTILINE), "from aion.api.v1 import "),
    (re.compile(r"^import aion\.v1\.", re.MULTILINE), "import aion.api.v1."),
    (re.compile(r"\baion\.v1\.(\w+_pb2)\b"), r"aion.api.v1.\1"),
)


def _plugin(name: str) -> Path:
    """Find a protoc plugin installed next to this interpreter (mypy-protobuf ships them as scripts)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"protogen: {name} not found; install the proto group: pip install --group proto")
    return Path(found)


def generate(into: Path) -> dict[str, bytes]:
    """Run protoc into ``into`` and return the generated files (name -> bytes) after the import rewrite."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_DIR.glob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={into}",
        f"--grpc_python_out={into}",
        f"--mypy_out={into}",
        f"--mypy_grpc_out={into}",
        *protos,
    ]
    # grpc_tools.protoc adds its bundled well-known types (google/protobuf/*.proto) itself.
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"protogen: protoc failed:\n{result.stderr}")
    files: dict[str, bytes] = {}
    for path in sorted((into / "aion" / "v1").iterdir()):
        text = path.read_text(encoding="utf-8")
        for pattern, replacement in _IMPORT_REWRITES:
            text = pattern.sub(replacement, text)
        files[path.name] = text.encode("utf-8")
    return files


def stale_files(generated: dict[str, bytes]) -> list[str]:
    """Names whose committed bytes differ from ``generated``, plus committed files no longer generated."""
    stale = [name for name, data in generated.items() if _read(OUT_DIR / name) != data]
    stale += [
        p.name
        for p in OUT_DIR.iterdir()
        if p.is_file() and p.name not in generated and p.name not in KEEP and p.suffix in {".py", ".pyi"}
    ]
    return sorted(stale)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aion-protogen-") as tmp:
        generated = generate(Path(tmp))
    stale = stale_files(generated)
    if args.check:
        if stale:
            print("generated code in aion/api/v1 is stale; run `nox -s proto`:", file=sys.stderr)
            for name in stale:
                print(f"  {name}", file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in stale:
        target = OUT_DIR / name
        if name in generated:
            target.write_bytes(generated[name])
        else:
            target.unlink()
    print(f"protogen: {len(stale)} file(s) updated in {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
