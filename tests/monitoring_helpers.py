"""Helpers for the monitoring tests: edge access log lines and metric readings."""

from __future__ import annotations

import json
import uuid

from prometheus_client import REGISTRY


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


def sample(name: str, **labels) -> float:
    """A metric's current value in this process (0 when it has no such series)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
