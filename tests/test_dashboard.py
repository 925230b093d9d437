"""The Grafana dashboard and the alert rules against a real Prometheus.

Debian's Prometheus scrapes the real API (gunicorn) and scheduler with the
production scrape config and rules; the test makes traffic (uploads, a failed
validation, downloads, refused requests, edge access log lines) and runs
every panel's query through Prometheus's HTTP API: each must parse and
return data.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from app.native import free_port
from tests.helpers import ADMIN, bearer, build_package, sha256, unique_package_id
from tests.monitoring_helpers import edge_line, local_prometheus_config, start_prometheus

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "mosis.json"
SCRAPE = "1s"
# Grafana's variables, as Grafana would set them for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$__interval": "5s"}


def panel_targets() -> list[tuple[str, dict]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def grafana_expr(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def query(prom: str, target: dict) -> list[float]:
    """The finite values a panel's target returns now (an error if it does not parse)."""
    expr = grafana_expr(target["expr"])
    if target.get("instant"):
        r = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    else:
        now = time.time()
        r = requests.get(f"{prom}/api/v1/query_range", timeout=10,
                         params={"query": expr, "start": now - 120, "end": now, "step": "5s"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error')}"
    values = []
    for series in body["data"]["result"]:
        points = series["values"] if "values" in series else [series["value"]]
        values += [float(v) for _, v in points]
    return [v for v in values if math.isfinite(v)]


class Traffic:
    """Developers uploading (one package broken), devices downloading, and the edge's log."""

    def __init__(self, base: str, edge_log: Path):
        self.base, self.edge_log = base, edge_log
        r = requests.post(f"{base}/v1/admin/developers", headers=ADMIN, timeout=10,
                          json={"name": "Ops", "email": f"{uuid.uuid4().hex[:8]}@example.com"})
        self.dev = bearer(r.json()["token"])
        self.package_id = unique_package_id()
        r = requests.post(f"{base}/v1/apps", json={"package_id": self.package_id, "name": "Ops"},
                          headers=self.dev, timeout=10)
        self.app_id = r.json()["app"]["id"]
        self.code = 0
        self.links = 0
        self.edge_lines = 0
        self.edge_log.parent.mkdir(parents=True, exist_ok=True)

    def upload(self, data: bytes | None = None) -> int:
        self.code += 1
        data = data if data is not None else build_package(self.package_id, self.code)
        r = requests.post(f"{self.base}/v1/apps/{self.app_id}/versions", headers=self.dev, timeout=10,
                          json={"version_code": self.code, "version_name": f"1.0.{self.code}",
                                "size": len(data), "sha256": sha256(data)})
        upload = r.json()["upload"]
        requests.request(upload["method"], upload["url"], data=data, headers=upload["headers"], timeout=30)
        assert requests.post(f"{self.base}/v1/apps/{self.app_id}/versions/{self.code}/complete",
                             headers=self.dev, timeout=10).status_code == 202
        return self.code

    def publish_when_valid(self, code: int) -> None:
        url = f"{self.base}/v1/apps/{self.app_id}/versions/{code}"
        deadline = time.monotonic() + 60
        while requests.get(url, headers=self.dev, timeout=10).json()["version"]["status"] != "draft":
            assert time.monotonic() < deadline, "validation did not finish"
            time.sleep(0.2)
        assert requests.post(f"{url}/publish", headers=self.dev, timeout=10).status_code == 200

    def round(self) -> None:
        self.upload()
        self.upload(b"this is not a zip archive")  # fails validation: invalid_zip
        for _ in range(3):
            r = requests.get(f"{self.base}/v1/packages/{self.package_id}/download", timeout=10)
            assert r.status_code == 200
            self.links += 1
        requests.get(f"{self.base}/v1/packages/com.nobody.here/download", timeout=10)  # 404
        requests.get(f"{self.base}/v1/apps", timeout=10)  # 401
        requests.get(f"{self.base}/v1/admin/costs", headers=ADMIN, timeout=10)
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        lines = [edge_line(cache="HIT", bytes_sent=5_000_000, request_time=0.02, time=now),
                 edge_line(cache="HIT", bytes_sent=5_000_000, request_time=0.01, time=now),
                 edge_line(cache="MISS", bytes_sent=5_000_000, request_time=0.4, time=now),
                 edge_line(status=502, cache="MISS", bytes_sent=300, request_time=1.5, time=now),
                 edge_line(status=403, cache="", bytes_sent=200, request_time=0.001, time=now),
                 edge_line(uri="/assets/a/icon-64.png", cache="HIT", bytes_sent=3000, time=now),
                 edge_line(uri="/assets/a/icon-32.png", cache="MISS", bytes_sent=1000, time=now),
                 edge_line(uri="/v1/packages/x.y", cache="", bytes_sent=500, time=now),
                 edge_line(uri=f"/deltas/{'a' * 32}/{'b' * 32}/1-2.patch", cache="MISS", bytes_sent=900,
                           time=now)]
        with open(self.edge_log, "a") as f:
            f.write("".join(lines))
        self.edge_lines += len(lines)


@pytest.fixture
def prometheus(live_stack, tmp_path):
    config = local_prometheus_config(ROOT, live_stack.url.removeprefix("http://"),
                                     live_stack.scheduler_url.removeprefix("http://"), SCRAPE)
    service = start_prometheus(config, tmp_path / "prometheus", free_port())
    try:
        service.wait_ready(60)
        yield service
    finally:
        service.stop()


def instant_series(prom: str, target: dict) -> list[dict]:
    """The label sets a target's query returns now, as an instant query."""
    r = requests.get(f"{prom}/api/v1/query", params={"query": grafana_expr(target["expr"])}, timeout=10)
    assert r.status_code == 200, r.text
    return [s["metric"] for s in r.json()["data"]["result"]]


def multi_query_tables() -> list[dict]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] == "table" and len(p["targets"]) > 1]


