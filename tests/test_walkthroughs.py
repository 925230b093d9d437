"""The README's quick start and docs/cli.md's walk-through, run as written.

Each block is taken from its document and run with bash against
`scripts/run` itself (started in the background, as a reader starts it in
another terminal) on a fresh data directory and free ports; what it
downloads must be the bytes it uploaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from app.native import free_ports
from tests.helpers import bearer

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def shell_block(doc: Path, heading: str) -> str:
    """The first ```sh block after `heading` (before any other heading)."""
    text = doc.read_text()
    start = re.search(rf"^#+ {re.escape(heading)}\n", text, re.M)
    assert start, f"{doc.name} has no section {heading!r}"
    block = re.compile(r"^```sh\n(.*?)^```", re.M | re.S).search(text, start.end())
    assert block, f"{doc.name}, {heading!r}: no ```sh block"
    between = text[start.end():block.start()]
    assert not re.search(r"^#+ ", between, re.M), f"{doc.name}, {heading!r}: the section has no ```sh block"
    return block.group(1)


@contextlib.contextmanager
def scripts_run(data_dir: Path, admin_token: str | None = None):
    """`scripts/run` in the background on free ports; yields the environment
    a reader's second terminal has (its MOSIS_* settings)."""
    http, internal, api, s3, master, volume, filer, admin, scheduler = free_ports(9)
    settings = {
        "MOSIS_DATA_DIR": str(data_dir), "MOSIS_HTTP_PORT": str(http), "MOSIS_EDGE_INTERNAL_PORT": str(internal),
        "MOSIS_APP_BIND": f"127.0.0.1:{api}", "MOSIS_S3_PORT": str(s3), "MOSIS_WEED_MASTER_PORT": str(master),
        "MOSIS_WEED_VOLUME_PORT": str(volume), "MOSIS_WEED_FILER_PORT": str(filer),
        "MOSIS_WEED_ADMIN_PORT": str(admin), "MOSIS_SCHEDULER_METRICS_ADDR": f"127.0.0.1:{scheduler}",
    }
    if admin_token:
        settings["MOSIS_ADMIN_TOKEN"] = admin_token
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOSIS_", "PROMETHEUS_"))}
    log = data_dir.parent / "scripts-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / "scripts/run")], cwd=ROOT, env={**env, **settings}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a first run may install what it needs
        while "is running" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"scripts/run exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"scripts/run did not start:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        yield {**env, **settings}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert proc.returncode == 0, f"scripts/run stopped with {proc.returncode}:\n{log.read_text()[-4000:]}"


def run_block(block: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["bash", "-c", block], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the block failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("token_from", ["data dir", "environment"])
def test_the_readme_quick_start_as_written(tmp_path, token_from):
    block = shell_block(ROOT / "README.md", "A release in six requests")
    assert block.startswith("set -euo pipefail\n") and "curl -s " not in block
    token = "adm_" + "r" * 40 if token_from == "environment" else None
    with scripts_run(tmp_path / "data", admin_token=token) as env:
        if token is None:
            assert "MOSIS_ADMIN_TOKEN" not in env and (tmp_path / "data" / "admin-token").exists()
        work = tmp_path / "reader"
        proc = run_block(block, work, env)
    uploaded = (work / "notes.mosis").read_bytes()
    assert (work / "notes-downloaded.mosis").read_bytes() == uploaded
    with zipfile.ZipFile(work / "notes.mosis") as z:
        assert z.namelist()[0] == "manifest.json"
    assert re.search(r"(?i)x-cache-status: MISS", proc.stdout)
    assert "downloaded the bytes that were uploaded" in proc.stdout


def test_the_readme_quick_start_stops_at_the_first_failure(tmp_path):
    """A wrong admin token: the first request fails, and nothing after it runs."""
    block = shell_block(ROOT / "README.md", "A release in six requests")
    with scripts_run(tmp_path / "data") as env:
        proc = subprocess.run(["bash", "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**env, "MOSIS_ADMIN_TOKEN": "adm_" + "w" * 40})
    assert proc.returncode != 0
    assert "401" in proc.stderr and "null" not in proc.stdout + proc.stderr
    assert not (tmp_path / "notes-downloaded.mosis").exists()


def test_the_cli_walk_through_as_written(tmp_path):
    block = shell_block(ROOT / "docs/cli.md", "`mosis`: the command-line tool for app developers")
    token = "adm_" + "c" * 40
    with scripts_run(tmp_path / "data", admin_token=token) as env:
        r = requests.post(f"http://127.0.0.1:{env['MOSIS_HTTP_PORT']}/v1/admin/developers", headers=bearer(token),
                          json={"name": "Ada", "email": "ada@example.com"}, timeout=30)
        assert r.status_code == 201, r.text
        work = tmp_path / "developer"
        run_block(block, work, {**env, "MOSIS_DEV_TOKEN": r.json()["token"],
                                "PATH": f"{VENV_BIN}:{env['PATH']}", "XDG_CONFIG_HOME": str(tmp_path / "config")})
    packed = (work / "com.example.notes-42.mosis").read_bytes()
    assert (work / "device" / "com.example.notes-42.mosis").read_bytes() == packed
    assert (tmp_path / "config" / "mosis" / "config.json").exists()
