"""Load benchmark: devices downloading while developers ship, then nothing lost.

Starts the whole native stack on free loopback ports (SeaweedFS, gunicorn
with the production settings, the scheduler that validates, the edge), with
SQLite by default or a scratch PostgreSQL database, and publishes a catalog of
small apps. Then, with locust as a library, for --seconds (60 by default):

  200 devices    each: ask the API for a download link, download the package
                 through the edge, check its sha256; then wait 1-3 s
  10 developers  each owns an app and keeps shipping it: create a version,
                 PUT the package to the presigned URL, complete, poll until
                 validated, publish; then wait 1-3 s

Every client speaks from an address of its own (127.0.1.x devices,
127.0.2.x developers), as real ones would: the edge's per-client rate limit
stays as deployed. Afterwards it waits for the validation queue to drain and
checks every completed upload: its version is draft, published or superseded
(published, then replaced by a newer one), with the size and sha256 that were
uploaded, its object in storage has those bytes, and a download of each
published version through the edge gives them back.

Reports requests/s, p50 and p99 and failures per request type, writes
bench/results/load.json and exits non-zero on any error or lost upload.
Loopback only, bounded in time. Run it with bench/load.sh.
"""

from __future__ import annotations

# locust patches the standard library for gevent when imported: it comes
# before anything that opens sockets (requests, urllib3, minio, psycopg2).
from locust import HttpUser, between, events, task  # isort: skip
from locust.clients import LocustHttpAdapter  # isort: skip
from locust.env import Environment  # isort: skip
from locust.stats import StatsEntry  # isort: skip

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
import urllib3  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform.config import Settings  # noqa: E402
from app.edge.nginx import nginx_binary  # noqa: E402
from app.native import (WeedPorts, free_ports, start_api, start_edge,  # noqa: E402
                        start_scheduler, start_weed)
from app.platform.storage import Storage, package_key  # noqa: E402
from bench.edge import group_cpu_seconds  # noqa: E402
from tests.helpers import ADMIN, ADMIN_TOKEN, bearer, build_package, unique_package_id  # noqa: E402
from bench.workspace import Workspace  # noqa: E402

KiB = 1024
DEVICES, DEVELOPERS, CATALOG_APPS = 200, 10, 20
VALIDATED_WITHIN = 120  # seconds a completed upload may take to become a draft
KEPT = {"draft", "published", "superseded"}  # what a completed upload may be afterwards


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def small_package(package_id: str, code: int, rnd: random.Random) -> bytes:
    """A valid package of 10-100 KiB: some code, some incompressible bytes."""
    return build_package(package_id, code, files={
        "app/main.js": b"console.log('hello');\n" * rnd.randint(50, 500),
        "assets/blob.bin": rnd.randbytes(rnd.randint(8, 90) * KiB)})


def from_address(client, address: str) -> None:
    """Send a locust client's requests from `address` (any 127.x.y.z binds on loopback)."""
    pool = urllib3.PoolManager(maxsize=4, source_address=(address, 0))
    client.mount("http://", LocustHttpAdapter(pool_manager=pool))


# -- what the users share -----------------------------------------------------------

class Shared:
    package_ids: list[str] = []  # the catalog devices download from
    developers: list[dict] = []  # one per DeveloperUser: token, app, next version code
    completed: list[dict] = []  # every upload a developer completed (202), with its sha256
    device_addresses = (f"127.0.1.{i}" for i in itertools.count(1))
    developer_addresses = (f"127.0.2.{i}" for i in itertools.count(1))
    seed = 0


def fire(environment, name: str, started: float, exception: Exception | None = None) -> None:
    """A measured step that is not one HTTP request (validation's wait, a check)."""
    environment.events.request.fire(request_type="STEP", name=name, response_time=(time.monotonic() - started) * 1000,
                                    response_length=0, exception=exception, context={})


class DeviceUser(HttpUser):
    fixed_count = DEVICES
    wait_time = between(1, 3)

    def on_start(self):
        from_address(self.client, next(Shared.device_addresses))

    @task
    def download(self):
        package_id = random.choice(Shared.package_ids)
        with self.client.get(f"/v1/packages/{package_id}/download", name="device: GET /v1/packages/{id}/download",
                             catch_response=True, timeout=30) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
            info = r.json()
        with self.client.get(info["download_url"], name="device: GET /packages/... (edge)", catch_response=True,
                             timeout=60) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
            elif sha256(r.content) != info["sha256"]:
                r.failure("downloaded bytes do not match the sha256 the API gave")


