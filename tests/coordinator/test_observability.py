"""/metrics through prometheus-client: one registry per app, every metric documented once in
docs/metrics.md, and the Grafana dashboard and alert rules use only documented metrics."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from coordinator.ops.app import create_app_with_ops
from coordinator.serving import serve_in_thread
from protocols import Topics
from protocols.clock import ManualClock
from tests.auth import ADMIN
from tests.coordinator.ops.helpers import ops_config, settings_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "metrics.md"
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def documented(prefix: str = "breakwater_") -> list[str]:
    """The coordinator's metrics (the edge agent's own, ``breakwater_edge_``, are checked
    against the agent in tests/edge_agent/test_agent_health.py)."""
    names = re.findall(r"^### `(breakwater_[a-z_]+)`", DOCS.read_text(encoding="utf-8"), re.M)
    edge = prefix == "breakwater_edge_"
    return [n for n in names if n.startswith("breakwater_edge_") == edge]


def exposed(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    # prometheus-client adds a `_created` timestamp beside counters and histograms
    return {n for n in names if n.startswith("breakwater_") and not n.endswith("_created")}


def referenced(text: str) -> set[str]:
    out = set()
    for name in re.findall(r"breakwater_[a-z_]+", text):
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name != "breakwater_exceptions_total":
                name = name[: -len(suffix)]
        out.add(name)
    return out


def test_every_metric_is_documented_once_and_two_apps_in_one_process_each_serve_theirs(
        tmp_path: Path) -> None:
    texts = []
    for n in range(2):  # a second app in the same process: its own registry, no clash
        config = ops_config(tmp_path / str(n)).model_copy(update={"subscribe_mqtt": False})
        settings = settings_for(tmp_path / f"c{n}.sqlite", "mqtt://127.0.0.1:1",
                                Topics(f"bwobs{n}"))
        app = create_app_with_ops(settings, clock=ManualClock(datetime.now(UTC)),
                                  config=config)
        with serve_in_thread(app) as url, \
                httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
            assert http.get("/orders/NOPE").status_code == 404
            r = http.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=")
            texts.append(r.text)
    for text in texts:
        # this app's own request, once: the other app's traffic is not in its registry
        assert ('breakwater_http_request_duration_seconds_count{method="GET",'
                'route="/orders/{order_id}",status="4xx"} 1.0') in text
    names = documented()
    assert len(names) == len(set(names)), "a metric is defined twice in docs/metrics.md"
    missing = exposed(texts[0]) - set(names)
    assert not missing, f"exposed but not in docs/metrics.md: {sorted(missing)}"
    # everything documented is exposed (the breaker and reading gauges even when empty)
    assert set(names) <= exposed(texts[0]) | {"breakwater_live_clients"}


def test_grafana_and_alert_rules_use_only_documented_metrics() -> None:
    names = set(documented()) | set(documented("breakwater_edge_"))
    dashboard = json.loads((ROOT / "deploy/grafana/breakwater.json").read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("temperature", "breaker", "incidents", "reroute latency", "backlog"):
        assert wanted in titles
    assert referenced("\n".join(exprs)) <= names
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text("utf-8"))
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert alerts and all({"alert", "expr", "labels", "annotations"} <= set(r) for r in alerts)
    assert referenced("\n".join(r["expr"] for r in alerts)) <= names
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text("utf-8"))
    assert scrape["scrape_configs"][0]["metrics_path"] == "/metrics"
