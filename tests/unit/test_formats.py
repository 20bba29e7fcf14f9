"""The documented samples users already have validate clean, unchanged, and mean what they say."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from aion.config.findings import Severity
from aion.config.kinds import Kind
from aion.config.model import Privacy, Route
from aion.config.validate import Source, collect, validate, validate_directory

FORMATS = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_samples_validate_with_no_errors_or_warnings() -> None:
    report = validate_directory(FORMATS)
    assert [f for f in report.findings if f.severity is not Severity.INFO] == []
    # The notes say what the samples leave out, nothing more: tier2 is allowed by no intent, there
    # is no trust policy yet for the module to be installed under, and azure has no endpoint.
    assert sorted(f.rule for f in report.findings) == ["AION409", "AION415", "AION417"]


def test_samples_mean_what_they_say() -> None:
    snapshot = validate_directory(FORMATS).snapshot
    assert snapshot is not None
    invoice = snapshot.intents["invoice_ocr"]
    assert invoice.local_only
    assert invoice.default_route is Route.HYBRID
    assert invoice.candidates == (Route.LOCAL, Route.HYBRID)
    assert invoice.permitted_routes == {Route.LOCAL, Route.HYBRID}
    summarize = snapshot.intents["summarize"]
    assert summarize.default_route is None  # auto
    assert summarize.privacy is Privacy.ALLOW_API
    assert snapshot.policies.budget.default_usd == Decimal("0.02")
    assert snapshot.policies.budget.hard_cap_usd == Decimal("0.20")
    assert snapshot.policies.p95_ms[Route.LOCAL] == 600
    assert snapshot.policies.provider_allowed("azure")
    assert [str(m) for m in snapshot.models.tiers["tier0"].local] == ["ollama:qwen2.5", "vllm:llama3.1"]
    module = snapshot.modules["summarize_text"]
    assert (module.timeout_ms, module.cpu, module.memory) == (1500, "0.5", "256Mi")
    assert snapshot.tag.startswith("sha256:")


def test_agent_package_sample_validates() -> None:
    (source,) = collect([str(FORMATS / "agent-package.yaml")], kind=Kind.AGENT_PACKAGE)
    report = validate([source])
    assert report.findings == ()


def test_examples_are_a_complete_set_without_a_single_finding() -> None:
    report = validate_directory(EXAMPLES)
    assert report.findings == ()
    assert report.snapshot is not None


def test_snapshot_tag_follows_content(tmp_path: Path) -> None:
    sources = collect([str(FORMATS)])
    first = validate(sources).snapshot
    changed = [
        Source(s.name, s.data.replace(b"hard_cap_usd: 0.20", b"hard_cap_usd: 0.30"))
        if "policies" in s.name
        else s
        for s in sources
    ]
    second = validate(changed).snapshot
    again = validate(sources).snapshot
    assert first is not None
    assert second is not None
    assert again is not None
    assert first.tag == again.tag
    assert first.tag != second.tag