class DeveloperUser(HttpUser):
    fixed_count = DEVELOPERS
    wait_time = between(1, 3)

    def on_start(self):
        from_address(self.client, next(Shared.developer_addresses))
        self.me = Shared.developers.pop()
        self.rnd = random.Random(Shared.seed + self.me["code"])

    @task
    def ship(self):
        me, app = self.me, self.me["app"]
        code = me["code"] = me["code"] + 1
        data = small_package(app["package_id"], code, self.rnd)
        base = f"/v1/apps/{app['id']}/versions"
        with self.client.post(base, name="developer: POST /v1/apps/{id}/versions", headers=me["headers"],
                              catch_response=True, timeout=30,
                              json={"version_code": code, "version_name": f"1.0.{code}", "size": len(data),
                                    "sha256": sha256(data)}) as r:
            if r.status_code != 201:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
            upload = r.json()["upload"]
        with self.client.request(upload["method"], upload["url"], name="developer: PUT upload (edge → storage)",
                                 data=data, headers=upload["headers"], catch_response=True, timeout=60) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
        with self.client.post(f"{base}/{code}/complete", name="developer: POST .../complete", headers=me["headers"],
                              catch_response=True, timeout=30) as r:
            if r.status_code != 202:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
        completed_at = time.monotonic()
        Shared.completed.append({"app": app, "developer_id": me["developer_id"], "headers": me["headers"],
                                 "version_code": code, "size": len(data), "sha256": sha256(data)})
        status = "validating"
        while status == "validating" and time.monotonic() - completed_at < VALIDATED_WITHIN:
            gevent.sleep(0.5)
            with self.client.get(f"{base}/{code}", name="developer: GET .../versions/{code} (poll)",
                                 headers=me["headers"], catch_response=True, timeout=30) as r:
                if r.status_code != 200:
                    r.failure(f"status {r.status_code}: {r.text[:200]}")
                    continue
                status = r.json()["version"]["status"]
        if status != "draft":
            fire(self.environment, "developer: complete → draft (validation)", completed_at,
                 RuntimeError(f"version {code} is {status}, not draft"))
            return
        fire(self.environment, "developer: complete → draft (validation)", completed_at)
        with self.client.post(f"{base}/{code}/publish", name="developer: POST .../publish", headers=me["headers"],
                              catch_response=True, timeout=30) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")


# -- the stack and its catalog ------------------------------------------------------------

def start_stack(base: Path, database_url: str, keep) -> tuple[Settings, dict]:
    logs = base / "logs"
    for attempt in range(3):
        # Another program may take a free port before weed binds it: try others.
        weed_ports = WeedPorts.free()
        weed = start_weed(base / "s3", "bench", "bench-secret", weed_ports, logs)
        try:
            weed.wait_ready(90)
            break
        except RuntimeError:
            weed.stop()
            if attempt == 2:
                raise
    keep(weed)
    http_port, internal_port, api_port, sched_port = free_ports(4)
    settings = Settings(
        data_dir=base / "data", database_url=database_url, admin_token=ADMIN_TOKEN,
        s3_endpoint=f"http://127.0.0.1:{weed_ports.s3}", s3_access_key="bench", s3_secret_key="bench-secret",
        bucket="mosis-load", public_url=f"http://127.0.0.1:{http_port}",
        edge_internal_url=f"http://127.0.0.1:{internal_port}", download_link_secret="l" * 43)
    # Everything else is the default a deployment gets.
    env = {**os.environ, "MOSIS_DATA_DIR": str(settings.data_dir), "MOSIS_ADMIN_TOKEN": settings.admin_token,
           "MOSIS_S3_ENDPOINT": settings.s3_endpoint, "MOSIS_S3_ACCESS_KEY": "bench",
           "MOSIS_S3_SECRET_KEY": "bench-secret", "MOSIS_S3_BUCKET": settings.bucket,
           "MOSIS_PUBLIC_URL": settings.public_url, "MOSIS_EDGE_INTERNAL_URL": settings.edge_internal_url,
           "MOSIS_DOWNLOAD_LINK_SECRET": settings.download_link_secret,
           "MOSIS_APP_BIND": f"127.0.0.1:{api_port}", "MOSIS_SCHEDULER_METRICS_ADDR": f"127.0.0.1:{sched_port}",
           "PROMETHEUS_MULTIPROC_DIR": str(settings.data_dir / "run" / "prometheus"),
           "MOSIS_LOG_LEVEL": "WARNING"}
    if database_url:
        env["MOSIS_DATABASE_URL"] = database_url
    # gunicorn's worker count from app/gunicorn_conf.py, as in production.
    keep(start_api(env, env["MOSIS_APP_BIND"], logs, workers=None))
    keep(start_scheduler(env, logs))
    keep(start_edge(settings, http_port=http_port, internal_port=internal_port, app_bind=env["MOSIS_APP_BIND"],
                    log_dir=logs))
    return settings, env


