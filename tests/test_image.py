"""The appliance image, run as compose.yaml runs it.

scripts/test-image builds the image from our Dockerfile on a Docker engine
of its own and runs this module (elsewhere it is skipped). The official
Python and nginx images cannot be pulled on these machines: the image is
built on a Debian bookworm stand-in base, with Debian's PostgreSQL client
in the machine's server's major version (build arguments the Dockerfile
declares for this), and nginx is Debian's on the same base. Everything else
is the Dockerfile's and compose.yaml's.

Every service of compose.yaml that runs the app image (app, scheduler,
edge-config) is started from it with the command, environment and mounts
compose.yaml gives it (tests/compose_cli.py, from a .env filled in from
.env.example as an operator would), on the host's network, against the
session's SeaweedFS (as "another S3 server", compose's MinIO profile off)
and a database of its own on the machine's PostgreSQL. The operators'
commands of docs/deploy.md run as written, `docker compose` standing for
tests/compose_cli.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.compose_cli import Engine, Project
from tests.helpers import bearer, build_package, sha256
from tests.stack import scratch_pg_database
from tools.composecheck.model import Stack, read_dotenv

pytestmark = [
    pytest.mark.skipif(not os.environ.get("MOSIS_TEST_IMAGE"),
                       reason="scripts/test-image runs it, with the image it builds on an engine of its own"),
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parent.parent
APP_IMAGE_SERVICES = ("app", "scheduler", "edge-config")
# On the host's network, the ports the services listen on must be free:
# the API, the scheduler's metrics, the edge and its internal server.
PORTS = (8000, 8001, 8080, 8081)
EDGE = "http://127.0.0.1:8080"
PACKAGE_ID = "com.example.imagetest"


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def filled_dotenv(example: Path, changes: dict[str, str]) -> str:
    """.env.example filled in as its first lines ask: every change-me made a
    secret of its own, and the `changes` set (added when it has no line)."""
    lines, seen = [], set()
    for line in example.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            seen.add(key)
            if key in changes:
                value = changes[key]
            elif "change-me" in value:
                value = secrets.token_hex(32)
            line = f"{key}={value}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in changes.items() if k not in seen]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory, weed):
    """The operator's .env: storage is the session's SeaweedFS, the
    database one of this module's own on the machine's PostgreSQL."""
    with scratch_pg_database("mosis_image") as url:
        path = tmp_path_factory.mktemp("compose") / ".env"
        path.write_text(filled_dotenv(ROOT / ".env.example", {
            "MOSIS_PUBLIC_URL": EDGE,
            "COMPOSE_PROFILES": "",
            "MOSIS_S3_ENDPOINT": weed.endpoint,
            "MOSIS_EDGE_STORAGE_SERVERS": weed.endpoint.removeprefix("http://"),
            "MOSIS_S3_ACCESS_KEY": weed.access_key,
            "MOSIS_S3_SECRET_KEY": weed.secret_key,
            "MOSIS_S3_BUCKET": f"mosis-image-{secrets.token_hex(4)}",
            "POSTGRES_USER": "postgres",  # the machine's PostgreSQL trusts it from loopback
            "POSTGRES_DB": url.rsplit("/", 1)[1],
        }))
        yield path


@pytest.fixture(scope="module")
def project(dotenv):
    """The project's volumes, and its app and scheduler started as `up` would."""
    taken = [p for p in PORTS if _port_taken(p)]
    assert not taken, f"ports {taken} are taken on this machine: the services use the host's network"
    engine = Engine(os.environ["MOSIS_TEST_DOCKER"])
    stack = Stack.load(ROOT, dotenv)
    assert stack.services["app"]["image"] == os.environ["MOSIS_TEST_IMAGE"]
    # Every service that runs the app image is one this module starts.
    assert {name for name, svc in stack.services.items()
            if svc.get("image") == os.environ["MOSIS_TEST_IMAGE"]} == set(APP_IMAGE_SERVICES)
    project = Project(engine, stack, {stack.services["nginx"]["image"]: os.environ["MOSIS_TEST_EDGE_IMAGE"]})
    project.remove()
    project.create_volumes()
    try:
        for service in ("app", "scheduler"):
            project.up(service)
        yield project
    finally:
        for service in ("app", "scheduler", "edge-config", "nginx"):
            if project.state(service):
                print(f"--- {service} ---\n{project.logs(service)[-4000:]}", file=sys.stderr)
        project.remove()


