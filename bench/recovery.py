"""Recovery benchmark: how far the off-site replica lags, and how fast a
restore from it runs, against two SeaweedFS servers on 127.0.0.1.

(a) Replication lag. The API (gunicorn) and the scheduler run with a
    replica configured; developers ship versions (create, PUT to the
    presigned URL, complete, await validation, publish) at the rate the load
    benchmark's developers reached (bench/results/load.json, completed
    uploads per second; --rate to set another) for --seconds. Each package
    and manifest is a row of the outbox: its lag is from the row's write (in
    the transaction of the change) to its verified copy (the replica's bytes
    read back and hashed). Reports p50, p99 and max over every copy.

(b) Restore. A fresh store of --packages packages of --package-mib MiB each
    (1,000 × 1 MiB by default: about 1 GiB) is built the same way and left to
    replicate, with a metadata backup at the end. Then, in the same run:
    `flask --app app replica restore` into an empty database and an empty
    bucket on the primary server (the newest backup, every object, every
    sha256 and signature checked), timed; and a plain S3 copy loop (minio:
    list, get, put, one object after the other) of the same objects from the
    replica's bucket to another empty bucket on the primary server, timed.
    The ratio is the copy loop's seconds over the restore's: the restore's
    speed as a share of the copy loop's.

Targets: lag p99 under 60 s; restore at 0.5× the copy loop's speed or more.
Writes bench/results/recovery.json. Loopback only, bounded in time (about
five minutes here). Run it with bench/recovery.sh.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.housekeeping.replica import percentile  # noqa: E402
from app.native import WeedPorts, free_ports, start_api, start_scheduler, start_weed  # noqa: E402
from bench.workspace import Workspace  # noqa: E402
from tests.faults import query, wait_until  # noqa: E402
from tests.helpers import ADMIN_TOKEN, HttpApi, build_package  # noqa: E402

MiB = 1024 * 1024
KEY, SECRET = "bench", "bench-secret"
LAG_TARGET_S, RESTORE_TARGET = 60, 0.5
# The signing key every process of the run shares (the runbook: keep it off the VPS).
SIGNING_KEY = base64.b64encode(bytes(range(32))).decode()


def load_rate() -> float:
    """Completed uploads per second in the load benchmark's last run."""
    found = json.loads((ROOT / "bench" / "results" / "load.json").read_text())
    return found["by_type"]["developer: POST .../complete"]["requests_per_s"]


def weed(work: Workspace, name: str):
    for attempt in range(3):  # another program may take a free port first
        ports = WeedPorts.free()
        service = start_weed(work.base / name, KEY, SECRET, ports, work.logs / name)
        try:
            work.keep(service)
            return f"http://127.0.0.1:{ports.s3}"
        except RuntimeError:
            service.stop()
            work.started.remove(service)
            if attempt == 2:
                raise


def stack_env(base: Path, name: str, primary: str, replica: str, bucket: str) -> dict:
    api_port, scheduler_port = free_ports(2)
    data = base / name
    data.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "MOSIS_DATA_DIR": str(data), "MOSIS_DATABASE_URL": f"sqlite:///{data / 'mosis.db'}",
            "MOSIS_ADMIN_TOKEN": ADMIN_TOKEN, "MOSIS_SIGNING_KEY": SIGNING_KEY,
            "MOSIS_S3_ENDPOINT": primary, "MOSIS_S3_ACCESS_KEY": KEY, "MOSIS_S3_SECRET_KEY": SECRET,
            "MOSIS_S3_BUCKET": bucket, "MOSIS_PUBLIC_URL": primary,
            "MOSIS_REPLICA_S3_ENDPOINT": replica, "MOSIS_REPLICA_S3_BUCKET": f"{bucket}-replica",
            "MOSIS_REPLICA_S3_ACCESS_KEY": KEY, "MOSIS_REPLICA_S3_SECRET_KEY": SECRET,
            "MOSIS_VALIDATION_POLL_SECONDS": "0.2", "MOSIS_LOG_LEVEL": "WARNING",
            "MOSIS_APP_BIND": f"127.0.0.1:{api_port}", "MOSIS_SCHEDULER_METRICS_ADDR": f"127.0.0.1:{scheduler_port}",
            "PROMETHEUS_MULTIPROC_DIR": str(data / "run" / "prometheus")}


