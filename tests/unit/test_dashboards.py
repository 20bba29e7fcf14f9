"""The shipped Grafana dashboards are well-formed, and the reader that takes their PromQL apart finds
exactly the metric names a query reads (so the check against a running daemon's scrape, in
tests/integration/test_metrics_dashboards.py, catches a wrong name and nothing else)."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aion.dashboards import panels, queries, unknown_metrics
from aion.promql import PromQLError, exported_names, metric_names, template_metric_names
from aiond.serving.telemetry import Metrics
from tests.rig.daemon import REPO
from tests.rig.dashboards import DASHBOARDS, NAMES, instantiate, load, shipped

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """The names the daemon's registry exports (the integration test checks a running daemon too)."""
    return exported_names(Metrics().exposition().decode())


def test_the_three_dashboards_ship() -> None:
    assert sorted(NAMES) == sorted(shipped())


@pytest.mark.parametrize("name", NAMES)
def test_a_dashboard_is_grafana_json_with_unique_panel_ids(name: str) -> None:
    text = (DASHBOARDS / name).read_text()
    doc = json.loads(text)
    assert doc["schemaVersion"] == 39
    assert doc["uid"].startswith("aion-")
    assert doc["id"] is None, "an exported dashboard carries no database id"
    ids = [panel["id"] for panel in panels(doc)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}: {sorted(ids)}"
    for panel in panels(doc):
        if panel["type"] != "row":
            assert panel["title"], f"panel {panel['id']} needs a title"
            assert panel.get("description"), f"panel {panel['id']} needs a description"
            assert panel["targets"], f"panel {panel['id']} has no query"
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), f"duplicate refIds in panel {panel['id']}"


@pytest.mark.parametrize("name", NAMES)
def test_every_query_reads_the_prometheus_input(name: str) -> None:
    doc = load(DASHBOARDS / name)
    [declared] = doc["__inputs"]
    assert (declared["name"], declared["type"], declared["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    # The same name as a variable, so the dashboard also works when provisioned from a file (no import).
    assert (variables["DS_PROMETHEUS"]["type"], variables["DS_PROMETHEUS"]["query"]) == (
        "datasource",
        "prometheus",
    )
    for panel in panels(doc):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, f"panel {panel['id']}"
            assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), (
                f"panel {panel['id']}"
            )
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, f"variable {variable['name']}"


@pytest.mark.parametrize("name", NAMES)
def test_panels_do_not_overlap(name: str) -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in panels(load(DASHBOARDS / name)):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, f"panel {panel['id']} is off the grid"
        assert 0 < grid["w"] <= 24 - grid["x"], f"panel {panel['id']} is off the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap in {name}"
                cells[(x, y)] = panel["id"]


@pytest.mark.parametrize("name", NAMES)
def test_every_query_names_only_metrics_the_registry_exports(name: str, exported: set[str]) -> None:
    doc = load(DASHBOARDS / name)
    assert all(query.metrics() for query in queries(doc)), "every query reads at least one metric"
    assert unknown_metrics(doc, exported) == []


def test_the_observability_guide_lists_every_metric_with_its_type() -> None:
    exposition = Metrics().exposition().decode()
    types = dict(line.split()[2:4] for line in exposition.splitlines() if line.startswith("# TYPE "))
    # prometheus_client writes each counter's and histogram's _created series as a gauge family of its
    # own; the guide mentions them once.
    exported = {
        (name, kind)
        for name, kind in types.items()
        if not (name.endswith("_created") and {name[:-8] + "_total", name[:-8]} & types.keys())
    }
    guide = (REPO / "docs" / "observability.md").read_text()
    documented = set(
        re.findall(r"^\| `([a-z_:]+)` \| (counter|gauge|histogram|summary) \|", guide, re.MULTILINE)
    )
    assert documented == exported


def test_a_made_up_metric_is_caught(exported: set[str]) -> None:
    doc = load(DASHBOARDS / "router-overview.json")
    assert unknown_metrics(doc, exported) == []
    broken = copy.deepcopy(doc)
    target = next(p for p in panels(broken) if p["type"] != "row")["targets"][0]
    target["expr"] = target["expr"].replace("aion_route_decisions_total", "aion_route_decision_total")
    assert [line.rsplit(": ", 1)[1] for line in unknown_metrics(broken, exported)] == [
        "aion_route_decision_total"
    ]
    # A suffix only counts on the kind of family that has it: a histogram's _bucket, not a gauge's.
    variable = next(v for v in broken["templating"]["list"] if v["name"] == "job")
    variable["query"]["query"] = "label_values(aion_outbox_bytes_bucket, job)"
    assert "variable job: aion_outbox_bytes_bucket" in unknown_metrics(broken, exported)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.95, sum by (le, route) (rate(aion_task_duration_seconds_bucket{s="OK"}[5m])))',
         {"aion_task_duration_seconds_bucket"}),
        ("sum without (instance) (up) / on (job) group_left (version) aion_build_info offset 5m > bool 1e-3",
         {"up", "aion_build_info"}),
        ("sum(rate(a_total[5m:30s])) by (route) or vector(0)", {"a_total"}),
        ('{__name__="aion_daemon_ready", job="aiond"} and time() - process_start_time_seconds @ start()',
         {"aion_daemon_ready", "process_start_time_seconds"}),
        ('count_values("aion_not_a_metric", aion_build_info) * -Inf + 0x1F + .5 - NaN', {"aion_build_info"}),
        ('x{a="}", b=~"[\\"]", c!~`{` } # aion_in_a_comment\n+ y', {"x", "y"}),
        ("rate(aion_x_total[$__rate_interval]) * $__interval_ms / ${factor}", {"aion_x_total"}),
        ("sum by (aion_label_not_metric) (m) unless ignoring (le) n", {"m", "n"}),
        ("topk(5, sum by (m) (rate(r:recorded:rate5m[1h])))", {"r:recorded:rate5m"}),
        ("abs(sum(ok))", {"ok"}),
    ],
)  # fmt: skip
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    "expr",
    ['x{a="unterminated}', "rate(x[5m)", '{__name__=~"aion_.*"}', "x{a=1}", "sum by (a b) (x)", "x ; y"],
)
def test_what_cannot_be_read_is_refused(expr: str) -> None:
    with pytest.raises(PromQLError):
        metric_names(expr)