def wait_healthy(project: Project, service: str, timeout: float = 180) -> None:
    """Until the service's compose healthcheck passes; fails at once if it exited."""
    deadline = time.monotonic() + timeout
    while True:
        state = project.state(service)
        assert state.get("Running"), f"{service} is not running ({state}):\n{project.logs(service)[-4000:]}"
        check = project.healthcheck(service)
        if check.returncode == 0:
            return
        assert time.monotonic() < deadline, (f"{service}'s healthcheck still fails after {timeout}s: "
                                             f"{check.stderr[-1000:]}\n{project.logs(service)[-4000:]}")
        time.sleep(1)


def one_shot(project: Project, service: str, timeout: float = 120) -> tuple[int, str]:
    """Run a one-shot service (restart: "no") to its end: exit code, output."""
    container = project.up(service)
    code = int(project.engine("wait", container, timeout=timeout).stdout.strip())
    return code, project.logs(service)


def metrics(url: str) -> dict[str, float]:
    text = requests.get(url, timeout=10).text
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+(?:{[^}]*})?) (\S+)$", text, re.M)}


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def container_user(project: Project, service: str) -> tuple[str, str]:
    out = project.exec(service, ["sh", "-c", "id -u; id -un"]).stdout.split()
    return out[0], out[1]


def read_only_mounts_stay_read_only(project: Project, service: str) -> None:
    ro = [v for v in project.stack.volumes(service) if v.read_only]
    assert ro, f"{service} has no read-only mount to check"
    for v in ro:
        probe = project.exec(service, ["sh", "-c", f"touch {shlex.quote(v.target)}/.probe"])
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, (v, probe.stderr)


# -- edge-config -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_config(project) -> tuple[int, str]:
    """edge-config run to its end: its exit code and output."""
    return one_shot(project, "edge-config")


@pytest.fixture(scope="module")
def edge(project, edge_config):
    """nginx on what edge-config rendered."""
    code, logs = edge_config
    assert code == 0, f"edge-config exited {code}:\n{logs[-4000:]}"
    project.up("nginx")
    wait_healthy(project, "nginx", timeout=60)
    return project


def test_edge_config_renders_a_configuration_nginx_accepts(project, edge_config):
    code, logs = edge_config
    assert code == 0, f"edge-config exited {code}:\n{logs[-4000:]}"
    out = project.command("edge-config")[project.command("edge-config").index("--out") + 1]
    # nginx's own check, in nginx's container with the mounts compose gives it.
    check = project.run("nginx", ["nginx", "-t", "-c", out])
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr


# -- app and scheduler ---------------------------------------------------------------------------


def test_app_starts_as_compose_runs_it(project):
    from app.platform.migrations import STEPS
    from app.platform.models import SchemaMigration

    wait_healthy(project, "app")
    uid, name = container_user(project, "app")
    assert uid != "0" and name == "mosis"
    read_only_mounts_stay_read_only(project, "app")
    assert requests.get("http://127.0.0.1:8000/readyz", timeout=10).status_code == 200
    # The app migrated the module's PostgreSQL database at start.
    env = project.stack.container_env("app")
    import psycopg2

    url = env["MOSIS_DATABASE_URL"].replace("@postgres:", "@127.0.0.1:")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT version FROM "{SchemaMigration._meta.table_name}"')
        assert sorted(r[0] for r in cur.fetchall()) == [number for number, _, _ in STEPS]