def scalar(prom: str, expr: str) -> float | None:
    result = requests.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_panel_returns_data_from_real_processes(live_stack, prometheus, settings):
    prom = prometheus.url
    traffic = Traffic(live_stack.url, settings.resolved_edge_access_log)
    traffic.publish_when_valid(traffic.upload())

    targets = panel_targets()
    missing = {(title, t["refId"]): t for title, t in targets}
    deadline = time.monotonic() + 120
    while missing and time.monotonic() < deadline:
        traffic.round()
        time.sleep(1)
        for key, target in list(missing.items()):
            if query(prom, target):
                del missing[key]
    assert not missing, "panels without data: " + ", ".join(
        f"{title} [{ref}]: {t['expr']}" for (title, ref), t in missing.items())

    # A table built from several queries is one table: Grafana joins the
    # queries' frames on `job` (one row per housekeeping job), so each query
    # returns at most one series per job, labelled with the housekeeping
    # job's name (not the scrape job's).
    from app.scheduler import HOUSEKEEPING

    housekeeping = {j.name for j in HOUSEKEEPING}
    tables = multi_query_tables()
    assert tables
    for panel in tables:
        for target in panel["targets"]:
            assert target.get("instant") and target.get("format") == "table", (panel["title"], target["refId"])
            jobs = [labels.get("job") for labels in instant_series(prom, target)]
            assert len(jobs) == len(set(jobs)), (panel["title"], target["refId"], jobs)
            assert jobs and set(jobs) <= housekeeping, (panel["title"], target["refId"], jobs)

    # The numbers are the traffic's, not just present: every link issued and
    # every edge log line written (the real edge's, for the uploads through it,
    # and the ones written above) reach Prometheus exactly once.
    written = len(settings.resolved_edge_access_log.read_text().splitlines())
    assert written > traffic.edge_lines
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        links = scalar(prom, "sum(mosis_download_links_total)")
        lines = scalar(prom, "sum(mosis_edge_requests_total)")
        if links == traffic.links and lines == written:
            break
        time.sleep(1)
    assert (links, lines) == (traffic.links, written)

    # Every alerting rule loads and evaluates without error.
    deadline = time.monotonic() + 30
    while True:
        groups = requests.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if all(r["health"] == "ok" for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(1)
    alerts = yaml.safe_load((ROOT / "grafana" / "prometheus" / "alerts.yml").read_text())
    expected = {r["alert"] for g in alerts["groups"] for r in g["rules"]}
    assert {r["name"] for r in rules} == expected
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    firing = {a["labels"]["alertname"] for a in requests.get(f"{prom}/api/v1/alerts", timeout=10)
              .json()["data"]["alerts"]}
    assert not firing & {"StorageUnreachable", "DatabaseUnreachable", "IntegrityMismatch"}


def test_dashboard_and_provisioning_fit_together():
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/mosis.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090/prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == source["uid"], p["title"]
        assert p["description"] and p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in p["targets"])
    assert providers["providers"][0]["options"]["path"].startswith("/var/lib/grafana/dashboards")
    titles = {p["title"] for p in panels}
    for wanted in ("Upload success rate", "Download rate", "Download errors", "API latency",
                   "Edge cache hit ratio", "Egress per day", "Storage by prefix", "Storage by version status",
                   "Monthly cost estimate per option", "Validation queue", "Job health"):
        assert wanted in titles
    # Several queries in one table are merged into one table, with named columns.
    for panel in multi_query_tables():
        kinds = [t["id"] for t in panel.get("transformations", [])]
        assert {"merge", "joinByField"} & set(kinds), panel["title"]
        assert "organize" in kinds, panel["title"]
        renamed = next(t for t in panel["transformations"] if t["id"] == "organize")["options"]["renameByName"]
        assert all(f"Value #{t['refId']}" in renamed for t in panel["targets"]), panel["title"]
    # A panel with one point per day shows a month whatever the dashboard's range.
    range_seconds = {"h": 3600, "d": 86400}
    default = dashboard["time"]["from"].removeprefix("now-")
    for panel in panels:
        for target in panel["targets"]:
            if target.get("interval", "").endswith("d"):
                span = panel.get("timeFrom", default)
                assert int(span[:-1]) * range_seconds[span[-1]] >= 30 * 86400, panel["title"]
    # docs/operations.md describes every panel by its title.
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert [t for t in sorted(titles) if f"**{t}**" not in operations] == []
    # The egress the docs call billed is the cost estimate's.
    from app.housekeeping.cost import BILLED_AREAS
    from app.edge.access_log import AREAS

    egress = operations.split("**Egress per day**", 1)[1].split("\n- **", 1)[0]
    billed = egress.split("are what the cost estimate prices", 1)[0]
    assert [a for a in AREAS if (f"`{a}`" in billed) != (a in BILLED_AREAS)] == []
