"""Build the example WASM modules (examples/modules/*/) from their C sources, byte for byte the same on
every run and every machine with the same Debian packages, or check the committed ones.

    python3 tools/build_modules.py          # rebuild every examples/modules/NAME/NAME.wasm
    python3 tools/build_modules.py --check  # rebuild into a temporary directory; exit 1 naming
                                            # each committed .wasm that differs (or is missing)

Each directory examples/modules/NAME/ holding C files is one module: its *.c files, in sorted
order, are compiled and linked into NAME.wasm, a WASI command (``main``; wasm32-wasi) that speaks
aion's module ABI (docs/modules.md). examples/modules/include/ holds the header they share.

The toolchain is Debian's, and only Debian's: clang and lld (14), wasi-libc and
libclang-rt-14-dev-wasm32 (``sudo python3 tests/rig/install.py apt`` installs them). What makes the
output reproducible: no debug information and no custom sections at all (``--strip-all`` drops the
name and producers sections, which would carry the compiler's version string); no path of the
machine in the output (sources named relative to the repository, ``-ffile-prefix-map`` for
``__FILE__``); only the wasi-libc headers, never the build machine's /usr/include or
/usr/local/include (``-nostdlibinc``); sources in sorted order. A different clang, lld or wasi-libc
may give different bytes: ``--check`` then names the versions it found beside the ones the
committed modules were built with (:data:`BUILT_WITH`).

The test suite builds its own test modules (tests/fixtures/modules/) with these same flags, through
tests/rig/wasm.py, which imports :func:`compile_command` from here. Standard library only.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "examples" / "modules"
INCLUDE = MODULES / "include"

CLANG = "clang"
SYSROOT = "/usr"
"""Debian's wasi-libc lays out the target under /usr: /usr/include/wasm32-wasi, /usr/lib/wasm32-wasi."""
WASI_INCLUDE = "/usr/include/wasm32-wasi"

CFLAGS = (
    "--target=wasm32-wasi",
    f"--sysroot={SYSROOT}",
    "-nostdlibinc",
    "-isystem",
    WASI_INCLUDE,
    "-std=c11",
    "-O2",
    "-DNDEBUG",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fno-ident",
)
"""Compiler flags for every module (examples and test modules alike)."""
LDFLAGS = ("-Wl,--strip-all",)
"""Linker flags: a WASI command with ``main`` (so no ``--no-entry``), without any custom section."""
LIBS = ("-lm",)

BUILT_WITH = {
    "clang": "1:14.0.6-12",
    "lld-14": "1:14.0.6-12",
    "wasi-libc": "0.0~git20220510.9886d3d-2",
    "libclang-rt-14-dev-wasm32": "1:14.0.6-12",
}
"""The Debian package versions the committed .wasm files were built with (clang is clang-14's)."""


def compile_command(sources: list[Path], output: Path, *, cwd: Path = ROOT) -> list[str]:
    """The clang command that builds ``sources`` into ``output``, to run in ``cwd``.

    Sources under ``cwd`` are named relative to it, and ``-ffile-prefix-map`` maps ``cwd`` to ``.``,
    so the command's output does not depend on where the repository is checked out."""

    def named(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(cwd.resolve()))
        except ValueError:
            return str(path)

    return [
        CLANG,
        *CFLAGS,
        f"-ffile-prefix-map={cwd.resolve()}=.",
        "-I",
        named(INCLUDE),
        *LDFLAGS,
        "-o",
        str(output),
        *sorted(named(s) for s in sources),
        *LIBS,
    ]


def modules() -> dict[str, list[Path]]:
    """Each module directory's name -> its C sources, sorted."""
    found: dict[str, list[Path]] = {}
    for source in sorted(MODULES.glob("*/*.c")):
        found.setdefault(source.parent.name, []).append(source)
    return found


def toolchain_versions() -> dict[str, str]:
    """The installed versions of the packages in :data:`BUILT_WITH` ("" for one that is missing)."""
    versions = {}
    for package in BUILT_WITH:
        name = "clang-14" if package == "clang" else package
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True, text=True, check=False
        )
        versions[package] = result.stdout.strip() if result.returncode == 0 else ""
    return versions


def build(name: str, sources: list[Path], out_dir: Path) -> Path:
    """Compile one module into ``out_dir/NAME.wasm``; SystemExit with clang's message on failure."""
    output = out_dir / f"{name}.wasm"
    command = compile_command(sources, output)
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SystemExit(
            f"build_modules: {CLANG} is not installed; run: sudo python3 tests/rig/install.py apt"
        ) from None
    if result.returncode != 0:
        raise SystemExit(f"build_modules: {name} did not build:\n{result.stderr.strip()}")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed .wasm differs")
    parser.add_argument("--print-command", action="store_true", help="print each clang command line")
    args = parser.parse_args(argv)
    found = modules()
    if not found:
        raise SystemExit(f"build_modules: no C sources under {MODULES}")
    with tempfile.TemporaryDirectory(prefix="aion-modules-") as tmp:
        differs = []
        for name, sources in found.items():
            if args.print_command:
                print(" ".join(compile_command(sources, Path(f"{name}.wasm"))))
            built = build(name, sources, Path(tmp))
            committed = MODULES / name / f"{name}.wasm"
            if args.check:
                if not committed.is_file() or not filecmp.cmp(built, committed, shallow=False):
                    differs.append(committed.relative_to(ROOT))
            else:
                shutil.copyfile(built, committed)
                print(f"{committed.relative_to(ROOT)}: {committed.stat().st_size} bytes")
    if differs:
        for path in differs:
            print(f"{path}: differs from a fresh build of its sources", file=sys.stderr)
        installed = toolchain_versions()
        other = {p: v for p, v in installed.items() if v != BUILT_WITH[p]}
        if other:
            print(
                "build_modules: the toolchain differs from the one the modules were built with: "
                + ", ".join(f"{p} {v or 'missing'} (built with {BUILT_WITH[p]})" for p, v in other.items()),
                file=sys.stderr,
            )
        print("build_modules: run python3 tools/build_modules.py and commit the .wasm files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