def test_scheduler_runs_its_housekeeping_as_compose_runs_it(project):
    wait_healthy(project, "scheduler")
    uid, name = container_user(project, "scheduler")
    assert uid != "0" and name == "mosis"
    read_only_mounts_stay_read_only(project, "scheduler")
    jobs = json.loads(project.exec("scheduler", [
        "python", "-c", "import json; from app.scheduler import HOUSEKEEPING; "
                        "print(json.dumps([j.name for j in HOUSEKEEPING]))"]).stdout)
    assert len(jobs) >= 5, jobs
    deadline = time.monotonic() + 180
    while True:
        samples = metrics("http://127.0.0.1:8001/metrics")
        done = {j for j in jobs if samples.get(f'mosis_job_last_success_timestamp_seconds{{job="{j}"}}', 0) > 0}
        if done == set(jobs):
            break
        assert time.monotonic() < deadline, (f"housekeeping jobs without a successful run: {set(jobs) - done}\n"
                                             f"{project.logs('scheduler')[-4000:]}")
        time.sleep(2)
    errors = {k: v for k, v in samples.items() if k.startswith("mosis_job_runs_total") and 'result="error"' in k
              and v > 0}
    assert not errors, f"{errors}\n{project.logs('scheduler')[-4000:]}"


# -- a release through the edge, and the operators' commands ---------------------------------


@pytest.fixture(scope="module")
def release(edge):
    """A developer ships and publishes a package through the edge; the
    scheduler validates it."""
    wait_healthy(edge, "app")
    admin = bearer(read_dotenv(edge.stack.dotenv)["MOSIS_ADMIN_TOKEN"])
    s = requests.Session()
    r = s.post(f"{EDGE}/v1/admin/developers", json={"name": "Image test", "email": "image-test@example.com"}, headers=admin,
               timeout=30)
    assert r.status_code == 201, r.text
    dev = bearer(r.json()["token"])
    r = s.post(f"{EDGE}/v1/apps", json={"package_id": PACKAGE_ID, "name": "Image test"}, headers=dev, timeout=30)
    assert r.status_code == 201, r.text
    app_id = r.json()["app"]["id"]
    package = build_package(PACKAGE_ID, 7)
    r = s.post(f"{EDGE}/v1/apps/{app_id}/versions", headers=dev, timeout=30,
               json={"version_code": 7, "version_name": "1.0.7", "size": len(package), "sha256": sha256(package)})
    assert r.status_code == 201, r.text
    upload = r.json()["upload"]
    r = requests.request(upload["method"], upload["url"], data=package, headers=upload["headers"], timeout=60)
    assert r.status_code == 200, r.text
    r = s.post(f"{EDGE}/v1/apps/{app_id}/versions/7/complete", headers=dev, timeout=30)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while (status := s.get(f"{EDGE}/v1/apps/{app_id}/versions/7", headers=dev,
                           timeout=30).json()["version"]["status"]) == "validating":
        assert time.monotonic() < deadline, "the scheduler did not validate the package"
        time.sleep(1)
    assert status == "draft"
    r = s.post(f"{EDGE}/v1/apps/{app_id}/versions/7/publish", headers=dev, timeout=30)
    assert r.status_code == 200, r.text
    return package


def download(package: bytes) -> list[str]:
    """The current version through the edge, as a device fetches it; the
    cache statuses seen."""
    statuses = []
    for _ in range(2):
        link = requests.get(f"{EDGE}/v1/packages/{PACKAGE_ID}/download", timeout=30)
        assert link.status_code == 200, link.text
        r = requests.get(link.json()["download_url"], timeout=60)
        assert r.status_code == 200 and r.content == package, (r.status_code, r.text[:300])
        statuses.append(r.headers.get("X-Cache-Status"))
    return statuses


def test_a_release_goes_through_the_app_and_the_edge(release, edge):
    assert download(release) == ["MISS", "HIT"]
    # The scheduler reads the edge's access log from the volume nginx writes it to.
    deadline = time.monotonic() + 120
    while metric_sum(metrics("http://127.0.0.1:8001/metrics"), "mosis_edge_downloads_total") < 2:
        assert time.monotonic() < deadline, "the scheduler did not count the edge's downloads"
        time.sleep(2)