def start_store(work: Workspace, env: dict) -> tuple[list, HttpApi]:
    logs = Path(env["MOSIS_DATA_DIR"]) / "logs"
    api = work.keep(start_api(env, env["MOSIS_APP_BIND"], logs))
    scheduler = work.keep(start_scheduler(env, logs))
    return [scheduler, api], HttpApi(f"http://{env['MOSIS_APP_BIND']}")


def ship_at(http: HttpApi, rate: float, count: int | None, seconds: float | None, size, seed: int) -> int:
    """Ship versions at `rate` per second (each app one at a time), until
    `count` are shipped or `seconds` are over; returns how many were."""
    rnd = random.Random(seed)
    dev = http.new_developer()
    apps = [{"app": http.create_app(dev), "code": 0, "lock": threading.Lock()} for _ in range(32)]
    shipped, errors = [], []

    def ship(slot):
        with slot["lock"]:
            slot["code"] += 1
            app, code = slot["app"], slot["code"]
            data = build_package(app["package_id"], code, files={"blob.bin": rnd.randbytes(size(rnd))})
            try:
                shipped.append(http.ship(dev, app, code, data))
            except BaseException as e:
                errors.append(e)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        n = 0
        while (count is None or n < count) and (seconds is None or time.monotonic() - started < seconds):
            pool.submit(ship, apps[n % len(apps)])
            n += 1
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
    if errors:
        raise RuntimeError(f"{len(errors)} ships failed, the first: {errors[0]!r}")
    return len(shipped)


def outbox(env: dict, sql: str) -> list[tuple]:
    return query(env["MOSIS_DATABASE_URL"], sql)


def caught_up(env: dict, timeout: float) -> float:
    """Wait until no outbox row is pending; the seconds it took."""
    t0 = time.monotonic()
    wait_until(lambda: outbox(env, "SELECT COUNT(*) FROM replica_outbox WHERE done_at IS NULL")[0][0] == 0,
               timeout=timeout, interval=0.5, what="the replica to catch up")
    return round(time.monotonic() - t0, 1)


def lags(env: dict, prefix: str) -> list[float]:
    rows = outbox(env, "SELECT created_at, done_at FROM replica_outbox WHERE outcome = 'copied' "
                       f"AND key LIKE '{prefix}%'")
    return [(dt.datetime.fromisoformat(str(d)) - dt.datetime.fromisoformat(str(c))).total_seconds()
            for c, d in rows]


def lag_stats(values: list[float]) -> dict:
    return {"copies": len(values), "p50_s": round(percentile(values, 0.5), 2),
            "p99_s": round(percentile(values, 0.99), 2), "max_s": round(max(values, default=0), 2)}


