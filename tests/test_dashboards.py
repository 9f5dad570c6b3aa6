"""The Grafana dashboards and the Prometheus config agree with the metrics the code exports.

A panel on a metric that no component exports shows "No data" forever and nobody notices
until the day it is needed; a renamed metric does the same to a working panel. So every
panel's PromQL is parsed, the metric names it reads are taken out (``_bucket``/``_sum``/
``_count``/``_total`` samples included, functions, ``by (...)`` label lists, label
matchers and ranges left out) and each one must be a sample name that the worker's
(``topology.metrics``, plus prometheus_client's default process/platform/GC collectors,
which the worker's ``/metrics`` also serves) or the ingestor's
(``core.ingestor_metrics``) collectors export. ``ops/prometheus/prometheus.yml`` must
scrape both kinds of process on the ports docker-compose gives them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from config.settings import Settings
from core.ingestor_metrics import IngestorMetrics
from topology import metrics as worker_metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_YML = ROOT / "ops" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

#: Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
#: PromQL words that look like identifiers but are not metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "Inf", "NaN",
}  # fmt: skip
#: What the dashboard must show (issue 7): the metric families behind each required panel.
REQUIRED = {
    "tickflow_ingestor_ticks_published_total",  # ticks in
    "tickflow_worker_ticks_consumed_total",  # ticks through
    "tickflow_worker_ticks_lag",  # lag per partition
    "tickflow_worker_tick_latency_from_exchange_seconds_bucket",  # stage latency
    "tickflow_worker_tick_latency_from_receive_seconds_bucket",
    "tickflow_worker_redis_flush_seconds_bucket",  # Redis flush time
    "tickflow_worker_alerts_total",  # alerts per minute by pattern
    "tickflow_worker_greeks_computed_total",  # Greeks rate
    "tickflow_worker_indicator_results_total",  # indicator rate
    "tickflow_ingestor_parse_errors_total",  # errors by kind
    "tickflow_worker_tick_errors_total",
    "tickflow_ingestor_reconnects_total",  # reconnects
    "tickflow_worker_table_recovery_seconds",  # table recovery time
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric (sample) names a PromQL expression reads."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word in KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation being called
        names.add(word)
    return names


def sample_names(collector: Collector) -> set[str]:
    """Every sample name a collector can export, also for labelled metrics that have no
    child yet (they export nothing until first used, but a panel on them is right)."""
    names: set[str] = set()
    for family in collector.collect():
        name = family.name
        names.update(sample.name for sample in family.samples)
        names.update(
            {
                "counter": {f"{name}_total", f"{name}_created"},
                "gauge": {name},
                "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"},
                "summary": {name, f"{name}_sum", f"{name}_count", f"{name}_created"},
                "stateset": {name},
                "info": {f"{name}_info"},
            }.get(family.type, {name})
        )
    return names


def worker_exports() -> set[str]:
    collectors = [v for v in vars(worker_metrics).values() if isinstance(v, MetricWrapperBase)]
    names: set[str] = set()
    for collector in [*collectors, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR]:
        names |= sample_names(collector)
    return names


def ingestor_exports() -> set[str]:
    return sample_names(IngestorMetrics().registry)


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]


# --- the parser itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(tickflow_worker_ticks_consumed_total[1m]))",
         {"tickflow_worker_ticks_consumed_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job=\"x\"}[5m])))",
         {"a_seconds_bucket"}),
        ("sum(rate(a_sum[5m])) / sum(rate(a_count[5m]))", {"a_sum", "a_count"}),
        ('sum(s{s="connected"}) by (s) * 60 + 1e3', {"s"}),
        ("max by (instance) (g) offset 5m", {"g"}),
        ('count(up{job="tickflow-worker"} == 1)', {"up"}),
    ],
)  # fmt: skip
def test_metric_names_are_taken_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_panel_on_a_metric_nobody_exports_is_caught() -> None:
    exported = worker_exports() | ingestor_exports()
    assert "tickflow_worker_redis_flush_seconds_bucket" in exported
    assert "tickflow_worker_tick_errors_total" in exported  # labelled, no child yet
    assert "tickflow_ingestor_connection_state" in exported  # an Enum (stateset)
    wrong = metric_names("sum(rate(tickflow_worker_ticks_consumd_total[1m]))") - exported
    assert wrong == {"tickflow_worker_ticks_consumd_total"}


# --- the dashboards ---------------------------------------------------------------------------


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "no dashboard JSON in ops/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_reads_only_exported_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exported = worker_exports() | ingestor_exports() | PROMETHEUS_SERIES
    unknown: dict[str, set[str]] = {}
    seen = 0
    for title, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        seen += 1
        missing = names - exported
        if missing:
            unknown[f"{title}: {expr}"] = missing
    assert seen, f"{path.name} has no PromQL target"
    assert not unknown, f"panels on metrics nothing exports: {unknown}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_are_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard.get("uid") and dashboard.get("title")
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]


def test_the_dashboards_cover_the_pipeline() -> None:
    used: set[str] = set()
    for path in DASHBOARDS:
        for _, expr in expressions(json.loads(path.read_text())):
            used |= metric_names(expr)
    assert used >= REQUIRED, f"not on any panel: {sorted(REQUIRED - used)}"


# --- Prometheus scrapes what exports them ------------------------------------------------------


def scrape_jobs(text: str) -> dict[str, dict[str, Any]]:
    """job name -> its static targets, DNS-SD names and port, and metrics path (a reader
    for the simple shape of prometheus.yml; PyYAML is not a dependency)."""
    jobs: dict[str, dict[str, Any]] = {}
    blocks = re.split(r"^\s*-\s*job_name:\s*", text, flags=re.M)[1:]
    for block in blocks:
        name, _, body = block.partition("\n")
        job: dict[str, Any] = {"targets": [], "dns_names": [], "dns_port": None}
        for listed in re.findall(r"targets:\s*(\[[^\]]*\])", body):
            job["targets"] += json.loads(listed)
        for listed in re.findall(r"names:\s*(\[[^\]]*\])", body):
            job["dns_names"] += json.loads(listed)
        port = re.search(r"^\s*port:\s*(\d+)", body, flags=re.M)
        job["dns_port"] = int(port.group(1)) if port else None
        path = re.search(r"metrics_path:\s*(\S+)", body)
        job["metrics_path"] = path.group(1).strip("\"'") if path else "/metrics"
        jobs[name.strip().strip("\"'")] = job
    return jobs


def compose_value(name: str) -> str:
    found = re.findall(rf"^\s*{name}:\s*\"?([^\"\s]+)\"?", COMPOSE.read_text(), flags=re.M)
    assert found, f"{name} not set in docker-compose.yml"
    assert len(set(found)) == 1, f"{name} set differently: {found}"
    return found[0]


def test_prometheus_scrapes_the_ingestor_and_every_worker() -> None:
    jobs = scrape_jobs(PROMETHEUS_YML.read_text())
    defaults = Settings(_env_file=None)
    ingestor_port = int(compose_value("TICKFLOW_INGESTOR_METRICS_PORT"))
    worker_port = int(compose_value("TICKFLOW_WORKER_WEB_PORT"))
    # The compose stack runs on the defaults, so a bare process scrapes the same way.
    assert ingestor_port == defaults.ingestor_metrics_port
    assert worker_port == defaults.worker_web_port

    ingestor = [j for j in jobs.values() if f"ingestor:{ingestor_port}" in j["targets"]]
    assert ingestor, f"no job scrapes ingestor:{ingestor_port}: {jobs}"
    assert all(j["metrics_path"] == "/metrics" for j in ingestor)
    # Workers scale (`--scale worker=N`): DNS discovery finds every one of them.
    workers = [
        j for j in jobs.values() if "worker" in j["dns_names"] and j["dns_port"] == worker_port
    ]
    assert workers, f"no job discovers the workers on port {worker_port}: {jobs}"
    assert all(j["metrics_path"] == "/metrics" for j in workers)