def deploy_md_commands() -> list[tuple[str, str]]:
    """(section, command) of every `docker compose` command docs/deploy.md
    gives for a service that runs the app image, in the order it gives them:
    lines of its shell blocks (continuation lines joined) and inline code."""
    found, section, block = [], "", None
    for line in (ROOT / "docs/deploy.md").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if block is None:
                block = [] if stripped in ("```sh", "```bash", "```") else None
                if block is None:
                    block = False  # another language: skipped
            else:
                if block:
                    candidates = re.split(r"(?<!\\)\n", "\n".join(block))
                    found += [(section, c.strip()) for c in candidates]
                block = None
            continue
        if block is not None:
            if block is not False:
                block.append(line)
            continue
        if m := re.match(r"#+ (.+)", line):
            section = m.group(1)
        found += [(section, c) for c in re.findall(r"`(docker compose [^`]+)`", line)]
    pattern = re.compile(r"docker compose (exec|run|cp)\s+(?:(?:-T|--rm)\s+)*([\w-]+)")
    return [(sec, c) for sec, c in found
            if (m := pattern.match(c)) and m.group(2) in APP_IMAGE_SERVICES]


def test_the_operators_commands_of_deploy_md(release, edge, tmp_path):
    commands = deploy_md_commands()
    kinds = " ".join(c for _, c in commands)
    for needed in ("backup create", "backup list", "backup restore", "retention run --dry-run",
                   "storage orphans", "developers create", "signing-key.pem"):
        assert needed in kinds, f"docs/deploy.md no longer gives `{needed}`: {commands}"
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker").write_text(f"#!/bin/sh\nexec {sys.executable} -m tests.compose_cli \"$@\"\n")
    (shim / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "MOSIS_TEST_COMPOSE_ENV": str(edge.stack.dotenv)}
    outputs = {}
    for section, command in commands:
        # A restore happens on a new host, before the app and the scheduler
        # start (nothing else may write to the database); then `up -d`.
        running = section != "Restoring"
        for service in ("app", "scheduler"):
            if bool(edge.state(service).get("Running")) != running:
                edge.engine("start" if running else "stop", edge.container(service))
                if running:
                    wait_healthy(edge, service)
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, input="y\n", capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{section}: `{command}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        outputs[command] = proc.stdout
    for service in ("app", "scheduler"):
        if not edge.state(service).get("Running"):
            edge.engine("start", edge.container(service))
    # What they printed is what they say they do.
    by_kind = {k: next(out for c, out in outputs.items() if k in c) for k in ("backup list", "signing-key.pem")}
    assert "backups/db/" in by_kind["backup list"]
    seed = base64.b64decode(by_kind["signing-key.pem"].strip())
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert base64.b64encode(public).decode() == requests.get(f"{EDGE}/v1/signing-key", timeout=30).json()["public_key"]
    assert (tmp_path / "signing-key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    # After the restore the appliance serves what it served.
    wait_healthy(edge, "app")
    wait_healthy(edge, "scheduler")
    assert download(release)[1] == "HIT"


# -- placeholders ---------------------------------------------------------------------------------


def test_each_service_refuses_to_start_with_a_placeholder_secret(project, tmp_path):
    """With a value .env.example ships, or one too short: one line naming
    the variable, and the service does not start. (Every secret and every
    process natively: tests/test_startup.py.)"""
    from concurrent.futures import ThreadPoolExecutor

    example = read_dotenv(ROOT / ".env.example")
    cases = [("app", "MOSIS_ADMIN_TOKEN", example["MOSIS_ADMIN_TOKEN"]),
             ("scheduler", "MOSIS_DOWNLOAD_LINK_SECRET", example["MOSIS_DOWNLOAD_LINK_SECRET"]),
             ("edge-config", "MOSIS_ADMIN_TOKEN", "too-short-to-be-a-secret")]
    assert "change-me" in cases[0][2] and "change-me" in cases[1][2]

    def start(case):
        service, name, value = case
        dotenv = tmp_path / f"{service}.env"
        dotenv.write_text("".join(f"{k}={v}\n" for k, v in {**read_dotenv(project.stack.dotenv),
                                                            name: value}.items()))
        bad = Project(project.engine, Stack.load(ROOT, dotenv), project.stand_ins)
        return bad.run(service, timeout=180)

    with ThreadPoolExecutor(len(cases)) as pool:  # the engine's copies overlap
        results = list(pool.map(start, cases))
    for (service, name, _), proc in zip(cases, results):
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode != 0, (service, lines)
        assert len(lines) == 1 and name in lines[0] and "Traceback" not in lines[0], (service, lines)
