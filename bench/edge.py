"""Edge benchmark: cached downloads vs the static-file limit vs storage itself.

Starts the native stack on free loopback ports (SeaweedFS, gunicorn, the
scheduler, the edge), ships a 50 MiB package and a 1 KiB asset through the
API, warms the edge cache, then measures with wrk, side by side in one run:

  edge     the edge serving the object from its cache (a signed link)
  static   a plain nginx serving the same bytes from local disk: the limit
  storage  a presigned GET straight to storage, what the seed's design did

and the download info of one package (GET /v1/packages/{id}/download), what
every device asks, under a burst of 16 connections:

  edge      the edge answering from its micro-cache
  static    the same edge serving a 1 KiB file from disk: the limit
  uncached  the same route asked with a query, so the edge passes every
            request to the app (gunicorn), as before the micro-cache

and, to choose how Range requests are cached, nginx's slice module against
full-object caching in front of the same origin. Writes bench/results/edge.json.
Run it with bench/edge.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform.config import PackageLimits, Settings  # noqa: E402
from app.edge.nginx import TEMPLATE, nginx_binary  # noqa: E402
from app.native import (Service, WeedPorts, free_ports, spawn, start_api, start_edge,  # noqa: E402
                        start_scheduler, start_weed)
from app.platform.storage import Storage, icon_key  # noqa: E402
from tests.helpers import ADMIN_TOKEN, HttpApi, build_package  # noqa: E402
from bench.workspace import Workspace  # noqa: E402

MiB = 1024 * 1024
TARGETS = {"package_hit_vs_static": 0.8, "asset_hit_vs_static": 0.7,
           "package_hit_vs_storage": 1.6, "asset_hit_vs_storage": 5.0, "asset_hit_p50_ms_below": 2.0,
           "download_info_vs_static": 0.7, "download_info_vs_uncached": 5.0, "download_info_p50_ms_below": 1.0}
# A 1 KiB file served by the edge itself (the limit for its cached JSON).
STATIC_LOCATION = """\
        # The benchmark's: a 1 KiB file from disk.
        location = /bench/static-1k.json {{
            alias {path};
        }}
