"""compose.yaml, the Dockerfile and what they mount, read as compose and
docker would read them.

Checked statically by tools/composecheck (its model reads the files as
compose does: YAML anchors and merge keys resolved, `${VAR:-default}` and
`${VAR:?message}` interpolated against .env.example, the file operators
copy to .env, the Dockerfile split into its stages) and by a real Compose
parser (dclint, the Compose specification's schema); tests/test_image.py
builds the image and starts the services (scripts/test-image). Each check
returns the problems it finds, each saying what is wrong; the tests assert
that the repository has none, and break copies of the files to show that
every check notices what it guards, through its function and through the
command line.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.edge import nginx as edge
from app.platform.config import Settings
from tools.composecheck import CHECKS, run_checks
from tools.composecheck.checks import MINIO_IMAGE_TOOLS, edge_path_problems
from tools.composecheck.model import InterpolationError, Stack, interpolate

ROOT = Path(__file__).resolve().parent.parent

# -- the repository passes every check ------------------------------------------------------------


@pytest.fixture(scope="module")
def results() -> dict[str, list[str]]:
    return run_checks(ROOT)


@pytest.mark.parametrize("check", [*CHECKS, "app_environment"])
def test_compose_and_dockerfile(results, check):
    problems = results[check]
    assert not problems, f"{check}:\n  " + "\n  ".join(problems)


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME ${UNSET:-${SET}}", env, "t") \
        == "x d  d $HOME x"
    assert interpolate("${SET:+alt}${EMPTY:+alt}${EMPTY+alt}", env, "t") == "altalt"
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?say so}", env, "t")
    assert interpolate("${EMPTY?say so}", env, "t") == ""
    with pytest.raises(InterpolationError, match="UNSET"):
        interpolate("${UNSET?say so}", env, "t")


def test_compose_sees_the_stack_the_docs_describe():
    stack = Stack.load(ROOT)
    assert set(stack.services) == {"minio1", "minio2", "minio3", "minio4", "minio-init", "postgres", "app",
                                   "scheduler", "edge-config", "nginx", "prometheus", "grafana"}
    app = stack.container_env("app")
    # Interpolated from .env.example, merged through the x-app anchor.
    assert app["MOSIS_DATABASE_URL"] == "postgresql://mosis:change-me@postgres:5432/mosis"
    assert app["MOSIS_S3_ENDPOINT"] == "http://minio1:9000"
    assert stack.container_env("scheduler")["MOSIS_SCHEDULER_METRICS_ADDR"] == "0.0.0.0:8001"
    assert stack.services["nginx"]["ports"] == ["80:8080"]
    assert "minio" in stack.env["COMPOSE_PROFILES"].split(",")


def test_init_script_needs_only_what_the_minio_image_has(tmp_path):
    """The MinIO image has a shell, coreutils and mc, and no sed or awk:
    run minio/init.sh with no more than that, mc being a recorder of its
    calls (the server it talks to cannot run here) that fails its first call
    as a cluster still forming does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in MINIO_IMAGE_TOOLS - {"mc"}:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    calls = tmp_path / "calls"
    (bin_dir / "mc").write_text(
        f"#!{shutil.which('sh')}\n"
        f'[ -e {tmp_path}/formed ] || {{ : > {tmp_path}/formed; exit 1; }}\n'
        f'printf "%s\\n" "$*" >> {calls}\n'
        # The files it is handed, as the server would receive them.
        f'for a in "$@"; do case "$a" in /tmp/*.json) cat "$a" >> {calls};; esac; done\n')
    (bin_dir / "mc").chmod(0o755)
    env = {"PATH": str(bin_dir), "MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "root-password",
           "MOSIS_S3_BUCKET": "store-bucket", "MOSIS_S3_ACCESS_KEY": "app", "MOSIS_S3_SECRET_KEY": "app-secret"}
    proc = subprocess.run([shutil.which("sh"), str(ROOT / "minio/init.sh")], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    log = calls.read_text()
    assert log.startswith("alias set mosis http://minio1:9000 root root-password\n")  # retried
    assert "mb --ignore-existing mosis/store-bucket" in log
    assert '"arn:aws:s3:::store-bucket"' in log and '"arn:aws:s3:::store-bucket/*"' in log
    assert '"arn:aws:s3:::store-bucket/assets/*"' in log
    assert "${MOSIS_S3_BUCKET}" not in log
    assert "admin user add mosis app app-secret" in log and "ilm rule import mosis/store-bucket" in log


# -- every check notices what it guards ------------------------------------------------------------

COPIED = ("compose.yaml", ".env.example", "Dockerfile", "docker", ".dockerignore", ".gitignore", ".dclintrc",
          "pyproject.toml", "README.md", "scripts", "minio", "grafana", "docs", "app", "format")


@pytest.fixture
def copy(tmp_path) -> Path:
    """The files the checks read, in a git work tree of their own."""
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, tmp_path / name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def break_file(path: Path, text: str, replacement: str) -> None:
    """Replace the first `text` in the file; the text must still be there."""
    original = path.read_text()
    assert text in original, f"the breakage no longer applies to {path.name}: {text!r} is gone"
    path.write_text(original.replace(text, replacement, 1))


def test_a_faithful_copy_passes(copy):
    assert {k: v for k, v in run_checks(copy).items() if v} == {}


BREAKAGES = [
    # (check, file, text, replacement, what the problem must say)
    ("healthchecks", "compose.yaml",
     '"nginx-cache:/var/cache/mosis:ro"]\n    healthcheck:', '"nginx-cache:/var/cache/mosis:ro"]\n    x-hc:',
     "app: a long-running service without a healthcheck"),
    ("healthchecks", "compose.yaml", "    restart: unless-stopped\n    networks: [backend]\n\n  app:",
     "    networks: [backend]\n\n  app:", "postgres: no restart policy"),
    ("healthchecks", "compose.yaml", "      edge-config: {condition: service_completed_successfully}",
     "      edge-config: {condition: service_healthy}", "one-shot job edge-config"),
    ("images", "compose.yaml", "image: postgres:17.6-bookworm", "image: postgres:latest", "postgres:latest"),
    ("images", "compose.yaml", "image: grafana/grafana:11.3.1", "image: grafana/grafana", "has no tag"),
    ("images", "compose.yaml", "image: mosis-storage:0.1.0", "image: mosis-storage:0.0.9", "pyproject.toml"),
    ("ports", "compose.yaml", "    hostname: minio1\n", '    hostname: minio1\n    ports: ["9000:9000"]\n',
     "minio1 publishes ports"),
    ("depends_on", "compose.yaml", "    depends_on:\n      prometheus: {condition: service_healthy}",
     "    depends_on: [prometheus]", "grafana: depends_on lists ['prometheus'] without a condition"),
    ("depends_on", "compose.yaml", "minio-init: {condition: service_completed_successfully, required: false}\n\nservices",
     "minio-init: {condition: service_completed_successfully}\n\nservices", "without required: false"),
    ("volumes", "compose.yaml", '"postgres-data:/var/lib/postgresql/data"', '"./pgdata:/var/lib/postgresql/data"',
     "postgres: PostgreSQL's data directory"),
    ("volumes", "compose.yaml", '  grafana-data: {}\n', "", "'grafana-data' is not declared"),
    ("minio", "compose.yaml", "http://minio{1...4}/data", "/data", "one erasure-coded set"),
    ("minio", "compose.yaml", '["CMD", "mc", "ready", "local"]',
     '["CMD", "curl", "-fsS", "http://localhost:9000/minio/health/live"]', "'curl', which the MinIO image"),
    ("minio", "compose.yaml", '["CMD", "mc", "ready", "local"]', '["CMD-SHELL", "mc ls local || true"]',
     "is not `mc ready local`"),
    ("volumes", "compose.yaml", '    hostname: minio2\n    volumes: ["minio2-data:/data"]',
     '    hostname: minio2\n    volumes: ["minio1-data:/data"]', "a volume of their own"),
    ("required_variables", ".env.example", "POSTGRES_PASSWORD=change-me\n", "", "POSTGRES_PASSWORD"),
    ("required_variables", "compose.yaml", "GF_SERVER_ROOT_URL: ${MOSIS_PUBLIC_URL:?set MOSIS_PUBLIC_URL in .env}",
     "GF_SERVER_ROOT_URL: ${GRAFANA_URL}", "GRAFANA_URL without a default"),
    ("secrets", "compose.yaml",
     "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}",
     "GF_SECURITY_ADMIN_PASSWORD: hunter2hunter2", "GF_SECURITY_ADMIN_PASSWORD has a value written"),
    ("secrets", "compose.yaml", "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}@postgres",
     "s3cret-pw@postgres", "a URL carries a password"),
    ("secrets", ".gitignore", "\n.env\n", "\n", ".env is not git-ignored"),
    ("secrets", ".dockerignore", "\n.env", "\n", ".dockerignore does not exclude .env"),
    ("secrets", "Dockerfile", "ARG PG_MAJOR=17", "ARG PG_MAJOR=17\nENV MOSIS_ADMIN_TOKEN=abc", "bakes a secret"),
    ("app_environment", "compose.yaml", '    MINIO_ROOT_PASSWORD: ""\n', "",
     "carries MINIO_ROOT_PASSWORD, a secret it does not use"),
    ("app_environment", "compose.yaml", "      MOSIS_SCHEDULER_METRICS_ADDR: 0.0.0.0:8001",
     "      MOSIS_SCHEDULER_METRICS_ADDR: 0.0.0.0:8001\n      MOSIS_S3_BUCKET: other-bucket",
     "scheduler runs with other settings than the app: ['bucket']"),
    ("app_environment", "docs/configuration.md", "| `MOSIS_MAX_SCREENSHOTS` |", "| `MAX_SCREENSHOTS` |",
     "MOSIS_MAX_SCREENSHOTS is read by the app but not documented"),
    ("bind_mounts", "compose.yaml", '"./minio:/init:ro"', '"./minio-setup:/init:ro"', "'./minio-setup'"),
    ("prometheus", "grafana/prometheus/prometheus.yml", "/minio/v2/metrics/cluster", "/minio/v2/metrics/node",
     "does not scrape MinIO's /minio/v2/metrics/cluster"),
    ("prometheus", "grafana/prometheus/prometheus.yml", '"minio1:9000", "minio2:9000", "minio3:9000", "minio4:9000"',
     '"minio1:9000"', "only from ['minio1']"),
    ("prometheus", "compose.yaml", "--config.file=/etc/prometheus/prometheus.yml", "--config.file=/etc/prom.yml",
     "not the repository's grafana/prometheus/prometheus.yml"),
    ("prometheus", "compose.yaml", "MOSIS_SCHEDULER_METRICS_ADDR: 0.0.0.0:8001",
     "MOSIS_SCHEDULER_METRICS_ADDR: 127.0.0.1:8001", "scheduler does not answer on port 8001"),
    ("edge", ".env.example", "=minio1:9000,minio2:9000,minio3:9000,minio4:9000",
     "=minio1:9000,minio5:9000", "minio5:9000"),
    ("edge", "compose.yaml", "http://127.0.0.1:8081/health", "http://127.0.0.1:8080/healthz", "nginx's own /health"),
    ("dockerfile", "Dockerfile", "USER mosis", "USER root", "runs as root"),
    ("dockerfile", "Dockerfile", '"postgresql-client-$PG_MAJOR"', '"postgresql-client-$PG_MAJOR" gcc',
     "installs build tools ['gcc']"),
    ("dockerfile", "Dockerfile", "ARG PG_MAJOR=17", "ARG PG_MAJOR=16", "pg_dump must match the server"),
    ("dockerfile", "Dockerfile", "bookworm-pgdg main", "bullseye-pgdg main", "apt repository is for ['bullseye']"),
    ("dockerfile", "Dockerfile", "RUN scripts/install-python /opt/venv", "RUN pip install --prefix=/opt/venv .",
     "no build stage copies and runs scripts/install-python"),
    ("dockerfile", "Dockerfile", "ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm", "ARG PYTHON_IMAGE=python:3-slim",
     "'python:3-slim' is not pinned"),
    ("dockerfile", "Dockerfile", "FROM ${PYTHON_IMAGE} AS build", "FROM python:3.11.9-slim-bookworm AS build",
     "the virtualenv's interpreter would differ"),
    ("dockerfile", "docker/pgdg.asc", "mQINBE6XR8IBEACVdDKT2HEH1IyHzXkb4nIWAY7echjRxo7MTcj4vbXAyBKOfjja",
     "mQINBE6XR8IBEACVdDKT2HEH1IyHzXkb4nIWAY7echjRxo7MTcj4vbXAyBKOfjjb", "is not the PostgreSQL repository's"),
    ("dockerfile", "scripts/lib.sh", '"$ROOT/scripts/install-python" "$VENV"', '"$VENV/bin/pip" install -e "$ROOT"',
     "ensure_venv does not run scripts/install-python"),
    ("docs", "docs/deploy.md", """sh -c 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"'""",
     "pg_dump -U mosis -Fc mosis", "does not read POSTGRES_USER"),
    ("docs", "docs/deploy.md", """-d "$POSTGRES_DB" --clean""", "-d mosis --clean", "does not read POSTGRES_DB"),
    ("docs", "docs/scaling.md", "Keep `POSTGRES_PASSWORD` set in `.env` (to anything): compose reads the\n"
     "whole of `compose.yaml` before it applies the override, and there it builds\n"
     "the default `MOSIS_DATABASE_URL` with `${POSTGRES_PASSWORD:?…}`, which stops\n",
     "Compose stops\n", "POSTGRES_PASSWORD must stay set"),
    ("docs", "docs/deploy.md", "### Cloudflare R2", "### R2", "deploy.md#cloudflare-r2, a section"),
    ("docs", "compose.yaml", "pgsty/silo:RELEASE.2026-09-16T00-00-00Z\n  # COMPOSE",
     "pgsty/silo:RELEASE.2026-10-01T00-00-00Z\n  # COMPOSE", "does not name the MinIO image"),
]


@pytest.mark.parametrize("check, file, text, replacement, expected", BREAKAGES,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BREAKAGES)])
def test_each_check_notices_a_breakage(copy, check, file, text, replacement, expected):
    break_file(copy / file, text, replacement)
    problems = run_checks(copy)[check]
    assert any(expected in p for p in problems), f"{check} missed the breakage; it said: {problems}"


