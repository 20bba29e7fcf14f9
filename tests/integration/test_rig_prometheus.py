"""The test rig's Prometheus is real: it scrapes a running aiond and answers queries about it."""

from __future__ import annotations

import subprocess

import httpx

from aion import __version__
from tests.rig import install
from tests.rig.daemon import Aiond
from tests.rig.services import Prometheus


def test_prometheus_scrapes_aiond(prometheus: Prometheus, aiond: Aiond) -> None:
    prometheus.set_targets([aiond.http_addr], labels={"instance_kind": "aiond"})
    result = prometheus.wait_for(f'aion_build_info{{instance="{aiond.http_addr}"}}')
    assert result[0]["metric"]["version"] == __version__
    assert result[0]["value"][1] == "1"
    up = prometheus.wait_for(f'up{{instance="{aiond.http_addr}"}}')
    assert up[0]["value"][1] == "1"
    assert up[0]["metric"]["instance_kind"] == "aiond"


def test_aiond_metrics_pass_promtool(aiond: Aiond) -> None:
    promtool = install.command_path("promtool")
    assert promtool is not None, "promtool ships with the prometheus package"
    exposition = httpx.get(f"http://{aiond.http_addr}/metrics", timeout=5, trust_env=False).content
    result = subprocess.run(
        [str(promtool), "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
