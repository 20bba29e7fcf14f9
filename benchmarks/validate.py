"""Validation throughput and the cost of a very large file, side by side with check-jsonschema.

1. 1,000 generated config files of about 80 lines (250 sets of intents, policies, models and modules):
   - aion in-process: collect + parse with line/column tracking + schema + cross-file rules;
   - aionctl, one process: ``aionctl validate --each-dir`` over all 250 sets;
   - check-jsonschema (the peer), one process per file kind over the same files and schemas. It checks
     schemas only: no positions of its own, no cross-file rules.
2. One 10,000-intent intents.yml with its other files: wall time and peak RSS of ``aionctl validate``
   in a fresh process, and check-jsonschema on the same intents.yml.

    python benchmarks/validate.py [--rounds N]

Targets (issue 3): >= 1,000 files/s; >= 4x check-jsonschema's throughput; the 10,000-intent set in
<= 1 s and <= 200 MB peak memory.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine, median, timed, today, write_section  # noqa: E402

BIN = Path(sys.executable).parent
KINDS = ("intents", "policies", "models", "modules")
SETS = 250
TARGET_FILES_PER_S = 1000.0
TARGET_RATIO = 4.0
TARGET_LARGE_S = 1.0
TARGET_LARGE_MB = 200.0


def intents(rng: random.Random, count: int) -> str:
    out = []
    for i in range(count):
        local_only = rng.random() < 0.3
        out.append(
            f"intent_{i}_{rng.randrange(10**6)}:\n"
            f"  default_route: {'local' if local_only else rng.choice(['auto', 'local', 'api'])}\n"
            f"  candidates: {'[local, hybrid]' if local_only else '[local, api, hybrid]'}\n"
            f"  privacy: {'local-only' if local_only else 'allow-api'}\n"
            f"  tiers_allowed: {'[tier0]' if local_only else '[tier0, tier1, tier2]'}\n"
            f"  vector_usage: {str(rng.random() < 0.5).lower()}\n"
            f'  description: "generated intent {i} for the validation benchmark"\n'
        )
    return "".join(out)


def policies(rng: random.Random) -> str:
    rules = "".join(
        f'    - match: "ghcr.io/team{i}/**"\n'
        "      identities:\n"
        '        - issuer: "https://token.actions.githubusercontent.com"\n'
        f'          subject: "https://github.com/team{i}/modules/.github/workflows/release.yml@refs/tags/*"\n'
        for i in range(12)
    )
    return (
        "budget:\n  default_usd: 0.02\n  hard_cap_usd: 0.20\n"
        "latency:\n  p95_ms: { local: 600, api: 2000, hybrid: 2300 }\n"
        "privacy:\n  local_only_intents: []\n"
        'providers:\n  deny: ["anthropic"]\n  allow: ["ollama", "openai", "azure", "hf", "vllm"]\n'
        'routing:\n  fallback_order: ["local", "api", "hybrid"]\n'
        f"breakers:\n  failure_ratio: 0.5\n  window: {rng.randrange(10, 50)}\n  min_requests: 5\n"
        "  cooldown_ms: 30000\n  half_open_probes: 1\n"
        "retries:\n  max_attempts: 2\n  base_delay_ms: 100\n  max_delay_ms: 2000\n  budget_ratio: 0.1\n"
        "limits:\n  concurrency: { local: 16, api: 64, hybrid: 16 }\n"
        "  queue_depth: { local: 64, api: 256, hybrid: 64 }\n  max_input_bytes: 1048576\n"
        "trust:\n  require_sbom: true\n  rules:\n" + rules
    )


def models(rng: random.Random) -> str:
    local = ", ".join(f'"ollama:model-{i}"' for i in range(4))
    cloud1 = ", ".join(f'"openai:gpt-{i}"' for i in range(4))
    cloud2 = ", ".join(f'"azure:gpt-{i}", "hf:mixtral-{i}"' for i in range(3))
    facts = "".join(
        f'  "openai:gpt-{i}":\n    input_usd_per_mtok: {rng.randrange(1, 20) / 10}\n'
        f"    output_usd_per_mtok: {rng.randrange(20, 80) / 10}\n    context_window: 128000\n"
        "    max_output_tokens: 4096\n"
        for i in range(4)
    ) + "".join(
        f'  "azure:gpt-{i}":\n    input_usd_per_mtok: 0.{i + 1}\n    output_usd_per_mtok: 0.{i + 4}\n'
        f'  "hf:mixtral-{i}":\n    input_usd_per_mtok: 0.9\n    output_usd_per_mtok: 0.9\n'
        "    context_window: 65536\n"
        for i in range(3)
    )
    return (
        f'tiers:\n  tier0:\n    local: [{local}, "vllm:llama3.1"]\n  tier1:\n    cloud: [{cloud1}]\n'
        f"  tier2:\n    cloud: [{cloud2}]\n"
        "providers:\n"
        '  azure:\n    api: openai\n    base_url: "https://aion.openai.azure.com/openai/v1"\n'
        "    api_key_secret: AZURE_OPENAI_API_KEY\n    timeout_ms: 4000\n"
        '  ollama:\n    base_url: "http://127.0.0.1:11434/v1"\n    locality: local\n'
        '  vllm:\n    base_url: "http://127.0.0.1:8000/v1"\n    locality: local\n'
        "models:\n"
        + facts
        + "pricing:\n  default_input_usd_per_mtok: 10\n  default_output_usd_per_mtok: 30\n"
        "secrets:\n  backend: files\n  directory: /run/secrets/aion\n"
    )


def modules(rng: random.Random) -> str:
    return "modules:\n" + "".join(
        f'  - name: module_{i}\n    ref: "ghcr.io/team{i % 8}/module_{i}:1.{rng.randrange(10)}.0"\n'
        '    runtime: wasm\n    signatures: ["cosign:release"]\n    timeout_ms: 1500\n'
        '    limits: { cpu: "0.5", memory: "256Mi" }\n    routes: [hybrid]\n    parallelism: 4\n'
        for i in range(10)
    )


def generate(root: Path, rng: random.Random) -> list[Path]:
    dirs = []
    for n in range(SETS):
        d = root / f"set{n:03d}"
        d.mkdir(parents=True)
        (d / "intents.yml").write_text(intents(rng, 11))
        (d / "policies.yml").write_text(policies(rng))
        (d / "models.yml").write_text(models(rng))
        (d / "modules.yml").write_text(modules(rng))
        dirs.append(d)
    return dirs


def in_process(dirs: list[Path]) -> float:
    from aion.config.validate import collect, validate

    started = time.perf_counter()
    for d in dirs:
        report = validate(collect([str(d)]), set_name=str(d))
        if report.failed():
            raise SystemExit(f"generated set {d} has findings: {report.findings[:3]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    checker = shutil.which("check-jsonschema", path=str(BIN)) or shutil.which("check-jsonschema")
    if checker is None:
        raise SystemExit("benchmarks/validate.py needs check-jsonschema: pip install --group bench")
    rng = random.Random(20261126)
    with tempfile.TemporaryDirectory(prefix="aion-bench-validate-") as tmp:
        root = Path(tmp)
        dirs = generate(root / "sets", rng)
        files = SETS * len(KINDS)
        lines = sum(len(p.read_text().splitlines()) for d in dirs for p in d.iterdir())
        ours, cli, cli_one, peer = [], [], [], []
        for _ in range(args.rounds):
            ours.append(in_process(dirs))
            cli.append(timed([str(BIN / "aionctl"), "validate", "--each-dir", "-q", str(root / "sets")])[0])
            one = [str(BIN / "aionctl"), "validate", "--each-dir", "--jobs", "1", "-q", str(root / "sets")]
            cli_one.append(timed(one)[0])
            total = 0.0
            for kind in KINDS:
                schema = ROOT / "schemas" / "config" / f"{kind}.json"
                total += timed(
                    [checker, "--schemafile", str(schema), *[str(d / f"{kind}.yml") for d in dirs]]
                )[0]
            peer.append(total)
        ours_fps, cli_fps, peer_fps = files / median(ours), files / median(cli), files / median(peer)
        one_fps = files / median(cli_one)

        large = root / "large"
        large.mkdir()
        (large / "intents.yml").write_text(intents(rng, 10_000))
        (large / "policies.yml").write_text(policies(rng))
        (large / "models.yml").write_text(models(rng))
        (large / "modules.yml").write_text(modules(rng))
        large_lines = len((large / "intents.yml").read_text().splitlines())
        runs = [timed([str(BIN / "aionctl"), "validate", "-q", str(large)]) for _ in range(args.rounds)]
        large_s, large_mb = median([r[0] for r in runs]), max(r[1] for r in runs)
        peer_large = median(
            [
                timed(
                    [
                        checker,
                        "--schemafile",
                        str(ROOT / "schemas/config/intents.json"),
                        str(large / "intents.yml"),
                    ]
                )[0]
                for _ in range(args.rounds)
            ]
        )

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**MISSED**"

    ratio = ours_fps / peer_fps
    cli_ratio = cli_fps / peer_fps
    cpus = os.cpu_count() or 1
    print(
        f"in-process {ours_fps:,.0f} files/s; aionctl {cli_fps:,.0f} files/s; check-jsonschema {peer_fps:,.0f} files/s"
    )
    print(f"10k intents: aionctl {large_s:.2f} s, {large_mb:.0f} MiB; check-jsonschema {peer_large:.2f} s")
    body = f"""## Validation (`benchmarks/validate.py`)

