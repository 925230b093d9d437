"""API benchmark: `GET /v1/packages/{id}/download` vs a bare WSGI app (the limit).

Starts SeaweedFS and, per database (SQLite, the default, and PostgreSQL, the
production one), the API under gunicorn exactly as production does
(app/gunicorn_conf.py: its workers, threads, worker class, keep-alive and
logging) with the scheduler beside it; ships a package through the API so the
download route answers a real signed link, then stops the scheduler. The
limit is bench/bare_wsgi.py, a WSGI app answering a constant JSON body of the
same size, under the same gunicorn and settings; beside it, for reference,
Flask alone answering that body from a route of the same shape (what the
framework takes before any of the API's code). wrk measures them in
interleaved rounds (median kept), at load (16 connections, what 4 workers of
4 threads serve at once) and one request at a time. Writes
bench/results/api.json. Run it with bench/api.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import gunicorn_conf  # noqa: E402
from app.native import (WeedPorts, free_ports, spawn, start_api, start_scheduler,  # noqa: E402
                        start_weed)
from bench.edge import median_run, ratio, wrk  # noqa: E402
from tests.helpers import ADMIN_TOKEN, HttpApi  # noqa: E402
from bench.workspace import Workspace  # noqa: E402

TARGETS = {"requests_per_s_vs_bare": 0.5, "p50_ms_below": 5.0}
SCENARIOS = {
    # As many requests in flight as the workers' threads take at once.
    "load": {"connections": 16, "threads": 2},
    # One at a time: what a single request costs, no queueing.
    "single": {"connections": 1, "threads": 1},
}


@contextlib.contextmanager
def database_url(kind: str, base: Path):
    if kind == "sqlite":
        yield f"sqlite:///{base / 'sqlite' / 'mosis.db'}"
        return
    from tests.conftest import scratch_pg_database

    with scratch_pg_database("mosis_bench") as url:
        yield url


def gunicorn_version() -> str:
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is kept)")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (PostgreSQL at MOSIS_TEST_PG or 127.0.0.1:5432)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api.json")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (Debian: apt-get install wrk); bench/api.sh installs it", file=sys.stderr)
        return 1
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    if not kinds or set(kinds) - {"sqlite", "postgres"}:
        parser.error("--databases takes sqlite and/or postgres")

    load_at_start = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared
    with Workspace("api") as work, contextlib.ExitStack() as cleanup:
        base, logs, keep = work.base, work.logs, work.keep
        weed_ports = WeedPorts.free()
        keep(start_weed(base / "s3", "bench", "bench-secret", weed_ports, logs))
        s3 = f"http://127.0.0.1:{weed_ports.s3}"
        urls: dict[str, str] = {}
        servers: dict[str, int] = {}
        answers: dict[str, dict] = {}
        for kind in kinds:
            api_port, sched_port, public_port = free_ports(3)
            data_dir = base / kind / "data"
            env = {**os.environ, "MOSIS_DATA_DIR": str(data_dir),
                   "MOSIS_DATABASE_URL": cleanup.enter_context(database_url(kind, base)),
                   "MOSIS_ADMIN_TOKEN": ADMIN_TOKEN, "MOSIS_S3_ENDPOINT": s3,
                   "MOSIS_S3_ACCESS_KEY": "bench", "MOSIS_S3_SECRET_KEY": "bench-secret",
                   "MOSIS_S3_BUCKET": f"mosis-bench-{kind}",
                   # No edge: the links name one, the upload goes to storage itself.
                   "MOSIS_PUBLIC_URL": f"http://127.0.0.1:{public_port}", "MOSIS_S3_PUBLIC_ENDPOINT": s3,
                   "MOSIS_DOWNLOAD_LINK_SECRET": "b" * 43, "MOSIS_VALIDATION_POLL_SECONDS": "0.2",
                   "MOSIS_APP_BIND": f"127.0.0.1:{api_port}",
                   "MOSIS_SCHEDULER_METRICS_ADDR": f"127.0.0.1:{sched_port}",
                   "PROMETHEUS_MULTIPROC_DIR": str(data_dir / "run" / "prometheus")}
            api = keep(start_api(env, env["MOSIS_APP_BIND"], logs / kind, workers=gunicorn_conf.workers))
            scheduler = keep(start_scheduler(env, logs / kind))
            http = HttpApi(f"http://{env['MOSIS_APP_BIND']}")
            dev = http.new_developer()
            app = http.create_app(dev)
            http.ship(dev, app, 1)
            # The scheduler has validated the package: its polling would only add noise.
            scheduler.stop()
            url = f"{http.base}/v1/packages/{app['package_id']}/download"
            r = requests.get(url, allow_redirects=False, timeout=10)
            assert r.status_code == 200 and r.json()["download_url"].startswith(env["MOSIS_PUBLIC_URL"]), \
                (r.status_code, r.text)
            urls[f"api_{kind}"], servers[f"api_{kind}"] = url, api.proc.pid
            answers[kind] = {"status": r.status_code, "bytes": len(r.content),
                             "content_type": r.headers["Content-Type"], "body": r.json()}

        # The limit: the same gunicorn, the same settings, a constant body of the same size;
        # and, for reference, Flask alone answering it.
        body = json.dumps(next(iter(answers.values()))["body"])
        path = urlsplit(next(iter(urls.values()))).path
        for who, target, url_path in (("bare", "bench.bare_wsgi:app", "/"),
                                      ("flask", "bench.bare_wsgi:flask_app", path)):
            port, = free_ports(1)
            bare_env = {**os.environ, "MOSIS_BENCH_BODY": body, "MOSIS_APP_BIND": f"127.0.0.1:{port}"}
            bare_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            url = f"http://{bare_env['MOSIS_APP_BIND']}{url_path}"
            bare = keep(spawn(who, [sys.executable, "-m", "gunicorn", "-c",
                                    str(ROOT / "bench" / "bare_gunicorn_conf.py"), "--bind",
                                    bare_env["MOSIS_APP_BIND"], "--workers", str(gunicorn_conf.workers), target],
                              logs, env=bare_env, ready_url=url))
            urls[who], servers[who] = url, bare.proc.pid
            assert requests.get(url, timeout=10).json() == json.loads(body)

        # Warm every worker (imports, connections) before anything counts.
        for who, url in urls.items():
            wrk(url, duration=1, connections=16)

        # Interleaved rounds, the median kept: the machine is shared and noisy,
        # and a burst of load elsewhere should not land on one contender only.
        runs: dict = {name: {who: [] for who in urls} for name in SCENARIOS}
        for round_no in range(args.rounds):
            for name, load in SCENARIOS.items():
                for who, url in urls.items():
                    print(f"round {round_no + 1}/{args.rounds}: wrk {name} {who} ...", flush=True)
                    m = wrk(url, duration=args.duration, server_pgid=servers[who], **load)
                    if m["non_2xx"] or m["socket_errors"]:
                        raise RuntimeError(f"{who} answered errors: {m}")
                    runs[name][who].append(m)
        results = {name: {who: median_run(r) for who, r in by_who.items()} for name, by_who in runs.items()}

        ratios, met = {}, {}
        for kind in kinds:
            who = f"api_{kind}"
            load, single = results["load"], results["single"]
            ratios[kind] = {
                "requests_per_s_vs_bare": ratio(load[who]["requests_per_s"], load["bare"]["requests_per_s"]),
                "single_requests_per_s_vs_bare": ratio(single[who]["requests_per_s"],
                                                       single["bare"]["requests_per_s"]),
                "p50_ms_load": load[who]["p50_ms"], "p50_ms_single": single[who]["p50_ms"],
                "server_cpu_ms_per_request": load[who]["server_cpu_ms_per_request"],
                "bare_server_cpu_ms_per_request": load["bare"]["server_cpu_ms_per_request"],
                # Flask alone against the limit: what the framework takes before any of ours.
                "flask_requests_per_s_vs_bare": ratio(load["flask"]["requests_per_s"],
                                                      load["bare"]["requests_per_s"]),
                "requests_per_s_vs_flask": ratio(load[who]["requests_per_s"], load["flask"]["requests_per_s"]),
            }
            met[kind] = {
                "requests_per_s_vs_bare": ratios[kind]["requests_per_s_vs_bare"]
                >= TARGETS["requests_per_s_vs_bare"],
                "p50_ms_load": ratios[kind]["p50_ms_load"] < TARGETS["p50_ms_below"],
                "p50_ms_single": ratios[kind]["p50_ms_single"] < TARGETS["p50_ms_below"],
            }
        report = {
            "benchmark": "bench/api.sh",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "gunicorn": gunicorn_version(),
                        "load_average_at_start": load_at_start,
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                        "note": "loopback only; wrk shares the CPUs with gunicorn (and PostgreSQL)"},
            "gunicorn": {"config": "app/gunicorn_conf.py", "workers": gunicorn_conf.workers,
                         "threads": gunicorn_conf.threads, "worker_class": gunicorn_conf.worker_class,
                         "keepalive": gunicorn_conf.keepalive},
            "answer": {kind: {k: v for k, v in a.items() if k != "body"} for kind, a in answers.items()},
            "method": f"wrk --latency, {args.rounds} interleaved rounds of {args.duration} s each, median "
                      "by requests/s; 'load': 16 connections, 2 wrk threads; 'single': 1 connection; "
                      "server CPU from /proc of the server's process group",
            "results": results, "ratios": ratios, "targets": TARGETS, "targets_met": met,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        for name, r in results.items():
            for who, m in r.items():
                print(f"{name:6} {who:12} {m['requests_per_s']:8.1f} req/s  p50 {m['p50_ms']:7.3f} ms  "
                      f"p99 {m['p99_ms']:7.3f} ms  server CPU {m['server_cpu_ms_per_request']} ms/req  "
                      f"rounds {m['rounds_requests_per_s']}")
        print(json.dumps({"ratios": ratios, "targets_met": met}, indent=2))
        print(f"wrote {args.out}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
