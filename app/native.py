"""The native stack without Docker: storage (SeaweedFS `weed`), API
(gunicorn), scheduler and edge (nginx) as child processes.

`scripts/run` uses `python -m app.native run`; the test fixtures use the same
functions, so what the tests start is what an operator runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from app.edge import nginx as edge
from app.edge.nginx import create_secret_file
from app.platform.config import ConfigError, Settings
from app.platform.files import private_dir, private_file

ROOT = Path(__file__).resolve().parent.parent


# -- processes ------------------------------------------------------------------

@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log_path: Path
    ready_url: str | None = None

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see "
                                   f"{self.log_path}:\n{self.tail()}")
            if self.ready_url is None or _http_ok(self.ready_url):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """Die at once, as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def spawn(name: str, argv: list[str], log_dir: Path, env: dict | None = None,
          ready_url: str | None = None, cwd: Path | None = None) -> Service:
    private_dir(log_dir)
    log_path = log_dir / f"{name}.log"
    private_file(log_path)
    log = open(log_path, "ab")
    # A process group of its own, so stopping it stops its children too.
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=cwd or ROOT, start_new_session=True)
    log.close()
    return Service(name, proc, log_path, ready_url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (each also free at port + 10000, weed's gRPC habit)."""
    ports: set[int] = set()
    while len(ports) < n:
        p = free_port()
        if p < 55000 and _port_free(p + 10000):
            ports.add(p)
    return sorted(ports)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def venv_bin(tool: str) -> str:
    """A tool installed beside this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / tool
    if local.exists():
        return str(local)
    found = shutil.which(tool)
    if not found:
        raise RuntimeError(f"{tool} is not installed; run scripts/run or scripts/test to set it up")
    return found


# -- storage: SeaweedFS ----------------------------------------------------------

@dataclass
class WeedPorts:
    s3: int
    master: int
    volume: int
    filer: int
    admin: int

    @classmethod
    def free(cls) -> "WeedPorts":
        return cls(*free_ports(5))

    @classmethod
    def of(cls, settings: Settings) -> "WeedPorts":
        """scripts/run's: MOSIS_S3_PORT and MOSIS_WEED_*_PORT."""
        return cls(s3=settings.s3_port, master=settings.weed_master_port, volume=settings.weed_volume_port,
                   filer=settings.weed_filer_port, admin=settings.weed_admin_port)


# SeaweedFS's volume size limit: it takes writes only while it can start a
# new volume of this size, so on a small or nearly full disk a fixed 1 GiB
# refused every write long before the disk was full. Unless given
# (MOSIS_WEED_VOLUME_SIZE_MB), it is a share of the free space, within bounds.
WEED_VOLUME_MB_MIN, WEED_VOLUME_MB_MAX, WEED_VOLUME_FREE_SHARE = 16, 1024, 16


def weed_volume_size_mb(data_dir: Path) -> int:
    free_mb = shutil.disk_usage(data_dir).free // (1024 * 1024)
    return max(WEED_VOLUME_MB_MIN, min(WEED_VOLUME_MB_MAX, free_mb // WEED_VOLUME_FREE_SHARE))


def start_weed(data_dir: Path, access_key: str, secret_key: str, ports: WeedPorts,
               log_dir: Path, volume_size_mb: int | None = None) -> Service:
    """SeaweedFS in one process, S3 on 127.0.0.1:ports.s3 with static credentials.

    Every port is given explicitly: weed moves to the next free port when one
    is taken, and a silent move would point the app at the wrong server.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    volume_size_mb = volume_size_mb or weed_volume_size_mb(data_dir)
    config = data_dir / "s3-identities.json"
    config.write_text(json.dumps({"identities": [{
        "name": "mosis",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    config.chmod(0o600)
    p = ports
    argv = [venv_bin("weed"), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p.master}", f"-master.port.grpc={p.master + 10000}",
            f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume + 10000}",
            f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer + 10000}",
            f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3 + 10000}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-admin.ui=false", f"-admin.port={p.admin}", f"-admin.port.grpc={p.admin + 10000}",
            f"-s3.config={config}", "-master.telemetry=false", f"-master.volumeSizeLimitMB={volume_size_mb}"]
    return spawn("weed", argv, log_dir, env=dict(os.environ),
                 ready_url=f"http://127.0.0.1:{p.s3}/healthz", cwd=data_dir)


# -- app and scheduler ---------------------------------------------------------------

def start_api(env: dict, bind: str, log_dir: Path, workers: int | None = 2) -> Service:
    """gunicorn with app/gunicorn_conf.py; `workers=None` keeps its count (production's)."""
    multiproc = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(multiproc, ignore_errors=True)  # stale files would double-count
    private_dir(multiproc)
    argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "app" / "gunicorn_conf.py"),
            "--bind", bind, *(["--workers", str(workers)] if workers else []), "app:create_app()"]
    return spawn("api", argv, log_dir, env=env, ready_url=f"http://{bind}/healthz")


def start_scheduler(env: dict, log_dir: Path) -> Service:
    addr = Settings.from_env(env).scheduler_metrics_addr
    # The scheduler serves its own metrics; in the API's multiprocess
    # directory they would be exported twice.
    env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return spawn("scheduler", [sys.executable, "-m", "app.scheduler"], log_dir, env=env,
                 ready_url=f"http://{addr}/metrics")


# -- edge: nginx ---------------------------------------------------------------------------

def start_edge(settings, *, http_port: int, internal_port: int, app_bind: str, log_dir: Path,
               prefix: Path | None = None, tls_port: int | None = None, extra_locations: str = "") -> Service:
    """nginx from the OS package with the configuration rendered for this
    machine (app.edge), checked with `nginx -t` before it starts.
    `extra_locations` go into its public server (the benchmarks' own)."""
    target = edge.native_target(settings, http_port=http_port, internal_port=internal_port,
                                app_bind=app_bind, prefix=prefix, log_dir=log_dir, tls_port=tls_port)
    target = dataclasses.replace(target, extra_locations=extra_locations)
    conf = edge.write_config(settings, target, edge.link_secret(settings))
    edge.nginx_test(conf, target.prefix)
    argv = [edge.nginx_binary(), "-p", str(target.prefix), "-c", str(conf), "-e", "stderr",
            "-g", "daemon off;"]
    service = spawn("edge", argv, log_dir, env=dict(os.environ),
                    ready_url=f"http://127.0.0.1:{internal_port}/health")
    service.target = target
    return service


# -- `scripts/run` -----------------------------------------------------------------------

def _secret(path: Path, make) -> str:
    """A generated secret kept under the data dir, so restarts keep it."""
    if path.exists():
        return path.read_text().strip()
    return create_secret_file(path, make())


def _interrupt(*_):
    raise KeyboardInterrupt


@dataclass
class Stack:
    services: list[Service] = field(default_factory=list)

    def add(self, service: Service, timeout: float = 60) -> Service:
        self.services.append(service)
        service.wait_ready(timeout)
        return service

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()


def run(args: argparse.Namespace) -> int:
    try:
        config = Settings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # A relative data dir is under the repository (scripts/run runs there).
    data_dir = (ROOT / config.data_dir).resolve()
    log_dir = data_dir / "logs"
    app_bind = config.app_bind
    # SeaweedFS's own ports (each also uses its number + 10000 for gRPC):
    # movable when another program holds one.
    ports = WeedPorts.of(config)
    env = dict(os.environ)
    env.setdefault("MOSIS_DATA_DIR", str(data_dir))
    env["MOSIS_ADMIN_TOKEN"] = env.get("MOSIS_ADMIN_TOKEN") or _secret(
        data_dir / "admin-token", lambda: "adm_" + secrets.token_urlsafe(32))
    env.setdefault("MOSIS_S3_ENDPOINT", f"http://127.0.0.1:{ports.s3}")
    env["MOSIS_S3_SECRET_KEY"] = env.get("MOSIS_S3_SECRET_KEY") or _secret(
        data_dir / "s3-secret", lambda: secrets.token_urlsafe(24))
    env.setdefault("MOSIS_PUBLIC_URL", f"http://127.0.0.1:{config.http_port}")
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir / "run" / "prometheus"))
    # The edge: uploads, downloads and assets all go through it (presigned
    # upload URLs are signed for it: MOSIS_S3_PUBLIC_ENDPOINT defaults to
    # MOSIS_PUBLIC_URL). The app and nginx share the download link secret.
    env.setdefault("MOSIS_EDGE_INTERNAL_URL", f"http://127.0.0.1:{config.edge_internal_port}")
    env["MOSIS_DOWNLOAD_LINK_SECRET"] = env.get("MOSIS_DOWNLOAD_LINK_SECRET") or _secret(
        data_dir / "download-link-secret", lambda: secrets.token_urlsafe(32))

    stack = Stack()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background
    try:
        settings = Settings.from_env(env)
        volume_mb = settings.weed_volume_size_mb or None  # None: from the free space
        stack.add(start_weed(data_dir / "s3", settings.s3_access_key, settings.s3_secret_key,
                             ports, log_dir, volume_mb))
        stack.add(start_api(env, app_bind, log_dir, workers=None))  # MOSIS_APP_WORKERS, as in production
        stack.add(start_scheduler(env, log_dir))
        tls_port = settings.https_port if settings.edge_tls_cert else None
        stack.add(start_edge(settings, http_port=settings.http_port, internal_port=settings.edge_internal_port,
                             app_bind=app_bind, log_dir=log_dir, tls_port=tls_port))
        print(f"""
Mosis storage appliance is running.
  edge       {env['MOSIS_PUBLIC_URL']}   (API, uploads, downloads, assets)
  API        http://{app_bind}/v1/   (behind the edge)
  S3         {env['MOSIS_S3_ENDPOINT']}   (behind the edge; never expose it)
  data       {data_dir}   (logs in {log_dir}; edge access log edge-access.log)
  admin token {env['MOSIS_ADMIN_TOKEN']}
Press Ctrl-C to stop.""", flush=True)
        while all(s.alive() for s in stack.services):
            time.sleep(0.5)
        dead = [s for s in stack.services if not s.alive()]
        for s in dead:
            print(f"{s.name} stopped unexpectedly:\n{s.tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except (RuntimeError, ValueError) as e:  # a service that will not start, a bad setting
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.native")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the whole stack in the foreground")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