{today()}, {machine()}; median of {args.rounds} rounds.

**1,000 files** ({SETS} sets of intents, policies, models and modules; {lines / files:.0f} lines per file on average):

| validator | what it checks | files/s | vs check-jsonschema |
|---|---|---|---|
| aion, in-process, one core | YAML with line/column tracking, schema, cross-file rules | {ours_fps:,.0f} | {ratio:.1f}x |
| `aionctl validate --each-dir --jobs 1` | the same, plus start-up and output, one core | {one_fps:,.0f} | {one_fps / peer_fps:.1f}x |
| `aionctl validate --each-dir` (default `--jobs`: {cpus} here) | the same, sets spread over the cores | {cli_fps:,.0f} | {cli_ratio:.1f}x |
| check-jsonschema 0.39 (one process per kind) | schema only | {peer_fps:,.0f} | 1.0x |

Targets: >= {TARGET_FILES_PER_S:,.0f} files/s: {verdict(cli_fps >= TARGET_FILES_PER_S)} ({cli_fps:,.0f} through
the CLI; {one_fps:,.0f} on one core, {ours_fps:,.0f} in-process); >= {TARGET_RATIO:.0f}x check-jsonschema:
{verdict(cli_ratio >= TARGET_RATIO)} ({cli_ratio:.1f}x through the CLI, {ratio:.1f}x in-process).

**One 10,000-intent intents.yml** ({large_lines:,} lines) with its policies, models and modules, validated by
`aionctl validate` in a fresh process:

| | wall time | peak RSS |
|---|---|---|
| `aionctl validate` (whole set, all checks) | {large_s:.2f} s | {large_mb:.0f} MiB |
| check-jsonschema (intents.yml alone, schema only) | {peer_large:.2f} s | |

Targets: <= {TARGET_LARGE_S:.0f} s: {verdict(large_s <= TARGET_LARGE_S)}; <= {TARGET_LARGE_MB:.0f} MB:
{verdict(large_mb <= TARGET_LARGE_MB)}.
"""
    write_section("validate", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
