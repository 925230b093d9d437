"""Helpers for the monitoring tests: edge access log lines and metric readings."""

from __future__ import annotations

import json
import uuid

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families


def edge_line(uri: str = "/packages/d/a/1/package.mosis", status: int = 200, bytes_sent: int = 1000,
              cache: str = "HIT", method: str = "GET", request_time: float = 0.01,
              time: str = "2026-11-30T10:00:00+00:00") -> str:
    """One line of the edge's JSON access log (the format nginx is configured with)."""
    return json.dumps({
        "time": time, "remote_addr": "203.0.113.7", "request_id": uuid.uuid4().hex, "method": method,
        "uri": uri, "status": status, "bytes_sent": bytes_sent,
        "body_bytes_sent": max(bytes_sent - 300, 0), "request_time": request_time,
        "upstream_response_time": "" if cache == "HIT" else "0.004", "cache": cache,
        "host": "cdn.example.com", "user_agent": "mosis-device/1.0",
    }) + "\n"


def sample(metric: str, /, **labels) -> float:
    """A metric's current value in this process (0 when it has no such series)."""
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def scraped(text: str, metric: str, /, **labels) -> float:
    """The sum of the samples named `metric` in a /metrics text whose labels
    include `labels` (0 when it has none): one series' value, or a family's total."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == metric and labels.items() <= s.labels.items())


def scraped_by(text: str, metric: str, label: str, /, **labels) -> dict[str, float]:
    """The samples of `metric` in a /metrics text whose labels include
    `labels`, by the value of their label `label`."""
    return {s.labels[label]: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == metric and label in s.labels and labels.items() <= s.labels.items()}


# -- a real Prometheus ------------------------------------------------------------------

def local_prometheus_config(repo_root, api_target: str, scheduler_target: str,
                            interval: str = "1s") -> dict:
    """grafana/prometheus/prometheus.yml (the compose config) pointed at local processes.

    The jobs, metric paths and rule file are the production ones; only the
    targets, intervals and the rule file's absolute path change.
    """
    import yaml

    prom_dir = repo_root / "grafana" / "prometheus"
    config = yaml.safe_load((prom_dir / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(prom_dir / name) for name in config["rule_files"]]
    targets = {"mosis-api": api_target, "mosis-scheduler": scheduler_target}
    config["scrape_configs"] = [
        dict(job, static_configs=[{"targets": [targets[job["job_name"]]]}])
        for job in config["scrape_configs"] if job["job_name"] in targets]
    assert len(config["scrape_configs"]) == 2
    return config


def start_prometheus(config: dict, base_dir, port: int):
    """Debian's prometheus on 127.0.0.1:port with `config`."""
    import shutil

    import yaml

    from app.native import spawn

    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (scripts/test installs Debian's package)"
    base_dir.mkdir(parents=True, exist_ok=True)
    config_path = base_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    argv = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={base_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"]
    service = spawn("prometheus", argv, base_dir, ready_url=f"http://127.0.0.1:{port}/-/ready")
    service.url = f"http://127.0.0.1:{port}"
    return service