def session_from(address: str) -> requests.Session:
    """A client of its own: the edge limits each address's API calls."""
    session = requests.Session()
    session.mount("http://", LocustHttpAdapter(pool_manager=urllib3.PoolManager(source_address=(address, 0))))
    return session


def call(method: str, url: str, expect: int, session: requests.Session | None = None, **kwargs) -> dict:
    r = (session or requests).request(method, url, timeout=60, **kwargs)
    if r.status_code != expect:
        raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:300]}")
    return r.json()


def publish_catalog(edge: str, rnd: random.Random) -> None:
    """The developers' apps and a catalog, each with version 1 published."""
    apps = []
    for i in range(DEVELOPERS + 1):  # the last one publishes the catalog apps
        made = call("POST", f"{edge}/v1/admin/developers", 201, headers=ADMIN,
                    json={"name": f"Load {i}", "email": f"load-{uuid.uuid4().hex[:10]}@example.com"})
        dev = {"developer_id": made["developer"]["id"], "headers": bearer(made["token"]), "code": 1}
        for _ in range(1 if i < DEVELOPERS else CATALOG_APPS):
            client = session_from(f"127.0.3.{len(apps) + 1}")
            app = call("POST", f"{edge}/v1/apps", 201, client, headers=dev["headers"],
                       json={"package_id": unique_package_id(), "name": "Load App"})["app"]
            apps.append({**dev, "app": app, "client": client})
        if i < DEVELOPERS:
            Shared.developers.append({**dev, "app": apps[-1]["app"]})
    for a in apps:  # all uploaded and completed first: validation runs meanwhile
        data = small_package(a["app"]["package_id"], 1, rnd)
        base = f"{edge}/v1/apps/{a['app']['id']}/versions"
        upload = call("POST", base, 201, a["client"], headers=a["headers"], json={
            "version_code": 1, "version_name": "1.0.1", "size": len(data), "sha256": sha256(data)})["upload"]
        put = requests.request(upload["method"], upload["url"], data=data, headers=upload["headers"], timeout=60)
        if put.status_code != 200:
            raise RuntimeError(f"upload: {put.status_code} {put.text[:300]}")
        call("POST", f"{base}/1/complete", 202, a["client"], headers=a["headers"])
        Shared.completed.append({"app": a["app"], "developer_id": a["developer_id"], "headers": a["headers"],
                                 "version_code": 1, "size": len(data), "sha256": sha256(data)})
    deadline = time.monotonic() + VALIDATED_WITHIN
    for a in apps:
        base = f"{edge}/v1/apps/{a['app']['id']}/versions"
        while (status := call("GET", f"{base}/1", 200, a["client"],
                              headers=a["headers"])["version"]["status"]) == "validating":
            if time.monotonic() > deadline:
                raise RuntimeError("the catalog was not validated in time")
            time.sleep(0.2)
        if status != "draft":
            raise RuntimeError(f"catalog version is {status}")
        call("POST", f"{base}/1/publish", 200, a["client"], headers=a["headers"])
        # Downloaded once: the edge has it cached, as a running appliance would.
        info = call("GET", f"{edge}/v1/packages/{a['app']['package_id']}/download", 200, a["client"])
        if sha256(a["client"].get(info["download_url"], timeout=60).content) != info["sha256"]:
            raise RuntimeError("the edge serves other bytes than were uploaded")
        Shared.package_ids.append(a["app"]["package_id"])


# -- afterwards: nothing lost ----------------------------------------------------------------