def flask(env: dict, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def copy_loop(endpoint: str, source_bucket: str, target_endpoint: str, target_bucket: str) -> dict:
    """The plain S3 copy loop: list, then get and put each object in turn."""
    from urllib.parse import urlparse

    from minio import Minio

    def client(url):
        return Minio(urlparse(url).netloc, access_key=KEY, secret_key=SECRET, secure=False)

    src, dst = client(endpoint), client(target_endpoint)
    dst.make_bucket(target_bucket)
    count = size = 0
    t0 = time.monotonic()
    for obj in src.list_objects(source_bucket, recursive=True):
        r = src.get_object(source_bucket, obj.object_name)
        try:
            dst.put_object(target_bucket, obj.object_name, r, obj.size)
        finally:
            r.close()
            r.release_conn()
        count += 1
        size += obj.size
    return {"objects": count, "bytes": size, "seconds": round(time.monotonic() - t0, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, help="versions shipped per second in (a) (default: the load "
                                                   "benchmark's completed uploads per second)")
    parser.add_argument("--seconds", type=int, default=60, help="how long (a) ships (default 60)")
    parser.add_argument("--packages", type=int, default=1000, help="packages in (b)'s store (default 1000)")
    parser.add_argument("--package-mib", type=float, default=1.0, help="each one's size in MiB (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recovery.json")
    args = parser.parse_args()
    rate = args.rate or load_rate()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with contextlib.ExitStack() as cleanup:
        work = cleanup.enter_context(Workspace("recovery"))
        primary, replica = weed(work, "primary"), weed(work, "replica")

        print(f"(a) shipping {rate}/s for {args.seconds} s with a replica ...", flush=True)
        env = stack_env(work.base, "lag", primary, replica, "lag")
        procs, http = start_store(work, env)
        shipped = ship_at(http, rate, None, args.seconds, lambda r: r.randint(10 * 1024, 100 * 1024), args.seed)
        drained = caught_up(env, 300)
        lag = {"rate_per_s": rate, "rate_from": "bench/results/load.json" if not args.rate else "--rate",
               "versions_shipped": shipped, "seconds": args.seconds, "drained_after_s": drained,
               "packages": lag_stats(lags(env, "packages/")), "all": lag_stats(lags(env, ""))}
        for p in procs:
            p.stop()
        print(json.dumps(lag, indent=2), flush=True)

        size = int(args.package_mib * MiB)
        print(f"(b) building {args.packages} packages of {args.package_mib} MiB ...", flush=True)
        env = stack_env(work.base, "store", primary, replica, "store")
        procs, http = start_store(work, env)
        t0 = time.monotonic()
        built = ship_at(http, 1000, args.packages, None, lambda r: size, args.seed)
        build_s = round(time.monotonic() - t0, 1)
        backup = flask(env, "backup", "create")
        assert backup.returncode == 0, backup.stderr
        drained = caught_up(env, 1800)
        for p in procs:
            p.stop()

        print("(b) restoring from the replica ...", flush=True)
        restore_env = {**stack_env(work.base, "restored", primary, replica, "restored"),
                       "MOSIS_REPLICA_S3_BUCKET": "store-replica"}
        t0 = time.monotonic()
        restored = flask(restore_env, "replica", "restore", "--json")
        restore_s = round(time.monotonic() - t0, 2)
        if restored.returncode != 0:
            print(restored.stdout[-3000:], restored.stderr[-3000:])
            return 1
        report = json.loads(restored.stdout)
        print("(b) the plain S3 copy loop ...", flush=True)
        loop = copy_loop(replica, "store-replica", primary, "copy-loop")
        ratio = round(loop["seconds"] / restore_s, 3)
        objects = report["objects"]
        restore = {"packages": built, "package_bytes": size, "build_s": build_s, "replicated_after_s": drained,
                   "command": "flask --app app replica restore", "seconds": restore_s,
                   "seconds_inside": report["seconds"], "objects": objects["copied"],
                   "bytes": objects["bytes"], "mib_per_s": round(objects["bytes"] / MiB / restore_s, 1),
                   "checked": report["checked"], "problems": len(report["problems"])}
        loop["mib_per_s"] = round(loop["bytes"] / MiB / loop["seconds"], 1)
        met = {"lag_p99_under_60_s": lag["all"]["p99_s"] < LAG_TARGET_S,
               "restore_at_least_half_the_copy_loop": ratio >= RESTORE_TARGET}
        result = {
            "benchmark": "bench/recovery.sh",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "load_average_at_start": load_at_start,
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                        "note": "loopback only; both SeaweedFS servers, the stack and the load share the CPUs"},
            "replication_lag": lag, "restore": restore, "copy_loop": loop,
            "restore_speed_vs_copy_loop": ratio, "targets": {"lag_p99_s": LAG_TARGET_S,
                                                             "restore_speed_share": RESTORE_TARGET},
            "targets_met": met,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"restore": restore, "copy_loop": loop, "ratio": ratio, "targets_met": met}, indent=2))
        print(f"wrote {args.out}")
        return 0 if report["ok"] and objects["copied"] == loop["objects"] else 1


if __name__ == "__main__":
    sys.exit(main())