def test_templating_queries() -> None:
    assert template_metric_names('label_values(aion_build_info{job=~"$job", a=","}, instance)') == {
        "aion_build_info"
    }
    assert template_metric_names("label_values(job)") == set()
    assert template_metric_names("query_result(topk(3, aion_route_decisions_total))") == {
        "aion_route_decisions_total"
    }
    with pytest.raises(PromQLError):
        template_metric_names("metrics(aion_.*)")


def test_exported_names_take_suffixes_from_the_family_type() -> None:
    text = (
        "# HELP h_seconds a histogram with no samples yet\n# TYPE h_seconds histogram\n"
        "# TYPE s summary\n# TYPE c_total counter\nc_total 1.0\nc_created 1.7e9\n"
        '# TYPE g gauge\ng{a="b"} 0.0\n'
    )
    assert exported_names(text) == {
        "h_seconds", "h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "h_seconds_created",
        "s", "s_sum", "s_count", "s_created", "c_total", "c_created", "g",
    }  # fmt: skip


def test_instantiate_fills_grafana_variables() -> None:
    assert instantiate('rate(x{i=~"$instance", r=~"${route}"}[$__rate_interval]) [$__range]') == (
        'rate(x{i=~".+", r=~".+"}[30s]) [5m]'
    )


# -- the reader against generated expressions ---------------------------------------------------------

METRIC = st.from_regex(r"[a-z_:][a-z0-9_:]{0,12}", fullmatch=True).filter(
    lambda n: n.lower() not in {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                                "unless", "bool", "offset", "inf", "nan", "atan2"}
)  # fmt: skip
LABEL = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "__name__")
# Label values and strings full of what would fool a regular expression: braces, quotes, commas, names.
VALUE = st.text(alphabet='{}[](),"\\`$ aion_x=~', max_size=12).map(json.dumps)


@st.composite
def selector(draw: st.DrawFn) -> tuple[str, set[str]]:
    name = draw(METRIC)
    matchers = draw(st.lists(st.tuples(LABEL, st.sampled_from(["=", "!=", "=~", "!~"]), VALUE), max_size=3))
    text = name + ("{" + ", ".join(f"{lbl}{op}{val}" for lbl, op, val in matchers) + "}" if matchers else "")
    if draw(st.booleans()):
        text = f"rate({text}[{draw(st.sampled_from(['5m', '$__rate_interval', '1h:5m']))}])"
    return text, {name}


@st.composite
def expression(draw: st.DrawFn, depth: int = 2) -> tuple[str, set[str]]:
    if depth == 0 or draw(st.booleans()):
        return draw(selector())
    left, lnames = draw(expression(depth - 1))
    shape = draw(st.sampled_from(["aggregate", "binary", "quantile", "offset"]))
    if shape == "aggregate":
        labels = ", ".join(draw(st.lists(METRIC.filter(lambda n: ":" not in n), max_size=3)))
        op = draw(st.sampled_from(["sum", "max", "count", "avg"]))
        return draw(
            st.sampled_from([f"{op} by ({labels}) ({left})", f"{op}({left}) without ({labels})"])
        ), lnames
    if shape == "quantile":
        return f"histogram_quantile(0.99, {left})", lnames
    if shape == "offset":
        return f"{left} offset 5m", lnames
    right, rnames = draw(expression(depth - 1))
    op = draw(
        st.sampled_from(["+", "/", "and", "or", "unless", "> bool", "== on (job) group_left (version)"])
    )
    return f"({left}) {op} {right}", lnames | rnames


@given(expression())
def test_the_reader_finds_exactly_the_metrics_of_any_expression(case: tuple[str, set[str]]) -> None:
    expr, names = case
    assert metric_names(expr) == names, expr
