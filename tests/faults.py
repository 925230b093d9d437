"""Fault injection against real processes, for tests/test_faults.py: a
storage server to stop, freeze and crash, processes to freeze and kill,
what a frozen server has been sent, the database read directly, and the
edge's cache on a full disk.

Everything here acts on processes a test started itself (its own `weed`, its
own API, scheduler and edge), never on shared ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from app.native import Service, WeedPorts, start_weed
from tests.stack import edge_settings, start_live_stack

WEED_KEY, WEED_SECRET = "mosis-fault", "mosis-fault-secret"


def wait_until(predicate, timeout: float = 30, interval: float = 0.05, what: str = "the condition"):
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def waiting_requests(port: int) -> int:
    """Connections to the local `port` with request bytes the server has not
    read yet: a frozen server's in-flight requests."""
    hex_port = f"{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            rx_queue = int(queues.split(":")[1], 16)
            if local.endswith(f":{hex_port}") and state == "01" and rx_queue > 0:
                count += 1
    return count


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


class Weed:
    """A `weed` of the test's own that it can stop, freeze, crash and restart
    on the same ports and data."""

    def __init__(self, base: Path):
        self.base = base
        self.ports = WeedPorts.free()
        self.endpoint = f"http://127.0.0.1:{self.ports.s3}"
        self.access_key, self.secret_key = WEED_KEY, WEED_SECRET
        self.service: Service | None = None
        self.frozen = False

    def start(self) -> None:
        self.service = start_weed(self.base / "data", WEED_KEY, WEED_SECRET, self.ports, self.base / "logs")
        self.service.wait_ready(60)

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted, requests hang unanswered."""
        os.killpg(self.service.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            os.killpg(self.service.proc.pid, signal.SIGCONT)
            self.frozen = False

    def crash(self) -> None:
        """SIGKILL (frozen or not): in-flight requests fail, new ones are refused."""
        self.service.kill()
        self.frozen = False

    def stop(self) -> None:
        """The end of the test: its data goes with it, so no need to be gentle."""
        if self.service is not None:
            self.thaw()
            self.service.kill()

    def waiting_requests(self) -> int:
        return waiting_requests(self.ports.s3)


@contextlib.contextmanager
def frozen(process: subprocess.Popen):
    """SIGSTOP one process (not its group) for the block; SIGCONT after."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on the database at `database_url` (SQLite or
    PostgreSQL; `%s` placeholders) in a connection of its own."""
    parsed = urlparse(database_url)
    if parsed.scheme == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.path, timeout=10)
        try:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            conn.close()
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


# -- the edge's cache disk full ------------------------------------------------------------

def edge_cache_full(base: Path) -> dict:
    """Run the live stack with the edge's cache on a 1 MiB tmpfs filled to
    the last byte, download a package through the edge, then free the space
    and download again. Needs the right to mount (root, or a user namespace:
    see test_faults.py). Returns what the downloads gave."""
    import hashlib

    import requests

    from app.platform.config import Settings
    from app.native import free_ports
    from tests.helpers import ADMIN_TOKEN, HttpApi, build_package

    storage = Weed(base / "weed")
    storage.start()
    settings = edge_settings(Settings(
        data_dir=base / "data", database_url=f"sqlite:///{base / 'mosis.db'}", admin_token=ADMIN_TOKEN,
        s3_endpoint=storage.endpoint, s3_access_key=WEED_KEY, s3_secret_key=WEED_SECRET,
        bucket="mosis-test", validation_poll_seconds=0.2), *free_ports(2))
    cache = settings.resolved_edge_cache_dir
    cache.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "mosis-edge-cache", str(cache)],
                   check=True, capture_output=True)
    stack = None
    try:
        filler = fill(cache)
        stack = start_live_stack(settings)
        api = HttpApi(stack.edge_url)
        dev = api.new_developer()
        app = api.create_app(dev)
        data = build_package(app["package_id"], 1, files={"payload.bin": os.urandom(300_000)})
        api.ship(dev, app, 1, data)

        def download(headers=None) -> dict:
            info = api.download_info(app["package_id"])
            r = requests.get(info["download_url"], headers=headers or {}, timeout=60)
            return {"status": r.status_code, "sha256": hashlib.sha256(r.content).hexdigest(),
                    "length": len(r.content), "cache": r.headers.get("X-Cache-Status"),
                    "expected_sha256": info["sha256"]}

        result = {"package_sha256": hashlib.sha256(data).hexdigest(), "package_size": len(data),
                  "range_expected": data[100:200].hex()}
        result["full"] = [download(), download()]
        ranged = requests.get(api.download_info(app["package_id"])["download_url"],
                              headers={"Range": "bytes=100-199"}, timeout=60)
        result["range"] = {"status": ranged.status_code, "body": ranged.content.hex()}
        result["edge_alive"] = stack.edge.alive()
        result["api_through_edge"] = requests.get(f"{stack.edge_url}/healthz", timeout=10).status_code
        filler.unlink()  # room again: the edge caches once more
        result["freed"] = [download(), download()]
        result["bypasses"] = sum(1 for line in stack.api.tail(2000).splitlines()
                                 if "served without caching" in line)
        return result
    finally:
        if stack is not None:
            stack.stop()
        storage.stop()
        subprocess.run(["umount", str(cache)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem is full (ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == 28, e  # ENOSPC: the disk is full
    finally:
        os.close(fd)
    # The last few bytes too, in smaller writes.
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as f:
        while True:
            f.write(b"\0" * 512)
    return filler


# -- the data disk full --------------------------------------------------------------------

def data_disk_full(base: Path) -> dict:
    """Run the live stack as `scripts/run` lays it out, with MOSIS_DATA_DIR
    (SQLite, logs, the workers' metrics files, SeaweedFS's volumes) on a
    small tmpfs, fill it to the last byte, replace the API's workers, use
    the API, then free the space and use it again. Needs the right to mount
    (see test_resilience.py). Returns what was seen."""
    import requests

    from app.platform.config import Settings
    from app.native import free_ports
    from tests.helpers import ADMIN_TOKEN, HttpApi, unique_package_id
    from tests.images import encode, icon

    data = base / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m,mode=0700", "mosis-data", str(data)],
                   check=True, capture_output=True)
    storage = Weed(data / "s3")
    stack = None
    result: dict = {}
    try:
        storage.start()
        settings = edge_settings(Settings(
            data_dir=data, admin_token=ADMIN_TOKEN, s3_endpoint=storage.endpoint,
            s3_access_key=WEED_KEY, s3_secret_key=WEED_SECRET, bucket="mosis-test",
            validation_poll_seconds=0.2), *free_ports(2))
        stack = start_live_stack(settings, extra_env={"MOSIS_STORAGE_CANARY_SECONDS": "1"})
        api = HttpApi(stack.url)
        dev = api.new_developer()
        app = api.create_app(dev)
        png = encode(icon(128), "PNG")

        def put_icon():
            return requests.put(f"{stack.url}/v1/apps/{app['id']}/icon", headers=dev["headers"],
                                files={"icon": ("icon.png", png, "image/png")}, timeout=60)

        def new_app():
            return api.call("POST", "/v1/apps", headers=dev["headers"],
                            json={"package_id": unique_package_id(), "name": "Full"})

        def answer(r) -> dict:
            body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else r.text[:200]
            return {"status": r.status_code, "body": body, "retry_after": r.headers.get("Retry-After")}

        result["before"] = {"icon": put_icon().status_code, "ready": api.call("GET", "/readyz").status_code}
        filler = fill(data)
        workers = children_of(stack.api.proc.pid)
        for pid in workers:  # new workers start with new metrics files, on the full disk
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(set(children_of(stack.api.proc.pid)) - set(workers)) == len(workers),
                   timeout=60, what="gunicorn to start new workers")

        def answering() -> bool:
            try:
                return api.call("GET", "/healthz", timeout=10).status_code == 200
            except requests.RequestException:
                return False

        result["healthz_after_fill"] = bool(wait_until(answering, timeout=60, what="the API to answer"))
        # New workers must live through their first requests (metrics written).
        result["full"] = {
            "apps": answer(api.call("GET", "/v1/apps", headers=dev["headers"])),
            "new_app": answer(new_app()),
            "icon": answer(put_icon()),
            "metrics": api.call("GET", "/metrics").status_code,
            "ready": wait_until(lambda: (r := api.call("GET", "/readyz")).status_code == 503 and answer(r),
                                timeout=30, what="readiness to report the full disk"),
        }
        def gauge(name: str) -> float | None:
            for line in requests.get(f"{stack.scheduler_url}/metrics", timeout=10).text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            return None

        # The scheduler's gauges (refreshed every 15 s): storage is not up, the disk has no room.
        result["storage_up_full"] = wait_until(lambda: gauge("mosis_storage_up") == 0 and "0", timeout=60,
                                               what="mosis_storage_up to drop")
        result["disk_free_full"] = gauge("mosis_data_disk_free_bytes")
        new_workers = set(children_of(stack.api.proc.pid))
        time.sleep(2)
        # The same workers a while later: none died of the full disk.
        result["workers_stable"] = new_workers == set(children_of(stack.api.proc.pid)) \
            and len(new_workers) == len(workers)
        filler.unlink()  # room again: the API is not restarted
        # SeaweedFS's own metadata store (leveldb) may stay in error after a
        # write of its failed on the full disk, until weed restarts: restart
        # it, as an operator would (docs/operations.md). The API is not.
        storage.crash()
        storage.start()
        seen = []

        def ready() -> bool:
            r = api.call("GET", "/readyz")
            seen[:] = [r.text]
            return r.status_code == 200

        try:
            wait_until(ready, timeout=90, what="readiness once there is room")
        except AssertionError as e:
            raise AssertionError(f"{e}; /readyz said {seen}; storage log:\n{storage.service.tail(20)}") from None
        result["freed"] = {
            "ready": True,
            "new_app": new_app().status_code,
            "icon": put_icon().status_code,
        }
        result["storage_up_freed"] = wait_until(lambda: gauge("mosis_storage_up") == 1 and "1", timeout=60,
                                                what="mosis_storage_up to be back")
        result["disk_free_freed"] = gauge("mosis_data_disk_free_bytes")
        result["workers_same_after_free"] = new_workers == set(children_of(stack.api.proc.pid))
        result["sigbus_in_log"] = "SIGBUS" in stack.api.tail(5000)
        return result
    finally:
        if stack is not None:
            stack.stop()
        storage.stop()
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def private_mounts_argv() -> list[str] | None:
    """How to run a command in mount and PID namespaces of its own (its
    mounts seen by nobody else, everything it started killed with it), with
    the right to mount there; None if this machine allows neither."""
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
            "--kill-child"]
    if os.geteuid() != 0:
        argv[1:1] = ["--user", "--map-root-user"]  # an unprivileged user's own namespace
    try:
        probe = subprocess.run(argv + ["sh", "-c", "mount -t tmpfs -o size=64k probe /mnt"],
                               capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return argv if probe.returncode == 0 else None


def run_with_private_mounts(scenario: str, tmp_path: Path, repo_root: Path, timeout: float) -> dict:
    """Run a scenario of this module (`python -m tests.faults SCENARIO DIR`)
    in mount and PID namespaces of its own (private_mounts_argv); return its
    JSON result. The test is skipped, saying why, only where no namespace
    lets it mount."""
    import json
    import sys

    import pytest

    argv = private_mounts_argv()
    if argv is None:
        pytest.skip("cannot mount a tmpfs here, not even in a user namespace (unshare refused)")
    base = tmp_path / "scenario"
    base.mkdir()
    run = subprocess.run(argv + [sys.executable, "-m", "tests.faults", scenario, str(base)],
                         cwd=repo_root, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


SCENARIOS = {"edge-cache-full": edge_cache_full, "data-disk-full": data_disk_full}


def main(argv: list[str]) -> int:
    """`python -m tests.faults SCENARIO DIR`: print a scenario's result as
    JSON (run in a mount namespace of its own)."""
    import json
    import sys

    if len(argv) != 2 or argv[0] not in SCENARIOS:
        print(f"usage: python -m tests.faults {{{','.join(SCENARIOS)}}} DIR", file=sys.stderr)
        return 2
    print(json.dumps(SCENARIOS[argv[0]](Path(argv[1]))))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
