"""resources/prometheus/: the Grafana dashboard asks only for metrics the server and the TMS
export, and the scrape configuration reaches both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from mongomock_motor import AsyncMongoMockClient

from ewms_server.metrics import ServerMetrics
from ewms_server.storage.mongodb import MongoStorage
from tms.metrics import TmsMetrics

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "prometheus"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    registries = [
        ServerMetrics(MongoStorage(AsyncMongoMockClient(), "x"), cache_s=0).registry,
        TmsMetrics().registry,
    ]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names |= {family.name + s for s in SUFFIXES[family.type]}
    return names


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((RESOURCES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bewms_[a-z_]+", e)}
    names = exported()
    assert used and used <= names, f"not exported: {sorted(used - names)}"
    # every metric of the issue is on it
    for needed in ("ewms_workflows", "ewms_taskforces", "ewms_tasks_total", "ewms_tms_watcher_lag_seconds"):
        assert needed in used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_scrape_config_has_the_server_with_a_token_and_the_tms() -> None:
    config = yaml.safe_load((RESOURCES / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["ewms-server"]["metrics_path"] == "/metrics"
    assert jobs["ewms-server"]["authorization"]["type"] == "Bearer"
    assert jobs["ewms-tms"]["static_configs"][0]["targets"]
