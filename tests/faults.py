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

    from app.config import Settings
    from app.native import free_ports
    from tests.conftest import edge_settings, start_live_stack
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
        filler = cache / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC: the disk is full
        finally:
            os.close(fd)
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


def main(argv: list[str]) -> int:
    """`python -m tests.faults edge-cache-full DIR`: print edge_cache_full's
    result as JSON (run in a mount namespace of its own)."""
    import json
    import sys

    if len(argv) != 2 or argv[0] != "edge-cache-full":
        print("usage: python -m tests.faults edge-cache-full DIR", file=sys.stderr)
        return 2
    print(json.dumps(edge_cache_full(Path(argv[1]))))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
