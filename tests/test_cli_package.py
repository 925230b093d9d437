"""The `mosis` client is a distribution of its own (cli/, `mosis-cli`): a
developer installs it, with the package formats (format/), into an empty
virtualenv and gets the tool and its help, and nothing of the server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What the server needs and the client must not bring.
SERVER_DISTRIBUTIONS = {"mosis-storage", "flask", "gunicorn", "pillow", "psycopg2", "psycopg2-binary", "minio",
                        "peewee", "apscheduler", "werkzeug", "prometheus-client", "prometheus-flask-exporter"}
SERVER_MODULES = {"app", "flask", "werkzeug", "peewee", "psycopg2", "minio", "PIL", "apscheduler", "gunicorn",
                  "prometheus_client"}


def run(argv, cwd: Path, **kw) -> subprocess.CompletedProcess:
    # Nothing of the project's virtualenv or source tree leaks in.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    p = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=480, **kw)
    assert p.returncode == 0, f"{argv}:\n{p.stdout}\n{p.stderr}"
    return p


@pytest.mark.timeout(600)
def test_the_client_installs_alone_and_loads_nothing_of_the_server(tmp_path):
    # Copies: building a package writes into its folder (build/, *.egg-info).
    sources = tmp_path / "src"
    for name in ("format", "cli"):
        shutil.copytree(ROOT / name, sources / name, ignore=shutil.ignore_patterns(
            "__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    python = venv / "bin" / "python"
    # As docs/cli.md tells developers (pip's cache makes it quick on a second run).
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         sources / "format", sources / "cli"], tmp_path)

    listed = json.loads(run([python, "-m", "pip", "list", "--format=json"], tmp_path).stdout)
    installed = {d["name"].lower().replace("_", "-") for d in listed}
    assert {"mosis-cli", "mosis-format", "requests"} <= installed, installed
    assert installed & SERVER_DISTRIBUTIONS == set(), installed

    loaded = json.loads(run([python, "-c", "import json, sys, mosis_cli, mosis_cli.commands; "
                                           "print(json.dumps(sorted(sys.modules)))"], tmp_path).stdout)
    assert {m.split(".")[0] for m in loaded} & SERVER_MODULES == set()
    assert "mosis_cli.http" in loaded and "mosis_format.validation" in loaded

    # The console script, `python -m`, and the help topics (package data) came along.
    mosis = venv / "bin" / "mosis"
    assert "exit codes" in run([mosis, "--help"], tmp_path).stdout
    assert "validation" in run([python, "-m", "mosis_cli", "help"], tmp_path).stdout
    assert "compression_ratio" in run([mosis, "help", "validation"], tmp_path).stdout
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"package_id": "com.example.notes", "version_code": 1,
                                                      "version_name": "1.0", "name": "Notes"}))
    built = json.loads(run([mosis, "pack", folder, "--json"], tmp_path).stdout)
    assert built["path"] == str(tmp_path / "com.example.notes-1.mosis") and built["entries"] == 1