def verify(edge: str, storage: Storage) -> dict:
    """Every completed upload kept, with its bytes; returns what was found."""
    by_app: dict[str, list[dict]] = {}
    for upload in Shared.completed:
        by_app.setdefault(upload["app"]["id"], []).append(upload)
    clients = {app_id: session_from(f"127.0.4.{n}") for n, app_id in enumerate(by_app, 1)}
    # The validation queue drains: no completed upload may stay validating.
    deadline = time.monotonic() + VALIDATED_WITHIN
    while True:
        versions = {}
        for app_id, uploads in by_app.items():
            listed = call("GET", f"{edge}/v1/apps/{app_id}/versions", 200, clients[app_id],
                          headers=uploads[0]["headers"])["versions"]
            versions.update({(app_id, v["version_code"]): v for v in listed})
        pending = [k for k, v in versions.items() if v["status"] == "validating"]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    drained_s = round(VALIDATED_WITHIN - (deadline - time.monotonic()), 1)
    statuses: dict[str, int] = {}
    lost, published_checked = [], 0
    for upload in Shared.completed:
        app = upload["app"]
        where = f"{app['package_id']} version {upload['version_code']}"
        v = versions.get((app["id"], upload["version_code"]))
        status = v["status"] if v else "missing"
        statuses[status] = statuses.get(status, 0) + 1
        if v is None or status not in KEPT:
            lost.append(f"{where}: {status}" + (f" ({v.get('error')})" if v and v.get("error") else ""))
            continue
        if v["sha256"] != upload["sha256"] or v["size"] != upload["size"]:
            lost.append(f"{where}: the API says {v['size']} bytes {v['sha256']}, uploaded {upload['size']} "
                        f"{upload['sha256']}")
            continue
        key = package_key(upload["developer_id"], app["id"], upload["version_code"])
        stored = hashlib.sha256()
        try:
            for chunk in storage.stream(key):
                stored.update(chunk)
        except Exception as e:  # noqa: BLE001 - a missing object is what this looks for
            lost.append(f"{where}: storage: {e}")
            continue
        if stored.hexdigest() != upload["sha256"]:
            lost.append(f"{where}: the object in storage is not what was uploaded")
            continue
        if status == "published":
            info = call("GET", f"{edge}/v1/packages/{app['package_id']}/download", 200, clients[app["id"]])
            body = clients[app["id"]].get(info["download_url"], timeout=60)
            if info["version_code"] != upload["version_code"] or body.status_code != 200 \
                    or sha256(body.content) != upload["sha256"]:
                lost.append(f"{where}: the edge serves {body.status_code}, version {info['version_code']}, "
                            f"{sha256(body.content)}")
                continue
            published_checked += 1
    return {"completed_uploads": len(Shared.completed), "statuses": statuses,
            "still_validating": len(pending), "queue_drained_after_s": drained_s,
            "published_downloaded_and_matched": published_checked, "lost": lost}


def error_lines(logs: Path) -> dict:
    """Errors the stack logged: the app's and scheduler's JSON lines, gunicorn's
    own, and nginx's (error and worse; a rate-limited request is a warning)."""
    def lines(name: str, markers: tuple[str, ...]) -> list[str]:
        path = logs / name
        text = path.read_text(errors="replace") if path.exists() else ""
        return [line[:500] for line in text.splitlines() if any(m in line for m in markers)]

    app_markers = ('"level": "error"', '"level": "critical"', "[ERROR]", "[CRITICAL]", "Traceback")
    return {"api": lines("api.log", app_markers), "scheduler": lines("scheduler.log", app_markers),
            "edge": lines("edge-error.log", ("[error]", "[crit]", "[alert]", "[emerg]"))}


# -- the run --------------------------------------------------------------------------------------

