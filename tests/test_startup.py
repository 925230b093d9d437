"""Starting the appliance's processes: what stops them, and what must not.

The API (gunicorn), the scheduler and the edge's renderer refuse secrets
that .env.example ships as placeholders, and an admin token or download
link secret too short to be secret, with one line naming the variable.
The edge's renderer needs no metrics directory. tests/test_image.py checks
the same of the image's services, as compose.yaml starts them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from app.platform.config import MIN_SECRET_CHARS, ConfigError, Settings
from tools.composecheck.model import SECRET_NAME, Stack, filled_in, read_dotenv

ROOT = Path(__file__).resolve().parent.parent
APP_IMAGE_SERVICES = ("app", "scheduler", "edge-config")


def shipped_placeholders() -> dict[str, str]:
    """The secrets .env.example ships as placeholders."""
    return {k: v for k, v in read_dotenv(ROOT / ".env.example").items() if SECRET_NAME.search(k) and v}


def stack_with(tmp_path: Path, env: dict[str, str]) -> Stack:
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return Stack.load(ROOT, dotenv)


def test_every_placeholder_the_app_image_services_receive_is_refused(tmp_path):
    example = read_dotenv(ROOT / ".env.example")
    # Filled in as .env.example asks, every service starts.
    stack = stack_with(tmp_path, filled_in(example))
    for service in APP_IMAGE_SERVICES:
        Settings.from_env(stack.container_env(service))
    refused = set()
    for name, value in shipped_placeholders().items():
        stack = stack_with(tmp_path, {**filled_in(example), name: value})
        for service in APP_IMAGE_SERVICES:
            if not any(value in v for v in stack.container_env(service).values()):
                continue  # compose keeps it from the service (MinIO's and Grafana's passwords)
            with pytest.raises(ConfigError) as e:
                Settings.from_env(stack.container_env(service))
            # The variable named is the one the service reads: the database
            # password reaches it in MOSIS_DATABASE_URL.
            assert (name if name.startswith("MOSIS_") else "MOSIS_DATABASE_URL") in str(e.value)
            refused.add(name)
    assert refused == {"MOSIS_ADMIN_TOKEN", "MOSIS_DOWNLOAD_LINK_SECRET", "MOSIS_S3_SECRET_KEY",
                       "POSTGRES_PASSWORD"}


@pytest.mark.parametrize("name", ["MOSIS_ADMIN_TOKEN", "MOSIS_DOWNLOAD_LINK_SECRET"])
def test_a_secret_too_short_is_refused(name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "a" * (MIN_SECRET_CHARS - 1)})
    assert Settings.from_env({name: "a" * MIN_SECRET_CHARS})


def test_other_spellings_of_the_placeholder_are_refused():
    for value in ("CHANGE-ME-" + "x" * 40, "changeme" + "x" * 40, "x" * 40 + "change-me"):
        with pytest.raises(ConfigError, match="MOSIS_ADMIN_TOKEN is still the placeholder"):
            Settings.from_env({"MOSIS_ADMIN_TOKEN": value})


def test_unset_secrets_are_not_refused():
    """scripts/run and the tests leave them unset (or generate them)."""
    settings = Settings.from_env({})
    assert settings.admin_token == "" and settings.download_link_secret == ""


PROCESSES = {
    "api": [sys.executable, "-m", "gunicorn", "-c", "app/gunicorn_conf.py", "--bind", "127.0.0.1:0",
            "app:create_app()"],
    "scheduler": [sys.executable, "-m", "app.scheduler"],
    "edge": [sys.executable, "-m", "app.edge", "--target", "compose"],
    "command": [sys.executable, "-m", "flask", "--app", "app", "backup", "list"],
}


# Each process with another refused value (every value is refused by
# Settings.from_env, which they all call: the tests above).
@pytest.mark.parametrize("process, name, value", [
    ("api", "MOSIS_ADMIN_TOKEN", "change-me"),
    ("scheduler", "MOSIS_DOWNLOAD_LINK_SECRET", "change-me-change-me-change-me-change-me"),
    ("edge", "MOSIS_ADMIN_TOKEN", "short-token"),
    ("command", "MOSIS_DATABASE_URL", "postgresql://mosis:change-me@127.0.0.1:9/mosis"),
])
def test_a_process_refuses_to_start_in_one_line(tmp_path, process, name, value):
    env = {**os.environ, "MOSIS_DATA_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
           "MOSIS_DOWNLOAD_LINK_SECRET": secrets.token_hex(32), "MOSIS_SCHEDULER_METRICS_ADDR": "127.0.0.1:0",
           # Nothing listens there: a process that went on would fail later, not refuse.
           "MOSIS_S3_ENDPOINT": "http://127.0.0.1:9", name: value}
    proc = subprocess.run(PROCESSES[process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], lines


def test_the_edge_renders_without_a_metrics_directory(tmp_path):
    """An image sets PROMETHEUS_MULTIPROC_DIR for gunicorn; a renderer that
    inherits it, with no such directory, still renders."""
    out = tmp_path / "nginx.conf"
    env = {**os.environ, "MOSIS_DATA_DIR": str(tmp_path / "data"), "MOSIS_S3_ENDPOINT": "http://minio1:9000",
           "MOSIS_DOWNLOAD_LINK_SECRET": secrets.token_hex(32),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "no-such-directory")}
    proc = subprocess.run([sys.executable, "-m", "app.edge", "--target", "compose", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "server minio1:9000;" in out.read_text()
