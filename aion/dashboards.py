"""Grafana dashboards as aion reads them: every panel (inside rows too), every PromQL query with where
it sits, and the metric names those queries read that an exposition does not offer.

``aionctl metrics check --dashboards DIR`` uses this to say, against a running aiond, whether every
panel of the dashboards has data to show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aion.promql import metric_names, template_metric_names


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard: a panel target's ``expr`` or a templating variable's query."""

    where: str
    expr: str
    templating: bool = False

    def metrics(self) -> set[str]:
        return template_metric_names(self.expr) if self.templating else metric_names(self.expr)


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(doc: dict[str, Any]) -> Iterator[Query]:
    for panel in panels(doc):
        for target in panel.get("targets", []):
            yield Query(
                f"panel {panel.get('id')} ({panel.get('title')!r}) {target.get('refId')}", target["expr"]
            )
    for variable in doc.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield Query(f"variable {variable['name']}", text, templating=True)


def unknown_metrics(doc: dict[str, Any], exported: set[str]) -> list[str]:
    """``where: name`` for every metric a query of ``doc`` reads that is not in ``exported``."""
    return [
        f"{query.where}: {name}"
        for query in queries(doc)
        for name in sorted(query.metrics())
        if name not in exported
    ]


__all__ = ["Query", "panels", "queries", "unknown_metrics"]
