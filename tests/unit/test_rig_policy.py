"""The rig's rule for a missing service: a failure under CI=true, else a skip naming the install command."""

from __future__ import annotations

import pytest

from tests.rig import plugin


def test_missing_service_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        plugin.unavailable("Kafka", "no Java 17", "sudo python3 tests/rig/install.py apt")
    assert str(info.value) == (
        "CI=true and Kafka unavailable: no Java 17. Install it with: sudo python3 tests/rig/install.py apt"
    )


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_service_skips_locally_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception) as info:
        plugin.unavailable(
            "Prometheus", "prometheus is not installed", "sudo python3 tests/rig/install.py apt"
        )
    assert "Install it with: sudo python3 tests/rig/install.py apt" in str(info.value)