def composecheck(compose: Path) -> subprocess.CompletedProcess:
    """The command line: `python -m tools.composecheck COMPOSE`, from the repository."""
    return subprocess.run([sys.executable, "-m", "tools.composecheck", str(compose)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_passes_the_repository_and_names_a_breakage(copy):
    proc = composecheck(ROOT / "compose.yaml")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stdout + proc.stderr
    break_file(copy / "compose.yaml", "image: postgres:17.6-bookworm", "image: postgres:latest")
    proc = composecheck(copy / "compose.yaml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "images: postgres: 'postgres:latest' is not pinned to a version (tag 'latest' moves)" \
        in proc.stdout.splitlines(), proc.stdout


def test_an_app_setting_read_without_default_must_be_set_and_documented(copy):
    (copy / "app" / "branding.py").write_text('import os\n\nBRAND = os.environ["MOSIS_BRAND_NAME"]\n')
    problems = run_checks(copy)["app_environment"]
    assert any("MOSIS_BRAND_NAME is read without a default (app/branding.py:3)" in p for p in problems), problems
    assert any("MOSIS_BRAND_NAME is read by the app but not documented" in p for p in problems), problems


def test_nginx_paths_must_exist_in_its_container():
    stack = Stack.load(ROOT)
    target = edge.compose_target(Settings.from_env(stack.filled().container_env("edge-config")))
    assert edge_path_problems(stack, target) == []
    nested = dataclasses.replace(target, temp_dir="/var/cache/mosis/tmp")
    assert any("/var/cache/mosis/tmp/client_body" in p for p in edge_path_problems(stack, nested))


# -- a real Compose parser -------------------------------------------------------------------------


def dclint(root: Path) -> subprocess.CompletedProcess:
    """dclint on root's compose.yaml with root's .dclintrc; any problem fails."""
    tool = ROOT / "tools/node_modules/.bin/dclint"
    assert tool.exists(), "dclint is not installed: scripts/test installs it (tools/package.json)"
    return subprocess.run([str(tool), "compose.yaml", "--max-warnings", "0", "--color=false"], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_compose_yaml_passes_a_compose_parser():
    proc = dclint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("text, replacement, expected", [
    ("minio-init: {condition: service_completed_successfully, required: false}\n\nservices",
     "minio-init: {condition: service_completed_successfully, required: maybe}\n\nservices", "invalid-schema"),
    ("    depends_on:\n      minio1: {condition: service_healthy}",
     "    depend_on:\n      minio1: {condition: service_healthy}", "invalid-schema"),
    ("image: grafana/grafana:11.3.1", "image: grafana/grafana", "service-image-require-explicit-tag"),
])
def test_the_compose_parser_refuses_a_broken_compose_yaml(copy, text, replacement, expected):
    break_file(copy / "compose.yaml", text, replacement)
    proc = dclint(copy)
    assert proc.returncode != 0 and expected in proc.stdout, proc.stdout + proc.stderr