"""


# -- wrk ---------------------------------------------------------------------------

def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _bytes(text: str) -> float:
    value, unit = re.match(r"([\d.]+)([KMGT]?B)", text).groups()
    return float(value) * {"B": 1, "KB": 1024, "MB": MiB, "GB": 1024 * MiB, "TB": MiB * MiB}[unit]


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the processes of a process group,
    with that of the ones they have reaped (gunicorn replaces its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat, pgrp
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url: str, *, connections: int, duration: int, threads: int = 2, headers: dict | None = None,
        server_pgid: int | None = None) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "30s"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    cpu_before = group_cpu_seconds(server_pgid) if server_pgid else 0.0
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    cpu = group_cpu_seconds(server_pgid) - cpu_before if server_pgid else None
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    if "99" not in percentiles:
        raise RuntimeError(f"wrk gave no latencies for {url}:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "requests": requests_done,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "mib_per_s": round(_bytes(re.search(r"Transfer/sec:\s+(\S+)", out).group(1)) / MiB, 1),
        "p50_ms": round(_ms(percentiles["50"]), 3),
        "p99_ms": round(_ms(percentiles["99"]), 3),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "connections": connections, "duration_s": duration,
        # What serving cost the server (all its processes), per request.
        "server_cpu_ms_per_request": round(cpu * 1000 / requests_done, 3) if cpu is not None and requests_done
        else None,
    }


# -- plain nginx configs (the limit, and the slice experiment) ---------------------------

def plain_nginx(name: str, base: Path, port: int, server_body: str, http_extra: str = "") -> Service:
    """A minimal nginx on `port` (same build, workers and access log as the edge)."""
    prefix = base / name
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    # The edge's own access log line: logging is part of serving.
    log_format = re.search(r"log_format mosis_json escape=json ('.*?');", TEMPLATE.read_text()).group(1)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""{user}
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_timeout 65s;
    client_body_temp_path {prefix}/tmp/body; proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/f; uwsgi_temp_path {prefix}/tmp/u; scgi_temp_path {prefix}/tmp/s;
    map $request_uri $mosis_path {{ default ""; "~^(?<path>[^?]*)" $path; }}
    log_format bench escape=json {log_format};
    access_log {prefix}/access.log bench;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        {server_body}
    }}
}}
""")
    service = spawn(name, [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", "stderr",
                           "-g", "daemon off;"], base / "logs", ready_url=None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return service
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not start: {service.tail()}")


def cold_range_seconds(url: str, size: int, samples: int) -> float:
    """Median time of a cold request for the last MiB of `url`'s object."""
    times = []
    for i in range(samples):
        t = time.monotonic()
        r = requests.get(f"{url}{i}", headers={"Range": f"bytes={size - MiB}-{size - 1}"}, timeout=120)
        assert r.status_code == 206 and len(r.content) == MiB, r.status_code
        times.append(time.monotonic() - t)
    return round(sorted(times)[len(times) // 2], 4)


# -- the run -----------------------------------------------------------------------------

def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput, and every run's throughput."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    return {**ordered[len(ordered) // 2], "rounds_requests_per_s": [r["requests_per_s"] for r in runs]}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "edge.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (Debian: apt-get install wrk); bench/edge.sh installs it", file=sys.stderr)
        return 1

    load_at_start = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared
    with Workspace("edge") as work:
        base, logs, keep = work.base, work.logs, work.keep
        weed_ports = WeedPorts.free()
        weed = keep(start_weed(base / "s3", "bench", "bench-secret", weed_ports, logs))
        http_port, internal_port, api_port, sched_port, static_port, full_port, slice_port = free_ports(7)
        settings = Settings(
            data_dir=base / "data", admin_token=ADMIN_TOKEN,
            s3_endpoint=f"http://127.0.0.1:{weed_ports.s3}", s3_access_key="bench", s3_secret_key="bench-secret",
            bucket="mosis-bench", public_url=f"http://127.0.0.1:{http_port}",
            edge_internal_url=f"http://127.0.0.1:{internal_port}", download_link_secret="b" * 43,
            validation_poll_seconds=0.2, limits=PackageLimits(max_package_bytes=64 * MiB),
            # One client, many requests: the per-client limit would answer 429.
            edge_api_rate=1_000_000, edge_api_burst=1_000_000)
        static_1k = base / "static-1k.json"
        static_1k.write_bytes(b'{"pad":"' + b"x" * 1013 + b'"}\n')
        env = {**os.environ, "MOSIS_DATA_DIR": str(settings.data_dir), "MOSIS_ADMIN_TOKEN": settings.admin_token,
               "MOSIS_S3_ENDPOINT": settings.s3_endpoint, "MOSIS_S3_ACCESS_KEY": "bench",
               "MOSIS_S3_SECRET_KEY": "bench-secret", "MOSIS_S3_BUCKET": settings.bucket,
               "MOSIS_PUBLIC_URL": settings.public_url, "MOSIS_EDGE_INTERNAL_URL": settings.edge_internal_url,
               "MOSIS_DOWNLOAD_LINK_SECRET": settings.download_link_secret,
               "MOSIS_MAX_PACKAGE_BYTES": str(64 * MiB), "MOSIS_VALIDATION_POLL_SECONDS": "0.2",
               "MOSIS_APP_BIND": f"127.0.0.1:{api_port}",
               "MOSIS_SCHEDULER_METRICS_ADDR": f"127.0.0.1:{sched_port}",
               "PROMETHEUS_MULTIPROC_DIR": str(settings.data_dir / "run" / "prometheus")}
        keep(start_api(env, env["MOSIS_APP_BIND"], logs))
        keep(start_scheduler(env, logs))
        edge = keep(start_edge(settings, http_port=http_port, internal_port=internal_port,
                               app_bind=env["MOSIS_APP_BIND"], log_dir=logs,
                               extra_locations=STATIC_LOCATION.format(path=static_1k)))

        # A 50 MiB package and a 1 KiB icon, shipped the way developers do.
        http = HttpApi(settings.public_url)
        dev = http.new_developer()
        app = http.create_app(dev)
        payload = os.urandom(50 * MiB - 4096)
        package = build_package(app["package_id"], 1, files={"payload.bin": payload},
                                compression=zipfile.ZIP_STORED)
        http.ship(dev, app, 1, package)
        link = http.download_info(app["package_id"])["download_url"]
        storage = Storage(settings)
        icon = os.urandom(1024)
        storage.put(icon_key(app['id'], 1, 32), icon, content_type="image/png")
        package_key = link.split("?")[0][len(settings.public_url) + 1:]
        asset_url = f"{settings.public_url}/{icon_key(app['id'], 1, 32)}"
        for url, body in ((link, package), (asset_url, icon)):  # warm the cache
            assert requests.get(url, timeout=120).content == body
            assert requests.get(url, timeout=120).headers["X-Cache-Status"] == "HIT"

        # The same bytes on local disk, served by a plain nginx.
        static_root = base / "static"
        for key, body in ((package_key, package), (icon_key(app['id'], 1, 32), icon)):
            (static_root / key).parent.mkdir(parents=True, exist_ok=True)
            (static_root / key).write_bytes(body)
        static_nginx = keep(plain_nginx("static", base, static_port, f"location / {{ root {static_root}; }}"), 10)
        static = f"http://127.0.0.1:{static_port}"

        direct = {"package": storage.presigned_get(package_key, 3600, internal=True),
                  "asset": storage.presigned_get(icon_key(app['id'], 1, 32), 3600, internal=True)}
        for name, body in (("package", package), ("asset", icon)):
            assert requests.get(direct[name], timeout=120).content == body

        info = f"{settings.public_url}/v1/packages/{app['package_id']}/download"
        for _ in range(2):  # cached
            assert requests.get(info, timeout=30).headers["X-Cache-Status"] in ("MISS", "HIT")
        assert requests.get(info, timeout=30).headers["X-Cache-Status"] == "HIT"
        assert requests.get(f"{info}?uncached=1", timeout=30).headers["X-Cache-Status"] == "BYPASS"
        assert len(requests.get(f"{settings.public_url}/bench/static-1k.json", timeout=30).content) == 1024

        servers = {"edge": edge.proc.pid, "static": static_nginx.proc.pid, "storage": weed.proc.pid}
        asset_urls = {"edge": asset_url, "static": f"{static}/{icon_key(app['id'], 1, 32)}",
                      "storage": direct["asset"]}
        # (The uncached route's CPU is the app's too: not counted, the edge's only.)
        scenarios = {
            "package_50MiB": ({"edge": link, "static": f"{static}/{package_key}", "storage": direct["package"]},
                              {"connections": 4}),
            "asset_1KiB": (asset_urls, {"connections": 16}),
            # One request at a time: the latency of a single cached icon.
            "asset_1KiB_latency": (asset_urls, {"connections": 1, "threads": 1}),
            "download_info": ({"edge": info, "static": f"{settings.public_url}/bench/static-1k.json",
                               "uncached": f"{info}?uncached=1"}, {"connections": 16}),
        }
        servers.update(uncached=edge.proc.pid)
        log_lines_before = len(settings.resolved_edge_access_log.read_text().splitlines())
        # Interleaved rounds, the median kept: the machine is shared and noisy,
        # and a burst of load elsewhere should not land on one contender only.
        runs: dict = {name: {who: [] for who in urls} for name, (urls, _) in scenarios.items()}
        for round_no in range(args.rounds):
            for name, (urls, load) in scenarios.items():
                for who in urls:
                    print(f"round {round_no + 1}/{args.rounds}: wrk {name} {who} ...", flush=True)
                    runs[name][who].append(wrk(urls[who], duration=args.duration, server_pgid=servers[who],
                                               **load))
        results = {name: {who: median_run(r) for who, r in by_who.items()} for name, by_who in runs.items()}
        edge_lines = settings.resolved_edge_access_log.read_text().splitlines()[log_lines_before:]
        cache_states = [json.loads(line)["cache"] for line in edge_lines]
        hit_ratio = round(cache_states.count("HIT") / max(1, len(cache_states)), 4)

        # Range caching: full object vs slices, in front of the static nginx.
        print("slice vs full-object ...", flush=True)
        common = (f"proxy_cache_valid 200 206 1h; proxy_cache_lock on; set $object /{package_key}; "
                  f"proxy_pass http://127.0.0.1:{static_port}$object; "
                  "add_header X-Cache-Status $upstream_cache_status;")
        keep(plain_nginx("full", base, full_port, "location / { proxy_cache full; proxy_cache_key $uri; "
                         + common + " }",
                         f"proxy_cache_path {base}/full/cache levels=1:2 keys_zone=full:10m max_size=2g;"), 10)
        keep(plain_nginx("slice", base, slice_port, "location / { slice 1m; proxy_cache slice; "
                         "proxy_cache_key $uri$slice_range; proxy_set_header Range $slice_range; "
                         + common + " }",
                         f"proxy_cache_path {base}/slice/cache levels=1:2 keys_zone=slice:10m max_size=2g;"),
             10)
        size = len(package)
        slice_results = {}
        for kind, port in (("full_object", full_port), ("slice_1m", slice_port)):
            url = f"http://127.0.0.1:{port}/object"
            cold = cold_range_seconds(url, size, 3)  # /object0, /object1, ...: a cold key each
            requests.get(f"{url}-warm", timeout=120)
            slice_results[kind] = {
                "cold_tail_range_s": cold,
                "warm_full_get": wrk(f"{url}-warm", connections=4, duration=max(3, args.duration // 2)),
                "warm_1mib_range": wrk(f"{url}-warm", connections=16, duration=max(3, args.duration // 2),
                                       headers={"Range": f"bytes={size // 2}-{size // 2 + MiB - 1}"}),
            }

        p, a, lat = results["package_50MiB"], results["asset_1KiB"], results["asset_1KiB_latency"]
        d = results["download_info"]
        ratios = {
            "package_hit_vs_static": ratio(p["edge"]["mib_per_s"], p["static"]["mib_per_s"]),
            "asset_hit_vs_static": ratio(a["edge"]["requests_per_s"], a["static"]["requests_per_s"]),
            "package_hit_vs_storage": ratio(p["edge"]["mib_per_s"], p["storage"]["mib_per_s"]),
            "asset_hit_vs_storage": ratio(a["edge"]["requests_per_s"], a["storage"]["requests_per_s"]),
            "asset_hit_p50_ms": lat["edge"]["p50_ms"],
            "download_info_vs_static": ratio(d["edge"]["requests_per_s"], d["static"]["requests_per_s"]),
            "download_info_vs_uncached": ratio(d["edge"]["requests_per_s"], d["uncached"]["requests_per_s"]),
            "download_info_p50_ms": d["edge"]["p50_ms"],
            # Server CPU per request (the client shares the CPUs, so throughput
            # alone can hide what serving costs): how much more the others spend.
            "package_cpu_static_vs_edge": ratio(p["static"]["server_cpu_ms_per_request"],
                                                p["edge"]["server_cpu_ms_per_request"]),
            "package_cpu_storage_vs_edge": ratio(p["storage"]["server_cpu_ms_per_request"],
                                                 p["edge"]["server_cpu_ms_per_request"]),
            "asset_cpu_static_vs_edge": ratio(a["static"]["server_cpu_ms_per_request"],
                                              a["edge"]["server_cpu_ms_per_request"]),
            "asset_cpu_storage_vs_edge": ratio(a["storage"]["server_cpu_ms_per_request"],
                                               a["edge"]["server_cpu_ms_per_request"]),
        }
        met = {
            "package_hit_vs_static": ratios["package_hit_vs_static"] >= TARGETS["package_hit_vs_static"],
            "asset_hit_vs_static": ratios["asset_hit_vs_static"] >= TARGETS["asset_hit_vs_static"],
            "package_hit_vs_storage": ratios["package_hit_vs_storage"] >= TARGETS["package_hit_vs_storage"],
            "asset_hit_vs_storage": ratios["asset_hit_vs_storage"] >= TARGETS["asset_hit_vs_storage"],
            "asset_hit_p50_ms": ratios["asset_hit_p50_ms"] < TARGETS["asset_hit_p50_ms_below"],
            "download_info_vs_static": ratios["download_info_vs_static"] >= TARGETS["download_info_vs_static"],
            "download_info_vs_uncached": ratios["download_info_vs_uncached"] >= TARGETS["download_info_vs_uncached"],
            "download_info_p50_ms": ratios["download_info_p50_ms"] < TARGETS["download_info_p50_ms_below"],
        }
        report = {
            "benchmark": "bench/edge.sh",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "nginx": subprocess.run([nginx_binary(), "-v"], capture_output=True,
                                                text=True).stderr.strip(),
                        "load_average_at_start": load_at_start,
                        "note": "loopback only; wrk shares the CPUs with nginx and storage"},
            "package_bytes": size, "asset_bytes": len(icon),
            "method": f"wrk -t2 --latency, {args.rounds} interleaved rounds of {args.duration} s each, "
                      "median by requests/s; 4 connections for the package, 16 for the asset, 1 for the "
                      "asset's latency, 16 for the download info; server CPU from /proc of the server's "
                      "process group (for the uncached download info the edge's only, not the app's)",
            "results": results,
            "edge_cache_hit_ratio_during_runs": hit_ratio,
            "ratios": ratios, "targets": TARGETS, "targets_met": met,
            "range_caching": slice_results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({"ratios": ratios, "targets_met": met, "hit_ratio": hit_ratio}, indent=2))
        for name, r in results.items():
            for who, m in r.items():
                print(f"{name:19} {who:8} {m['requests_per_s']:9.1f} req/s {m['mib_per_s']:7.1f} MiB/s "
                      f"p50 {m['p50_ms']:8.3f} ms  p99 {m['p99_ms']:8.3f} ms  server CPU "
                      f"{m['server_cpu_ms_per_request']} ms/req  non-2xx {m['non_2xx']}")
        for kind, r in slice_results.items():
            print(f"{kind:12} cold tail range {r['cold_tail_range_s']:.3f} s, warm full "
                  f"{r['warm_full_get']['mib_per_s']} MiB/s, warm 1 MiB range "
                  f"{r['warm_1mib_range']['requests_per_s']} req/s")
        print(f"wrote {args.out}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