def stats_of(entry, elapsed: float) -> dict:
    return {"requests": entry.num_requests, "failures": entry.num_failures,
            "requests_per_s": round(entry.num_requests / elapsed, 1),
            "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else None,
            "p99_ms": entry.get_response_time_percentile(0.99) if entry.num_requests else None,
            "max_ms": round(entry.max_response_time) if entry.num_requests else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="how long the load runs (default 60)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                        help="SQLite file (default) or a scratch database on 127.0.0.1:5432")
    parser.add_argument("--device-wait", default="1,3", metavar="MIN,MAX",
                        help="seconds a device waits between downloads (default 1,3; 0,0 saturates)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device_wait = [float(x) for x in args.device_wait.split(",")]
    DeviceUser.wait_time = between(*device_wait)
    Shared.seed = args.seed
    random.seed(args.seed)

    load_at_start = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared
    with contextlib.ExitStack() as cleanup:
        work = cleanup.enter_context(Workspace("load"))
        base, keep, started = work.base, work.keep, work.started
        database_url = ""
        if args.database == "postgres":
            from tests.conftest import scratch_pg_database

            database_url = cleanup.enter_context(scratch_pg_database("mosis_load"))
        print(f"starting the stack ({args.database}) ...", flush=True)
        settings, env = start_stack(base, database_url, keep)
        edge = settings.public_url
        print(f"publishing {DEVELOPERS + CATALOG_APPS} apps ...", flush=True)
        publish_catalog(edge, random.Random(args.seed))

        environment = Environment(user_classes=[DeviceUser, DeveloperUser], events=events, host=edge,
                                  stop_timeout=VALIDATED_WITHIN + 30)
        runner = environment.create_local_runner()
        servers = {s.name: s.proc.pid for s in started}
        cpu_before = {name: group_cpu_seconds(pid) for name, pid in servers.items()}
        own_before = time.process_time()
        print(f"load: {DEVICES} devices and {DEVELOPERS} developers for {args.seconds} s ...", flush=True)
        t0 = time.monotonic()
        runner.start(DEVICES + DEVELOPERS, spawn_rate=100)
        gevent.sleep(args.seconds)
        runner.stop()  # each user finishes what it is doing: a ship ends published
        elapsed = time.monotonic() - t0
        runner.quit()
        cpu = {name: round(group_cpu_seconds(pid) - cpu_before[name], 1) for name, pid in servers.items()}
        cpu["load generator (locust)"] = round(time.process_time() - own_before, 1)
        load_at_end = [round(x, 2) for x in os.getloadavg()]

        print("verifying every completed upload ...", flush=True)
        found = verify(edge, Storage(settings))

        stats = environment.stats
        by_type = {name: stats_of(entry, elapsed) for (name, _method), entry in sorted(stats.entries.items())}
        # HTTP requests only: the validation wait is a step, not a request.
        http = StatsEntry(stats, "HTTP requests", "", use_response_times_cache=False)
        for (_name, method), entry in stats.entries.items():
            if method != "STEP":
                http.extend(entry)
        total = stats_of(http, elapsed)
        errors = [{"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                  for e in stats.errors.values()]
        server_errors = error_lines(base / "logs")
        report = {
            "benchmark": "bench/load.sh",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "nginx": subprocess.run([nginx_binary(), "-v"], capture_output=True,
                                                text=True).stderr.strip(),
                        "load_average_at_start": load_at_start, "load_average_at_end": load_at_end,
                        "note": "loopback only; the load generator shares the CPUs with the stack"},
            "settings": {"seconds": args.seconds, "database": args.database, "devices": DEVICES,
                         "developers": DEVELOPERS, "catalog_apps": DEVELOPERS + CATALOG_APPS,
                         "device_wait_s": device_wait, "developer_wait_s": [1, 3],
                         "package_bytes": "10-100 KiB", "api_workers": "gunicorn_conf.py default",
                         "edge_api_rate_per_client": settings.edge_api_rate, "seed": args.seed},
            "elapsed_s": round(elapsed, 1),
            "total": total, "by_type": by_type, "errors": errors,
            "logged_errors": server_errors,
            "cpu_seconds": cpu,
            "verification": found,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

        print(f"\n{'request':48} {'count':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'fail':>5}")
        for name, s in [*by_type.items(), ("total", total)]:
            print(f"{name:48} {s['requests']:7} {s['requests_per_s']:7} {s['p50_ms']!s:>7} {s['p99_ms']!s:>7} "
                  f"{s['failures']:5}")
        for e in errors:
            print(f"error: {e['occurrences']}× {e['name']}: {e['error']}")
        print(f"\nelapsed {elapsed:.1f} s; CPU seconds {cpu}; load average {load_at_start} → {load_at_end}")
        print(f"completed uploads {found['completed_uploads']}: {found['statuses']}; "
              f"queue drained after {found['queue_drained_after_s']} s; published ones downloaded and matched: "
              f"{found['published_downloaded_and_matched']}")
        for line in found["lost"]:
            print(f"LOST: {line}")
        print(f"errors in the logs: { {name: len(logged) for name, logged in server_errors.items()} }")
        for name, logged in server_errors.items():
            for line in logged[:10]:
                print(f"{name} log: {line}")
        print(f"wrote {args.out}")
        ok = stats.total.num_failures == 0 and not found["lost"] and not found["still_validating"] \
            and not any(server_errors.values())
        if not ok:  # the stack's logs outlive the run, to find out why
            kept = base.parent / f"{base.name}-logs"
            shutil.copytree(base / "logs", kept, dirs_exist_ok=True)
            shutil.copy(settings.resolved_edge_access_log, kept)
            print(f"logs kept in {kept}")
        print("OK: no errors, nothing lost" if ok else "FAILED: errors or lost uploads (see above)")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
